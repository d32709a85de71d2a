"""Ordering of the `dev` stack proven from its resource graph: what `pulumi up` creates before what, and what
`pulumi destroy` deletes before what (tests/infra/resource_graph.py says why ancestry is the whole question).

Create: every object an admission webhook admits is created after the Helm release that serves the webhook is
ready (a webhook with `failurePolicy: Fail` and no backend refuses the object, and the first `pulumi up` fails).
Destroy: whatever needs a cloud controller to be deleted (a Service of type LoadBalancer, a Helm release that
holds one) is deleted before the cluster, the VPC, and every IAM role, policy and Pod Identity piece that
controller acts with; otherwise the load balancer outlives its controller and blocks the VPC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from infra_mocks import Recorded, plain
from infra_program import ProgramRun
from resource_graph import Graph

RELEASE = "kubernetes:helm.sh/v3:Release"
IAM_GRANTS = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment")


def _group(res: Recorded) -> str:
    api = plain(res.inputs).get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def _kind(res: Recorded) -> str:
    return plain(res.inputs).get("kind", "") if res.typ.startswith("kubernetes:") else ""


def _chart(res: Recorded) -> str:
    return plain(res.inputs).get("chart", "") if res.typ == RELEASE else ""


# Webhook backends by chart, and what each one's webhooks admit (from the charts' webhook configurations at the
# pinned versions): istio-base's `istiod-default-validator` sends every Istio object to istiod, and istiod's
# injector mutates the gateway chart's pods (label `sidecar.istio.io/inject: "true"`); External Secrets validates
# its SecretStores and ExternalSecrets; the Prometheus operator validates PrometheusRules; a self-managed AWS Load
# Balancer Controller's chart registers a mutating webhook for every Service (failurePolicy Fail).
WEBHOOKS: dict[str, Callable[[Recorded], bool]] = {
    "istiod": lambda r: _group(r).endswith(".istio.io") or _chart(r) == "gateway",
    "external-secrets": lambda r: _group(r) == "external-secrets.io",
    "kube-prometheus-stack": lambda r: _kind(r) == "PrometheusRule",
    "aws-load-balancer-controller": lambda r: _kind(r) == "Service"
    or (_chart(r) not in ("", "base", "aws-load-balancer-controller")),
}


def _holds_load_balancer(res: Recorded) -> bool:
    """A Service of type LoadBalancer, or a Helm release whose values make one."""
    inputs = plain(res.inputs)
    if res.typ == "kubernetes:core/v1:Service":
        return inputs.get("spec", {}).get("type") == "LoadBalancer"
    if res.typ == RELEASE:
        return _service_types(inputs.get("values") or {}) & {"LoadBalancer"} != set()
    return False


def _service_types(values: Any) -> set[str]:
    """Every `service.type` set anywhere in a release's values."""
    found: set[str] = set()
    if isinstance(values, dict):
        service = values.get("service")
        if isinstance(service, dict) and isinstance(service.get("type"), str):
            found.add(service["type"])
        for value in values.values():
            found |= _service_types(value)
    return found


@pytest.fixture(scope="module")
def graph(dev: ProgramRun) -> Graph:
    return Graph.of(dev.resources)


def test_the_graph_knows_every_resource_and_orders_the_obvious(graph: Graph) -> None:
    # Sanity of the graph itself: the provider waits for the cluster, the cluster for the VPC.
    (cluster,) = graph.of_type("eks:index:Cluster")
    (vpc,) = graph.of_type("awsx:ec2:Vpc")
    (provider,) = graph.of_type("pulumi:providers:kubernetes")
    assert graph.created_after(provider.urn, cluster.urn) and graph.created_after(cluster.urn, vpc.urn)
    order = graph.destroy_order()
    assert order.index(provider.urn) < order.index(cluster.urn) < order.index(vpc.urn)


def test_every_object_a_webhook_admits_is_created_after_the_webhooks_backend(graph: Graph) -> None:
    backends = {_chart(r): r.urn for r in graph.of_type(RELEASE)}
    late = []
    checked = 0
    for chart, admits in WEBHOOKS.items():
        if chart not in backends:
            continue
        for res in graph.resources.values():
            if res.urn == backends[chart] or not admits(res):
                continue
            checked += 1
            if not graph.created_after(res.urn, backends[chart]):
                late.append(f"{res.name} before {chart}")
    assert not late, late
    assert checked >= 7  # Gateway, VirtualService, AuthorizationPolicy, gateway chart, SecretStore, ...


def test_what_needs_a_cloud_controller_to_go_is_deleted_before_what_the_controller_needs(graph: Graph) -> None:
    holders = [r for r in graph.resources.values() if _holds_load_balancer(r)]
    assert holders, "the stack publishes its gateway through a load balancer"
    essentials = [r.urn for t in ("eks:index:Cluster", "awsx:ec2:Vpc") for r in graph.of_type(t)]
    problems = []
    for holder in holders:
        ancestors = graph.ancestors(holder.urn)
        for urn in essentials:
            if not graph.deleted_before(holder.urn, urn):
                problems.append(f"{holder.name} may outlive {graph.resources[urn].name}")
        # Every grant on a role the holder's controller acts with goes after the holder: a role without its
        # policy is a controller that cannot delete the load balancer.
        roles = {u for u in ancestors if graph.resources[u].typ == "aws:iam/role:Role"}
        for typ in IAM_GRANTS:
            for grant in graph.of_type(typ):
                if set(grant.dependencies) & roles and grant.urn not in ancestors:
                    problems.append(f"{holder.name} may outlive {grant.name}")
        for association in graph.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation"):
            if set(association.dependencies) & roles and association.urn not in ancestors:
                problems.append(f"{holder.name} may outlive {association.name}")
    assert not problems, problems


def test_the_load_balancer_is_a_resource_whose_deletion_pulumi_awaits(graph: Graph) -> None:
    # A Service the program owns: the Kubernetes provider deletes it and waits until it is gone, which is after
    # Auto Mode removed the NLB and its finalizer. A Helm release returns from uninstall at once.
    holders = [r for r in graph.resources.values() if _holds_load_balancer(r)]
    assert [r.typ for r in holders] == ["kubernetes:core/v1:Service"]
    assert "skipAwait" not in (plain(holders[0].inputs).get("metadata", {}).get("annotations") or {})


def test_workloads_wait_for_the_node_pool_so_destroy_drains_nothing_alive(graph: Graph) -> None:
    (pool,) = graph.of_type("kubernetes:karpenter.sh/v1:NodePool")
    for res in graph.of_type("kubernetes:apps/v1:Deployment") + graph.of_type(RELEASE):
        assert graph.created_after(res.urn, pool.urn), res.name


def test_model_pods_start_only_once_their_api_keys_secret_is_synced(graph: Graph) -> None:
    (synced,) = [r for r in graph.of_type("kubernetes:external-secrets.io/v1:ExternalSecret")]
    # Pulumi awaits ESO's Ready condition on it, so "after the ExternalSecret" means "after the Secret exists".
    assert plain(synced.inputs)["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
    deployments = [r for r in graph.of_type("kubernetes:apps/v1:Deployment")
                   if plain(r.inputs)["metadata"]["namespace"] == "mlapi"]
    assert len(deployments) == 2
    for deployment in deployments:
        volumes = plain(deployment.inputs)["spec"]["template"]["spec"]["volumes"]
        assert any(v.get("secret", {}).get("secretName") == "mlapi-api-keys" for v in volumes)
        assert graph.created_after(deployment.urn, synced.urn), deployment.name
