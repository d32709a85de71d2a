"""The node group holds everything the EKS stack schedules, at min and at max, and grows with the HPAs."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from infra_mocks import plain
from infra_program import ProgramRun, run_program

from infra import capacity, versions
from infra.config import StackConfig, build_config
from infra.eks.platform import HELM_RELEASES


def _cfg(raw: dict[str, Any]) -> StackConfig:
    return build_config(raw, project="mlapi", stack="dev", region="us-east-1")


def _releases(run: ProgramRun) -> dict[str, dict[str, Any]]:
    return {r.inputs["name"]: plain(r.inputs) for r in run.of_type("kubernetes:helm.sh/v3:Release")}


def test_every_installed_release_has_its_requests_recorded(dev: ProgramRun) -> None:
    installed = set(_releases(dev))
    assert installed == set(HELM_RELEASES)
    assert installed <= set(capacity.RELEASE_REQUESTS)


def test_release_values_are_the_recorded_requests(dev: ProgramRun) -> None:
    releases = _releases(dev)
    (istiod,) = capacity.RELEASE_REQUESTS["istiod"]
    pilot = releases["istiod"]["values"]["pilot"]
    assert (pilot["resources"], pilot["autoscaleMin"], pilot["autoscaleMax"]) == (
        istiod.resources(), istiod.min_replicas, istiod.max_replicas)
    (gateway,) = capacity.RELEASE_REQUESTS["istio-ingressgateway"]
    values = releases["istio-ingressgateway"]["values"]
    assert values["resources"] == gateway.resources()
    assert values["autoscaling"] == {"minReplicas": gateway.min_replicas, "maxReplicas": gateway.max_replicas}
    for name in ("cluster-autoscaler", "aws-load-balancer-controller"):
        (pod,) = capacity.RELEASE_REQUESTS[name]
        assert releases[name]["values"]["resources"] == pod.resources()
        assert releases[name]["values"]["replicaCount"] == pod.min_replicas


def test_dev_stack_fits_at_min_and_at_max_with_headroom(dev_raw: dict[str, Any]) -> None:
    cfg = _cfg(dev_raw)
    shape = capacity.NODE_SHAPES[cfg.cluster.instance_type]
    pods = capacity.cluster_requests(cfg.services, HELM_RELEASES)
    at_min = capacity.load(pods, shape, cfg.cluster.min_nodes, "min")
    at_max = capacity.load(pods, shape, cfg.cluster.max_nodes, "max", surge=cfg.services)
    assert at_min.fits and at_max.fits, (at_min, at_max)
    # The services alone at minReplicas are 3 vCPU; the add-ons and controllers come on top.
    assert at_min.cpu_requested > 3000 + 1500
    assert capacity.capacity_problems(cfg.cluster, cfg.services, HELM_RELEASES) == []


def test_monitoring_and_secret_sync_requests_are_counted(dev: ProgramRun) -> None:
    releases = _releases(dev)
    stack = {p.name: p for p in capacity.RELEASE_REQUESTS["kube-prometheus-stack"]}
    assert set(stack) == {"prometheus", "alertmanager", "operator", "grafana", "kube-state-metrics"}
    # Prometheus plus its config reloader, as the release values set them.
    spec = releases["kube-prometheus-stack"]["values"]["prometheus"]["prometheusSpec"]
    assert spec["resources"]["requests"] == {"cpu": "200m", "memory": "768Mi"}
    assert (stack["prometheus"].cpu_millicores, stack["prometheus"].memory_mib) == (210, 800)
    eso = releases["external-secrets"]["values"]
    counted = {p.name: (p.cpu_millicores, p.memory_mib) for p in capacity.RELEASE_REQUESTS["external-secrets"]}
    assert counted["external-secrets-controller"] == (
        capacity._millicores(eso["resources"]["requests"]["cpu"]),
        capacity._mebibytes(eso["resources"]["requests"]["memory"]))


def test_the_old_two_large_nodes_cannot_hold_the_minimum(dev_raw: dict[str, Any]) -> None:
    cfg = _cfg(dev_raw)
    old = replace(cfg.cluster, instance_type="m6i.large", min_nodes=2, desired_nodes=2, max_nodes=4)
    problems = capacity.capacity_problems(old, cfg.services, HELM_RELEASES)
    assert any(p.startswith("at min replicas") for p in problems)
    assert any(p.startswith("at max replicas") for p in problems)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [({"mlapi:nodeMaxSize": "2"}, "mlapi:nodeMaxSize"),
     ({"mlapi:nodeInstanceType": "m6i.large"}, "mlapi:nodeMinSize"),
     ({"mlapi:nodeInstanceType": "x9.huge"}, "mlapi:nodeInstanceType")],
)
def test_program_refuses_a_node_group_that_cannot_hold_the_cluster(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(Exception, match=rf"{key}: "):
        run_program("dev", overrides)


def test_capacity_is_refused_before_anything_is_declared() -> None:
    import pulumi
    from infra_mocks import NoReferencesMonitor, RecordingMocks
    from infra_program import PROGRAM_DIR, operated_config

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mlapi", stack="dev", preview=False, monitor=NoReferencesMonitor(mocks))
    pulumi.runtime.set_all_config({**operated_config("dev"), "mlapi:nodeMaxSize": "2"})

    @pulumi.runtime.test
    def program() -> None:
        import runpy

        runpy.run_path(str(PROGRAM_DIR), run_name="__main__")

    with pytest.raises(Exception, match="mlapi:nodeMaxSize"):
        program()
    assert mocks.resources == []


def test_unknown_release_has_no_silent_zero() -> None:
    with pytest.raises(KeyError, match="not-a-release"):
        capacity.cluster_requests((), ["not-a-release"])


def test_cluster_autoscaler_scales_this_clusters_node_group_through_pod_identity(dev: ProgramRun) -> None:
    release = _releases(dev)["cluster-autoscaler"]
    values = release["values"]
    assert values["autoDiscovery"] == {"clusterName": "mlapi-dev"}
    assert values["image"]["tag"] == versions.CLUSTER_AUTOSCALER_IMAGES[versions.KUBERNETES_VERSION]
    # Nodes running model pods (emptyDir /tmp) can still be scaled down.
    assert values["extraArgs"]["skip-nodes-with-local-storage"] is False
    assert release["version"] == versions.CLUSTER_AUTOSCALER_CHART
    associations = {(a["namespace"], a["serviceAccount"]): a for a in
                    (plain(r.inputs) for r in dev.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation"))}
    assert ("kube-system", values["rbac"]["serviceAccount"]["name"]) in associations
    policies = {r.name: json.loads(plain(r.inputs)["policy"]) for r in dev.of_type("aws:iam/rolePolicy:RolePolicy")}
    scale = [s for s in policies["autoscaler-identity-policy"]["Statement"]
             if "autoscaling:SetDesiredCapacity" in s["Action"]]
    assert scale[0]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/mlapi-dev": "owned"}}
    roles = {r.name: json.loads(plain(r.inputs)["assumeRolePolicy"]) for r in dev.of_type("aws:iam/role:Role")}
    assert roles["autoscaler-identity-role"]["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert "eks-pod-identity-agent" in {plain(r.inputs)["addonName"] for r in dev.of_type("aws:eks/addon:Addon")}
