"""The gateway's load balancer: the AWS Load Balancer Controller's NLB with IP targets, publishing only what is
served."""

from __future__ import annotations

import json
from typing import Any

from infra_mocks import LB_HOST, plain
from infra_program import ProgramRun, run_program

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
LB = "service.beta.kubernetes.io/aws-load-balancer-"


def _gateway_service(run: ProgramRun) -> dict[str, Any]:
    releases = {r.inputs["name"]: plain(r.inputs) for r in run.of_type("kubernetes:helm.sh/v3:Release")}
    return releases["istio-ingressgateway"]["values"]["service"]


def test_gateway_publishes_only_port_80_without_a_certificate(dev: ProgramRun) -> None:
    service = _gateway_service(dev)
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("http2", 80)]
    assert all(p["port"] not in (443, 15021) for p in service["ports"])
    gateway = dev.one("kubernetes:networking.istio.io/v1:Gateway").inputs
    assert [s["port"]["number"] for s in gateway["spec"]["servers"]] == [80]


def test_gateway_is_an_nlb_with_ip_targets_of_the_controller(dev: ProgramRun) -> None:
    annotations = _gateway_service(dev)["annotations"]
    assert annotations[LB + "type"] == "external"  # the controller, not the in-tree provider ("nlb")
    assert annotations[LB + "nlb-target-type"] == "ip"  # pod IPs: no NodePorts opened to the internet
    assert annotations[LB + "scheme"] == "internet-facing"
    assert annotations[LB + "healthcheck-port"] == "15021"


def test_certificate_adds_tls_on_443_in_front_of_the_gateway() -> None:
    run = run_program("dev", {"mlapi:certificateArn": CERT})
    service = _gateway_service(run)
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(80, 80), (443, 80)]
    assert service["annotations"][LB + "ssl-cert"] == CERT
    assert service["annotations"][LB + "ssl-ports"] == "443"
    assert run.outputs["service_urls"]["sentiment"] == f"https://{LB_HOST}/project/"


def test_load_balancer_controller_is_declared_with_pod_identity(dev: ProgramRun) -> None:
    releases = {r.inputs["name"]: plain(r.inputs) for r in dev.of_type("kubernetes:helm.sh/v3:Release")}
    values = releases["aws-load-balancer-controller"]["values"]
    assert values["clusterName"] == "mlapi-dev" and values["vpcId"] == "vpc-123"
    assert (values["enableWaf"], values["enableWafv2"], values["enableShield"]) == (False, False, False)
    associations = {(a["namespace"], a["serviceAccount"]) for a in
                    (plain(r.inputs) for r in dev.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation"))}
    assert ("kube-system", values["serviceAccount"]["name"]) in associations
    recorded = dev.one("aws:iam/rolePolicy:RolePolicy", "lb-controller-identity-policy")
    policy = json.loads(plain(recorded.inputs)["policy"])
    actions = [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert "*" not in actions and "elasticloadbalancing:*" not in actions
    creates = [s for s in policy["Statement"] if "elasticloadbalancing:CreateLoadBalancer" in s["Action"]]
    assert creates[0]["Condition"] == {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}}
