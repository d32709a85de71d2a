"""The Auto Mode NodePool holds everything the EKS stack schedules at its maximum replicas, within its limits."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from infra_mocks import plain
from infra_program import ProgramRun, run_program

from infra import capacity
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
    # Flat, as the istiod chart reads them (tests/infra/charts/istiod): under `pilot:` they were ignored and
    # istiod ran with the chart's 500m / 2048Mi.
    values = releases["istiod"]["values"]
    assert "pilot" not in values
    assert (values["resources"], values["autoscaleMin"], values["autoscaleMax"]) == (
        istiod.resources(), istiod.min_replicas, istiod.max_replicas)
    (gateway,) = capacity.RELEASE_REQUESTS["istio-ingressgateway"]
    values = releases["istio-ingressgateway"]["values"]
    assert values["resources"] == gateway.resources()
    assert values["autoscaling"] == {"minReplicas": gateway.min_replicas, "maxReplicas": gateway.max_replicas}
    (metrics_server,) = capacity.RELEASE_REQUESTS["metrics-server"]
    assert releases["metrics-server"]["values"]["resources"] == metrics_server.resources()


def test_dev_stack_fits_under_the_node_pool_limits_at_max(dev_raw: dict[str, Any]) -> None:
    cfg = _cfg(dev_raw)
    shape = capacity.smallest_node(cfg.cluster)
    assert (shape.vcpus, shape.memory_mib) == (4, 8192)  # c7i.xlarge: the smallest the pool may launch
    at_max = capacity.load_at_max(capacity.cluster_requests(cfg.services, HELM_RELEASES), shape, cfg.services)
    # The services alone at maxReplicas are 8 vCPU / 13 GiB, one surge pod each 1.5 vCPU; add-ons come on top.
    assert at_max.cpu_requested > 8000 + 1500 + 500
    assert at_max.cpu_capacity <= cfg.cluster.cpu_limit and at_max.memory_capacity_gib <= cfg.cluster.memory_gib
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


def test_limits_below_what_max_replicas_need_are_refused(dev_raw: dict[str, Any]) -> None:
    cfg = _cfg(dev_raw)
    tight = replace(cfg.cluster, cpu_limit=8, memory_gib=16)
    keys = [key for key, _ in capacity.capacity_problems(tight, cfg.services, HELM_RELEASES)]
    assert keys == ["nodePoolCpuLimit", "nodePoolMemoryGib"]


def test_a_pod_larger_than_the_smallest_node_is_refused(dev_raw: dict[str, Any]) -> None:
    cfg = _cfg(dev_raw)
    small = replace(cfg.cluster, instance_cpus=(2,), instance_families=("c7i",))
    big = replace(cfg.services[0], cpu_millicores=2000)
    problems = capacity.capacity_problems(small, (big, *cfg.services[1:]), HELM_RELEASES)
    assert ("nodeInstanceCpus", problems[0][1]) == problems[0] and "sentiment" in problems[0][1]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [({"mlapi:nodePoolCpuLimit": "8"}, "mlapi:nodePoolCpuLimit"),
     ({"mlapi:nodePoolMemoryGib": "16", "mlapi:nodePoolCpuLimit": "1000"}, "mlapi:nodePoolMemoryGib"),
     ({"mlapi:nodeInstanceFamilies": '["x9"]'}, "mlapi:nodeInstanceFamilies[0]"),
     ({"mlapi:nodeInstanceCpus": "[3]"}, "mlapi:nodeInstanceCpus[0]"),
     ({"mlapi:nodeCapacityType": "reserved"}, "mlapi:nodeCapacityType"),
     ({"mlapi:nodeMaxSize": "5"}, "mlapi:nodeMaxSize")],
)
def test_program_refuses_a_node_pool_that_cannot_hold_the_cluster(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(Exception, match=rf"{re.escape(key)}: "):
        run_program("dev", overrides)


def test_capacity_is_refused_before_anything_is_declared() -> None:
    import pulumi
    from infra_mocks import NoReferencesMonitor, RecordingMocks
    from infra_program import PROGRAM_DIR, operated_config

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mlapi", stack="dev", preview=False, monitor=NoReferencesMonitor(mocks))
    pulumi.runtime.set_all_config({**operated_config("dev"), "mlapi:nodePoolCpuLimit": "4"})

    @pulumi.runtime.test
    def program() -> None:
        import runpy

        runpy.run_path(str(PROGRAM_DIR), run_name="__main__")

    with pytest.raises(Exception, match="mlapi:nodePoolCpuLimit"):
        program()
    assert mocks.resources == []


def test_unknown_release_has_no_silent_zero() -> None:
    with pytest.raises(KeyError, match="not-a-release"):
        capacity.cluster_requests((), ["not-a-release"])
