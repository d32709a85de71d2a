"""The gateway's load balancer: EKS Auto Mode's NLB with IP targets, publishing only what is served, on a Service
the program owns (so `pulumi destroy` waits for the NLB to go)."""

from __future__ import annotations

from typing import Any

from infra_mocks import LB_HOST, plain
from infra_program import ProgramRun, run_program

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
LB = "service.beta.kubernetes.io/aws-load-balancer-"


def _load_balancers(run: ProgramRun) -> list[dict[str, Any]]:
    services = [plain(r.inputs) for r in run.of_type("kubernetes:core/v1:Service")]
    return [s for s in services if s["spec"]["type"] == "LoadBalancer"]


def _gateway_service(run: ProgramRun) -> dict[str, Any]:
    (service,) = _load_balancers(run)
    return service


def test_gateway_publishes_only_port_80_without_a_certificate(dev: ProgramRun) -> None:
    service = _gateway_service(dev)
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http2", 80)]
    gateway = dev.one("kubernetes:networking.istio.io/v1:Gateway").inputs
    assert [s["port"]["number"] for s in gateway["spec"]["servers"]] == [80]


def test_gateway_is_an_auto_mode_nlb_with_ip_targets(dev: ProgramRun) -> None:
    service = _gateway_service(dev)
    assert service["spec"]["loadBalancerClass"] == "eks.amazonaws.com/nlb"
    annotations = service["metadata"]["annotations"]
    assert annotations[LB + "nlb-target-type"] == "ip"  # pod IPs: no NodePorts opened to the internet
    assert annotations[LB + "scheme"] == "internet-facing"
    assert annotations[LB + "healthcheck-port"] == "15021"
    assert service["spec"]["allocateLoadBalancerNodePorts"] is False
    assert service["spec"]["selector"] == {"istio": "ingressgateway"}
    assert service["metadata"]["namespace"] == "istio-ingress"


def test_the_gateway_chart_creates_no_service_of_its_own(dev: ProgramRun) -> None:
    # Its default Service would be a second load balancer publishing 15021 and 443 with nothing behind them.
    releases = {r.inputs["name"]: plain(r.inputs) for r in dev.of_type("kubernetes:helm.sh/v3:Release")}
    assert releases["istio-ingressgateway"]["values"]["service"] == {"type": "None"}
    assert len(_load_balancers(dev)) == 1


def test_certificate_adds_tls_on_443_in_front_of_the_gateway() -> None:
    run = run_program("dev", {"mlapi:certificateArn": CERT})
    service = _gateway_service(run)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, 80), (443, 80)]
    assert service["metadata"]["annotations"][LB + "ssl-cert"] == CERT
    assert service["metadata"]["annotations"][LB + "ssl-ports"] == "443"
    assert run.outputs["service_urls"]["sentiment"] == f"https://{LB_HOST}/project/"


def test_no_self_managed_cluster_plumbing_is_installed(dev: ProgramRun) -> None:
    releases = {r.inputs["name"] for r in dev.of_type("kubernetes:helm.sh/v3:Release")}
    assert not releases & {"aws-load-balancer-controller", "cluster-autoscaler", "karpenter"}
    assert not dev.of_type("eks:index:ManagedNodeGroup")
    assert not dev.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")


def test_every_iam_grant_is_the_programs_own_or_aws_managed(dev: ProgramRun) -> None:
    # No upstream controller runs with a hand-written copy of its IAM policy any more: the one inline policy is
    # the program's own (read one secret, for External Secrets), the one attachment an AWS-managed policy. A
    # self-managed controller added later must vendor its upstream policy file and compare it in a test.
    inline = {r.name for r in dev.of_type("aws:iam/rolePolicy:RolePolicy")}
    assert inline == {"api-keys-sync-reader-policy"}
    attached = {plain(r.inputs)["policyArn"] for r in dev.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")}
    assert attached == {"arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"}
