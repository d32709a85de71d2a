"""The Fargate CloudWatch dashboard and alarms: valid JSON, only metrics and dimensions AWS publishes, the
SLO thresholds, and the optional SNS topic."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from component_harness import declare
from infra_mocks import ACCOUNT, REGION, Recorded, plain

from infra.fargate.cloudwatch import (
    ERROR_RATE_PERCENT,
    LATENCY_P99_SECONDS,
    CloudWatchArgs,
    CloudWatchMonitoring,
    ServiceMetrics,
)

LB = "app/mlapi-fargate/0123456789abcdef"
CLUSTER = "mlapi-fargate"
SERVICES = [
    ServiceMetrics(name="sentiment", target_group="targetgroup/mlapi-fargate-sentiment/aaa", ecs_service="sentiment",
                   max_tasks=6, task_hour_usd=0.04937),
    ServiceMetrics(name="semantic", target_group="targetgroup/mlapi-fargate-semantic/bbb", ecs_service="semantic",
                   max_tasks=4),
]
TAGS = {"stack": "fargate", "service": "mlapi", "managed-by": "pulumi"}

# What AWS publishes, with the dimension sets each metric carries:
# ALB: "CloudWatch metrics for your Application Load Balancer" (Metric dimensions table);
# ECS: "Amazon ECS CloudWatch metrics" (ClusterName, ServiceName); Container Insights: "Amazon ECS Container
# Insights metrics" (TaskSet/Service level: ClusterName, ServiceName).
_TG = frozenset({"LoadBalancer", "TargetGroup"})
_LB = frozenset({"LoadBalancer"})
_SVC = frozenset({"ClusterName", "ServiceName"})
PUBLISHED: dict[tuple[str, str], set[frozenset[str]]] = {
    ("AWS/ApplicationELB", "RequestCount"): {_LB, _TG},
    ("AWS/ApplicationELB", "HTTPCode_Target_4XX_Count"): {_LB, _TG},
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): {_LB, _TG},
    ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"): {_LB},
    ("AWS/ApplicationELB", "TargetResponseTime"): {_LB, _TG},
    ("AWS/ApplicationELB", "HealthyHostCount"): {_TG},
    ("AWS/ApplicationELB", "UnHealthyHostCount"): {_TG},
    ("AWS/ECS", "CPUUtilization"): {frozenset({"ClusterName"}), _SVC},
    ("AWS/ECS", "MemoryUtilization"): {frozenset({"ClusterName"}), _SVC},
    ("ECS/ContainerInsights", "RunningTaskCount"): {_SVC},
    ("ECS/ContainerInsights", "DesiredTaskCount"): {_SVC},
}
DIMENSION_VALUES = {"LoadBalancer": {LB}, "TargetGroup": {s.target_group for s in SERVICES},
                    "ClusterName": {CLUSTER}, "ServiceName": {s.ecs_service for s in SERVICES}}


def unpublished(namespace: str, metric: str, dimensions: dict[str, str]) -> str | None:
    """Why a metric reference would chart nothing, or None if AWS publishes it with these dimensions."""
    allowed = PUBLISHED.get((namespace, metric))
    if allowed is None:
        return f"{namespace} publishes no {metric}"
    if frozenset(dimensions) not in allowed:
        return f"{namespace}/{metric} has no dimension set {sorted(dimensions)}"
    for key, value in dimensions.items():
        if value not in DIMENSION_VALUES[key]:
            return f"{key}={value!r} names nothing in the stack"
    return None


def metric_rows(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """Each dashboard metric as (namespace, metric name, dimensions)."""
    rows = []
    for widget in body["widgets"]:
        for row in widget["properties"]["metrics"]:
            fields = [f for f in row if not isinstance(f, dict)]
            if not fields:  # a metric-math expression over the rows around it
                continue
            namespace, metric, pairs = fields[0], fields[1], fields[2:]
            rows.append((namespace, metric, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return rows


def run(email: str) -> list[Recorded]:
    def build() -> dict[str, Any]:
        monitoring = CloudWatchMonitoring(
            "cloudwatch",
            CloudWatchArgs(dashboard_name="mlapi-fargate", region="us-east-1", load_balancer=LB, cluster_name=CLUSTER,
                           services=SERVICES, alarm_email=email, tags=TAGS),
        )
        return {"dashboard": monitoring.dashboard_name}

    return declare(build)[0]


@pytest.fixture(scope="module")
def quiet() -> list[Recorded]:
    return run("")


@pytest.fixture(scope="module")
def notifying() -> list[Recorded]:
    return run("oncall@example.com")


def body_of(resources: list[Recorded]) -> dict[str, Any]:
    [dashboard] = [r for r in resources if r.typ == "aws:cloudwatch/dashboard:Dashboard"]
    return json.loads(dashboard.inputs["dashboardBody"])


def alarms(resources: list[Recorded]) -> dict[str, dict[str, Any]]:
    return {r.name: plain(r.inputs) for r in resources if r.typ == "aws:cloudwatch/metricAlarm:MetricAlarm"}


def test_dashboard_body_is_json_with_only_published_metrics(quiet: list[Recorded]) -> None:
    rows = metric_rows(body_of(quiet))
    assert rows
    problems = [p for p in (unpublished(*row) for row in rows) if p]
    assert problems == []


def test_dashboard_charts_every_required_signal_per_service(quiet: list[Recorded]) -> None:
    body = body_of(quiet)
    charted = {(ns, metric, dims.get("TargetGroup") or dims.get("ServiceName")) for ns, metric, dims in
               metric_rows(body)}
    for svc in SERVICES:
        for metric in ("RequestCount", "HTTPCode_Target_4XX_Count", "HTTPCode_Target_5XX_Count",
                       "TargetResponseTime", "HealthyHostCount"):
            assert ("AWS/ApplicationELB", metric, svc.target_group) in charted
        for ns, metric in (("AWS/ECS", "CPUUtilization"), ("AWS/ECS", "MemoryUtilization"),
                           ("ECS/ContainerInsights", "RunningTaskCount")):
            assert (ns, metric, svc.ecs_service) in charted
    latency = [w for w in body["widgets"] if w["properties"]["title"].startswith("Target response time")][0]
    stats = sorted(row[-1]["stat"] for row in latency["properties"]["metrics"])
    assert stats == ["p50", "p50", "p99", "p99"]


def test_unpublished_rejects_a_wrong_dimension() -> None:
    assert unpublished("AWS/ApplicationELB", "RequestCount", {"ServiceName": "sentiment"}) is not None
    assert unpublished("AWS/ECS", "RunningTaskCount", {"ClusterName": CLUSTER, "ServiceName": "sentiment"})
    assert unpublished("AWS/ECS", "CPUUtilization", {"ClusterName": "other", "ServiceName": "sentiment"})


def test_alarms_use_published_metrics_and_slo_thresholds(quiet: list[Recorded]) -> None:
    found = alarms(quiet)
    for svc in SERVICES:
        rate = found[f"cloudwatch-{svc.name}-error-rate"]
        assert rate["threshold"] == ERROR_RATE_PERCENT
        queries = {q["id"]: q for q in rate["metricQueries"]}
        assert queries["rate"]["expression"] == "IF(requests > 0, 100 * errors / requests, 0)"
        assert queries["errors"]["metric"]["metricName"] == "HTTPCode_Target_5XX_Count"
        p99 = found[f"cloudwatch-{svc.name}-latency-p99"]
        assert (p99["extendedStatistic"], p99["threshold"]) == ("p99", LATENCY_P99_SECONDS)
        at_max = found[f"cloudwatch-{svc.name}-at-max"]
        assert (at_max["threshold"], at_max["comparisonOperator"]) == (svc.max_tasks, "GreaterThanOrEqualToThreshold")
    for alarm in found.values():
        metrics = [q["metric"] for q in alarm.get("metricQueries", []) if "metric" in q] or [alarm]
        for m in metrics:
            assert unpublished(m["namespace"], m["metricName"], m["dimensions"]) is None, alarm["name"]
        assert alarm["tags"] == TAGS


def test_no_topic_and_no_actions_without_email(quiet: list[Recorded]) -> None:
    assert not [r for r in quiet if r.typ.startswith("aws:sns/")]
    assert all(not a.get("alarmActions") for a in alarms(quiet).values())


def test_email_creates_encrypted_topic_every_alarm_notifies(notifying: list[Recorded]) -> None:
    [topic] = [r for r in notifying if r.typ == "aws:sns/topic:Topic"]
    [key] = [r for r in notifying if r.typ == "aws:kms/key:Key"]
    # A customer-managed key (the AWS-managed alias/aws/sns admits no CloudWatch): the topic names its ARN.
    assert topic.inputs["kmsMasterKeyId"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:{key.name}"
    assert key.inputs["enableKeyRotation"] is True
    [sub] = [r for r in notifying if r.typ == "aws:sns/topicSubscription:TopicSubscription"]
    assert (sub.inputs["protocol"], sub.inputs["endpoint"]) == ("email", "oncall@example.com")
    found = alarms(notifying)
    assert len(found) == 7 * len(SERVICES)
    for alarm in found.values():
        assert len(alarm["alarmActions"]) == 1 and alarm["alarmActions"] == alarm["okActions"]


def test_alarm_key_policy_lets_cloudwatch_of_this_account_encrypt(notifying: list[Recorded]) -> None:
    [key] = [r for r in notifying if r.typ == "aws:kms/key:Key"]
    statements = json.loads(key.inputs["policy"])["Statement"]
    publish = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(publish) == 1
    assert set(publish[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert publish[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    # Without an administering statement for the account, nobody could ever change or delete the key.
    assert any(s["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"} and s["Action"] == "kms:*"
               for s in statements)


def _alert(name: str) -> dict[str, Any]:
    import yaml
    from infra_program import REPO

    groups = yaml.safe_load((REPO / "monitoring" / "prometheus" / "alerts.yaml").read_text())["groups"]
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def _threshold(expr: str) -> float:
    return float(re.findall(r"(?:>|>=)\s*([0-9.]+)\s*$", expr.strip())[0])


def _minutes(duration: str) -> int:
    assert duration.endswith("m"), duration
    return int(duration[:-1])


def test_alarms_hold_the_same_slos_as_the_prometheus_rules(quiet: list[Recorded]) -> None:
    found = alarms(quiet)["cloudwatch-sentiment-error-rate"]
    errors = _alert("MlapiHighErrorRate")
    assert _threshold(errors["expr"]) * 100 == ERROR_RATE_PERCENT
    assert found["evaluationPeriods"] * found["metricQueries"][0]["metric"]["period"] == _minutes(errors["for"]) * 60
    latency = _alert("MlapiLatencyP99OverSLO")
    p99 = alarms(quiet)["cloudwatch-sentiment-latency-p99"]
    assert _threshold(latency["expr"]) == LATENCY_P99_SECONDS
    assert p99["evaluationPeriods"] * p99["period"] == _minutes(latency["for"]) * 60
    for alarm, rule in (("unhealthy", "MlapiPodsNotReady"), ("at-max", "MlapiHpaAtMax")):
        declared = alarms(quiet)[f"cloudwatch-sentiment-{alarm}"]
        assert declared["evaluationPeriods"] * declared["period"] == _minutes(_alert(rule)["for"]) * 60


def test_alarm_runbook_links_name_sections_of_operations_doc(quiet: list[Recorded]) -> None:
    from infra_program import REPO

    headings = {h.lower() for h in re.findall(r"^### (\w+)", (REPO / "docs" / "operations.md").read_text(), re.M)}
    linked = {a for alarm in alarms(quiet).values()
              for a in re.findall(r"docs/operations\.md#(\w+)", alarm.get("alarmDescription", ""))}
    assert linked and linked <= headings


def test_cost_widget_prices_running_tasks_per_thousand_requests(quiet: list[Recorded]) -> None:
    (widget,) = [w for w in body_of(quiet)["widgets"] if w["properties"]["title"].startswith("Cost per 1,000")]
    rows = widget["properties"]["metrics"]
    # Only the priced service: 1 vCPU / 2 GB at $0.04048 + 2 x $0.004445 an hour.
    expressions = [row[0] for row in rows if len(row) == 1]
    assert expressions == [{"id": "cost0", "label": "sentiment",
                            "expression": "tasks0 * 0.04937 * PERIOD(tasks0) / 3600 / requests0 * 1000"}]
    inputs = {row[-1]["id"]: row[:-1] for row in rows if len(row) > 1}
    assert inputs == {
        "tasks0": ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", CLUSTER, "ServiceName", "sentiment"],
        "requests0": ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", LB, "TargetGroup",
                      "targetgroup/mlapi-fargate-sentiment/aaa"],
    }
