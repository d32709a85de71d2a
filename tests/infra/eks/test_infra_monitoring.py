"""The EKS monitoring component: a pinned kube-prometheus-stack, PodMonitors for every model service and the
gateway, the rule file as a PrometheusRule, the dashboard as a sidecar ConfigMap, and the scrape NetworkPolicy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from component_harness import by_name, declare, manifest, provider
from infra_mocks import AUTH_TOKEN, is_secret, plain

from infra.eks.monitoring import (
    CONTAINERS_PER_POD,
    DASHBOARD_LABEL,
    GRAFANA_ADMIN_SECRET,
    RESOURCES,
    Monitoring,
    MonitoringArgs,
    ScrapeTarget,
    dashboard_json,
    rule_groups,
)

ALERTS = {
    "groups": [
        {
            "name": "mlapi.test",
            "rules": [
                {"alert": "MlapiHighErrorRate", "expr": "sum(rate(mlapi_requests_total{status=~\"5..\"}[5m])) > 1",
                 "for": "5m", "labels": {"severity": "critical"}, "annotations": {"summary": "errors"}},
                {"alert": "MlapiHpaAtMax", "expr": "kube_horizontalpodautoscaler_status_current_replicas >= 4",
                 "for": "15m", "labels": {"severity": "warning"}, "annotations": {"summary": "at max"}},
            ],
        }
    ]
}
DASHBOARD = {"uid": "mlapi", "title": "mlapi", "panels": [{"id": 1, "type": "timeseries", "title": "requests",
             "targets": [{"expr": "sum(rate(mlapi_requests_total[1m]))", "refId": "A"}]}]}
TARGETS = [
    ScrapeTarget(name="sentiment", namespace="mlapi", selector={"app.kubernetes.io/name": "sentiment"},
                 port="http", path="/project/metrics"),
    ScrapeTarget(name="semantic", namespace="mlapi", selector={"app.kubernetes.io/name": "semantic"},
                 port="http", path="/lab/metrics"),
    ScrapeTarget(name="istio-gateway", namespace="istio-ingress", selector={"istio": "ingressgateway"},
                 port="http-envoy-prom", path="/stats/prometheus"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("monitoring")
    (directory / "alerts.yaml").write_text(yaml.safe_dump(ALERTS))
    (directory / "mlapi.json").write_text(json.dumps(DASHBOARD, indent=2))
    return directory / "alerts.yaml", directory / "mlapi.json"


def build(alerts: Path, dashboard: Path) -> dict[str, Any]:
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            chart_version="88.5.3",
            alerts_file=alerts,
            dashboard_file=dashboard,
            targets=TARGETS,
            app_namespace="mlapi",
            app_pod_selector={"app.kubernetes.io/part-of": "mlapi"},
            app_port=8000,
            provider=provider(),
            depends_on=[],
        ),
    )
    return {"password": monitoring.grafana_admin_password, "namespace": monitoring.namespace}


@pytest.fixture(scope="module")
def declared(files: tuple[Path, Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    resources, outputs = declare(lambda: build(*files))
    return by_name(resources), outputs


def test_declare_pinned_chart_in_monitoring_namespace(declared: tuple[dict[str, Any], dict[str, Any]]) -> None:
    res, _ = declared
    release = plain(res["monitoring-stack"].inputs)
    assert (release["chart"], release["version"]) == ("kube-prometheus-stack", "88.5.3")
    assert release["repositoryOpts"]["repo"] == "https://prometheus-community.github.io/helm-charts"
    assert release["namespace"] == "monitoring"
    assert release["atomic"] is True


def test_chart_values_keep_kube_state_metrics_and_select_every_monitor(
    declared: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    values = plain(declared[0]["monitoring-stack"].inputs)["values"]
    assert values["kubeStateMetrics"]["enabled"] is True  # the pods-not-ready and HPA-at-max alerts need it
    spec = values["prometheus"]["prometheusSpec"]
    for kind in ("podMonitor", "serviceMonitor", "rule"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
    # EKS hides the control plane: no monitor that could only ever report it down.
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy", "nodeExporter"):
        assert values[component]["enabled"] is False


def test_chart_values_request_and_limit_every_container(declared: tuple[dict[str, Any], dict[str, Any]]) -> None:
    values = plain(declared[0]["monitoring-stack"].inputs)["values"]
    found = [
        values["prometheus"]["prometheusSpec"]["resources"],
        values["alertmanager"]["alertmanagerSpec"]["resources"],
        values["prometheusOperator"]["resources"],
        values["prometheusOperator"]["prometheusConfigReloader"]["resources"],
        values["grafana"]["resources"],
        values["grafana"]["sidecar"]["resources"],
        values["kube-state-metrics"]["resources"],
    ]
    for resources in found:
        assert set(resources) == {"requests", "limits"}
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    every_profile = {p for profiles in CONTAINERS_PER_POD.values() for p in profiles}
    assert every_profile <= set(RESOURCES)


def test_grafana_admin_password_generated_secret_and_exported(
    declared: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    res, outputs = declared
    values = plain(res["monitoring-stack"].inputs)["values"]
    assert values["grafana"]["admin"]["existingSecret"] == GRAFANA_ADMIN_SECRET
    assert "adminPassword" not in values["grafana"]
    secret = res["monitoring-grafana-admin"].inputs
    assert secret["metadata"]["name"] == GRAFANA_ADMIN_SECRET
    assert is_secret(secret["stringData"]) or is_secret(secret["stringData"]["admin-password"])
    assert plain(secret["stringData"])["admin-password"] == AUTH_TOKEN
    assert res["monitoring-grafana-password"].typ == "random:index/randomPassword:RandomPassword"
    assert outputs["password"] == AUTH_TOKEN


def test_podmonitor_per_target_on_its_metrics_path(declared: tuple[dict[str, Any], dict[str, Any]]) -> None:
    res, _ = declared
    monitors = {name: manifest(r) for name, r in res.items() if r.inputs.get("kind") == "PodMonitor"}
    assert set(monitors) == {f"monitoring-{t.name}-podmonitor" for t in TARGETS}
    for target in TARGETS:
        spec = monitors[f"monitoring-{target.name}-podmonitor"]["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [target.namespace]}
        assert spec["selector"] == {"matchLabels": target.selector}
        assert spec["podMetricsEndpoints"][0]["port"] == target.port
        assert spec["podMetricsEndpoints"][0]["path"] == target.path


def test_rule_file_becomes_prometheusrule(declared: tuple[dict[str, Any], dict[str, Any]]) -> None:
    rule = manifest(declared[0]["monitoring-rules"])
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == {"groups": ALERTS["groups"]}


def test_dashboard_configmap_carries_sidecar_label(declared: tuple[dict[str, Any], dict[str, Any]]) -> None:
    res, _ = declared
    cm = manifest(res["monitoring-dashboard"])
    values = plain(res["monitoring-stack"].inputs)["values"]
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert cm["metadata"]["labels"] == DASHBOARD_LABEL == {sidecar["label"]: sidecar["labelValue"]}
    assert json.loads(cm["data"]["mlapi.json"]) == DASHBOARD


def test_network_policy_admits_prometheus_to_model_pods(declared: tuple[dict[str, Any], dict[str, Any]]) -> None:
    policy = manifest(declared[0]["monitoring-scrape"])
    assert policy["metadata"]["namespace"] == "mlapi"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "mlapi"}}
    rule = policy["spec"]["ingress"][0]
    assert rule["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_every_child_parented_and_named_after_component(declared: tuple[dict[str, Any], dict[str, Any]]) -> None:
    for name in declared[0]:
        assert name == "monitoring" or name.startswith("monitoring-") or name == "k8s", name


def test_rule_groups_rejects_a_file_without_groups(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.yaml"
    bad.write_text("rules: []\n")
    with pytest.raises(ValueError, match="alerts.yaml: not a Prometheus rule file"):
        rule_groups(bad)


def test_dashboard_json_rejects_a_dashboard_without_uid(tmp_path: Path) -> None:
    bad = tmp_path / "mlapi.json"
    bad.write_text(json.dumps({"title": "x", "panels": [{}]}))
    with pytest.raises(ValueError, match="mlapi.json: not a Grafana dashboard"):
        dashboard_json(bad)
