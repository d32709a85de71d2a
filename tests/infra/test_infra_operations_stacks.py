"""Both stacks wire in what operates them: the API keys reach the containers, the monitoring files in
monitoring/ become the PrometheusRule and the Grafana dashboard, `/metrics` is refused at the edge, and the
optional edge rate limit follows its config flag."""

from __future__ import annotations

import json

import pytest
import yaml
from infra_mocks import AUTH_TOKEN, plain
from infra_program import REPO, ProgramRun, run_program

from infra.shared.api_keys import ENV_FILE, K8S_SECRET, KEYS_FILE, MOUNT_DIR


def test_dev_pods_read_keys_file_from_mounted_secret(dev: ProgramRun) -> None:
    for name in ("sentiment", "semantic"):
        pod = plain(dev.one("kubernetes:apps/v1:Deployment", f"workloads-{name}-deployment").inputs)["spec"][
            "template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env[ENV_FILE]["value"] == KEYS_FILE
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == MOUNT_DIR]
        assert "subPath" not in mount
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == K8S_SECRET


def test_dev_monitoring_uses_the_repository_files(dev: ProgramRun) -> None:
    rule = plain(dev.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule").inputs)
    groups = yaml.safe_load((REPO / "monitoring" / "prometheus" / "alerts.yaml").read_text())["groups"]
    assert rule["spec"]["groups"] == groups  # at the defaults, the stack's vCPU price is the file's
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {"MlapiPodsNotReady", "MlapiHpaAtMax"} <= alerts  # kube-state-metrics series: the chart keeps it on
    dashboard = plain(dev.one("kubernetes:core/v1:ConfigMap", "monitoring-dashboard").inputs)
    assert json.loads(dashboard["data"]["mlapi.json"]) == json.loads(
        (REPO / "monitoring" / "grafana" / "mlapi.json").read_text())


def test_dev_scrapes_every_service_and_the_gateway(dev: ProgramRun) -> None:
    monitors = {r.name: plain(r.inputs)["spec"] for r in dev.of_type("kubernetes:monitoring.coreos.com/v1:PodMonitor")}
    paths = {name: spec["podMetricsEndpoints"][0]["path"] for name, spec in monitors.items()}
    assert paths == {"monitoring-sentiment-podmonitor": "/project/metrics",
                     "monitoring-semantic-podmonitor": "/lab/metrics",
                     "monitoring-istio-gateway-podmonitor": "/stats/prometheus"}
    gateway = monitors["monitoring-istio-gateway-podmonitor"]
    assert gateway["namespaceSelector"] == {"matchNames": ["istio-ingress"]}
    assert gateway["podMetricsEndpoints"][0]["port"] == "http-envoy-prom"


def test_dev_exports_grafana_password_and_keys_secret(dev: ProgramRun) -> None:
    assert dev.outputs["grafanaAdminPassword"] == AUTH_TOKEN
    assert dev.outputs["apiKeysSecret"] == "mlapi-dev/api-keys"


def test_dev_gateway_denies_metrics_without_rate_limit_by_default(dev: ProgramRun) -> None:
    policy = plain(dev.one("kubernetes:security.istio.io/v1:AuthorizationPolicy").inputs)
    assert {"/metrics", "/project/metrics", "/lab/metrics"} <= set(policy["spec"]["rules"][0]["to"][0]["operation"][
        "paths"])
    assert not dev.of_type("kubernetes:networking.istio.io/v1alpha3:EnvoyFilter")


def test_dev_edge_rate_limit_flag_adds_envoy_filter() -> None:
    run = run_program("dev", {"mlapi:edgeRateLimit": "true", "mlapi:edgeRateLimitPerMinute": "1200"})
    envoy_filter = plain(run.one("kubernetes:networking.istio.io/v1alpha3:EnvoyFilter").inputs)
    bucket = envoy_filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["token_bucket"]
    assert bucket["max_tokens"] == 1200


def test_fargate_alarms_and_dashboard_name_the_stack_resources(fargate: ProgramRun) -> None:
    body = json.loads(fargate.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    rows = [row for w in body["widgets"] for row in w["properties"]["metrics"] if len(row) > 3]  # not metric math
    lb = {row[3] for row in rows if row[2] == "LoadBalancer"}
    assert lb == {"app/mlapi-fargate/abc"}
    tgs = {row[5] for w in body["widgets"] for row in w["properties"]["metrics"] if row[4:5] == ["TargetGroup"]}
    assert tgs == {"targetgroup/mlapi-fargate-sentiment/def", "targetgroup/mlapi-fargate-semantic/def"}
    alarms = [plain(r.inputs) for r in fargate.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")]
    assert len(alarms) == 14 and not fargate.of_type("aws:sns/topic:Topic")


@pytest.mark.parametrize(("flag", "expected"), [("false", 0), ("true", 1)])
def test_fargate_waf_follows_edge_rate_limit_flag(flag: str, expected: int) -> None:
    run = run_program("fargate", {"mlapi:edgeRateLimit": flag, "mlapi:alarmEmail": "ops@example.com"})
    assert len(run.of_type("aws:wafv2/webAcl:WebAcl")) == expected
    assert len(run.of_type("aws:wafv2/webAclAssociation:WebAclAssociation")) == expected
    assert len(run.of_type("aws:sns/topic:Topic")) == 1


def test_fargate_metrics_rules_precede_service_rules(fargate: ProgramRun) -> None:
    rules = {r.name: plain(r.inputs) for r in fargate.of_type("aws:lb/listenerRule:ListenerRule")}
    metrics = [r for n, r in rules.items() if n.startswith("edge-metrics-")]
    services = [r for n, r in rules.items() if n.startswith("ecs-")]
    assert metrics and max(r["priority"] for r in metrics) < min(r["priority"] for r in services)
    covered = {p for r in metrics for p in r["conditions"][0]["pathPattern"]["values"]}
    assert {"/project/metrics", "/lab/metrics", "/metrics"} <= covered


def _build(raw: dict[str, object]) -> object:
    from infra.config import build_config

    return build_config(raw, project="mlapi", stack="fargate", region="us-east-1")


def test_config_operations_defaults_off_and_flags_on(dev_raw: dict[str, object]) -> None:
    ops = _build(dev_raw).operations  # type: ignore[attr-defined]
    assert (ops.alarm_email, ops.edge_rate_limit_per_minute) == ("", None)
    ops = _build({**dev_raw, "edgeRateLimit": "true", "edgeRateLimitPerMinute": "600",
                  "alarmEmail": "ops@example.com"}).operations  # type: ignore[attr-defined]
    assert (ops.alarm_email, ops.edge_rate_limit_per_minute) == ("ops@example.com", 600)


@pytest.mark.parametrize(
    ("key", "value"),
    [("alarmEmail", "not-an-address"), ("edgeRateLimitPerMinute", "10"), ("edgeRateLimit", "yes"),
     ("kubePrometheusStackVersion", "latest"), ("externalSecretsVersion", "v2")],
)
def test_config_operations_bad_value_names_key(dev_raw: dict[str, object], key: str, value: str) -> None:
    from infra.config import ConfigError

    with pytest.raises(ConfigError, match=f"^mlapi:{key}: "):
        _build({**dev_raw, key: value})
