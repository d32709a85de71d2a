"""Metrics on the Fargate platform: one CloudWatch dashboard and the SLO alarms, from what AWS already publishes.

The ALB publishes per target group (namespace AWS/ApplicationELB, dimensions LoadBalancer + TargetGroup), ECS per
service (AWS/ECS: CPUUtilization, MemoryUtilization) and Container Insights the task counts (ECS/ContainerInsights:
RunningTaskCount, DesiredTaskCount), both with ClusterName + ServiceName. The alarms hold the same SLOs as the
Prometheus rules of the EKS platform (monitoring/prometheus/alerts.yaml): 5xx share, p99 latency, targets not
healthy, running at the scaling ceiling. They notify an SNS topic when `mlapi:alarmEmail` is set. Cost: per 1,000
requests per service from the task price (infra/cost.py), and per key and per 1,000 predictions per key from the
service's own per-key counts, which reach CloudWatch as log metrics (infra/fargate/log_metrics.py).

The topic is encrypted with a customer-managed KMS key whose policy lets CloudWatch use it: the AWS-managed
`alias/aws/sns` key admits no service principal, so alarms could not publish to a topic under it (CloudWatch user
guide, "Using Amazon CloudWatch alarms": encrypted SNS topics need a customer-managed key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.fargate.log_metrics import LOG_METRICS

# The SLOs of monitoring/prometheus/alerts.yaml, restated for ALB metrics.
ERROR_RATE_PERCENT = 5.0  # MlapiHighErrorRate: more than 5% of answers 5xx over 5 minutes
LATENCY_P99_SECONDS = 1.0  # MlapiLatencyP99OverSLO: p99 over 1 s for 10 minutes
NOT_READY_MINUTES = 10  # MlapiPodsNotReady: unhealthy targets for 10 minutes
AT_MAX_MINUTES = 15  # MlapiHpaAtMax: at the maximum task count for 15 minutes
SATURATION_PERCENT = 90.0  # CPU or memory this high, this long, means scaling is not keeping up
PERIOD = 60
KEY_TEXTS = LOG_METRICS[0].counter  # mlapi_key_texts_total: texts answered per key, computed or cached
SHADOW_TEXTS = LOG_METRICS[1].counter  # mlapi_shadow_texts_total: mirrored texts per candidate and outcome


def alarm_key_policy(account_id: str) -> str:
    """KMS key policy: the account administers the key (IAM policies decide who), and CloudWatch of this account
    may encrypt alarm notifications with it."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdministersTheKey",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "CloudWatchAlarmsPublish",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudwatch.amazonaws.com"},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                },
            ],
        }
    )


@dataclass(frozen=True)
class ServiceMetrics:
    """One Fargate service as its metrics name it: target group ARN suffix, ECS service name, scaling ceiling."""

    name: str
    target_group: pulumi.Input[str]
    ecs_service: pulumi.Input[str]
    max_tasks: int
    # USD an hour of one task (infra/cost.py); None leaves the service out of the cost widgets.
    task_hour_usd: float | None = None
    # Namespace of the service's log metrics (infra/fargate/log_metrics.py); None: no per-key widgets.
    log_namespace: str | None = None


@dataclass(frozen=True)
class CloudWatchArgs:
    """Where the metrics come from (load balancer ARN suffix, ECS cluster) and who hears the alarms."""

    dashboard_name: str
    region: str
    load_balancer: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    services: list[ServiceMetrics]
    alarm_email: str
    tags: dict[str, str]
    # API key names priced one by one on the dashboard, beside `other` (config `costDashboardKeys`).
    cost_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Resolved:
    name: str
    target_group: str
    ecs_service: str
    task_hour_usd: float | None = None
    log_namespace: str | None = None


def _widget(title: str, metrics: list[list[Any]], region: str, position: tuple[int, int],
            stat: str = "Sum", unit_label: str = "", period: int = PERIOD) -> dict[str, Any]:
    x, y = position
    properties: dict[str, Any] = {
        "title": title,
        "view": "timeSeries",
        "stacked": False,
        "region": region,
        "period": period,
        "stat": stat,
        "metrics": metrics,
    }
    if unit_label:
        properties["yAxis"] = {"left": {"label": unit_label, "showUnits": False}}
    return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": properties}


def dashboard_body(region: str, load_balancer: str, cluster: str, services: list[_Resolved],
                   cost_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dashboard: ALB traffic, errors, latency and health per target group; ECS load and task counts; what a
    request, a key and a prediction cost."""
    alb = "AWS/ApplicationELB"

    def per_tg(metric: str, **options: str) -> list[list[Any]]:
        return [
            [alb, metric, "LoadBalancer", load_balancer, "TargetGroup", s.target_group, {"label": s.name, **options}]
            for s in services
        ]

    def per_service(namespace: str, metric: str) -> list[list[Any]]:
        return [
            [namespace, metric, "ClusterName", cluster, "ServiceName", s.ecs_service, {"label": s.name}]
            for s in services
        ]

    errors = [
        [alb, metric, "LoadBalancer", load_balancer, "TargetGroup", s.target_group, {"label": f"{s.name} {code}"}]
        for s in services
        for metric, code in (("HTTPCode_Target_4XX_Count", "4xx"), ("HTTPCode_Target_5XX_Count", "5xx"))
    ]
    errors.append([alb, "HTTPCode_ELB_5XX_Count", "LoadBalancer", load_balancer, {"label": "load balancer 5xx"}])
    latency = [
        row
        for s in services
        for row in (
            [alb, "TargetResponseTime", "LoadBalancer", load_balancer, "TargetGroup", s.target_group,
             {"label": f"{s.name} p50", "stat": "p50"}],
            [alb, "TargetResponseTime", "LoadBalancer", load_balancer, "TargetGroup", s.target_group,
             {"label": f"{s.name} p99", "stat": "p99"}],
        )
    ]
    widgets = [
        _widget("Requests per minute", per_tg("RequestCount"), region, (0, 0)),
        _widget("4xx and 5xx per minute", errors, region, (12, 0)),
        _widget("Target response time (p50, p99)", latency, region, (0, 6), stat="p99", unit_label="seconds"),
        _widget("Healthy targets", per_tg("HealthyHostCount"), region, (12, 6), stat="Minimum"),
        _widget("CPU utilization %", per_service("AWS/ECS", "CPUUtilization"), region, (0, 12), stat="Average"),
        _widget("Memory utilization %", per_service("AWS/ECS", "MemoryUtilization"), region, (12, 12),
                stat="Average"),
        _widget("Running tasks", per_service("ECS/ContainerInsights", "RunningTaskCount"), region, (0, 18),
                stat="Average"),
        _widget("Desired tasks", per_service("ECS/ContainerInsights", "DesiredTaskCount"), region, (12, 18),
                stat="Average"),
    ]
    cost = _cost_rows(alb, load_balancer, cluster, services)
    if cost:
        widgets.append(_widget("Cost per 1,000 requests (USD)", cost, region, (0, 24), unit_label="USD"))
    logged = [s for s in services if s.log_namespace]
    if logged:
        widgets.append(_widget("Predictions per key (texts answered)", _prediction_rows(logged), region, (12, 24),
                               period=KEY_PERIOD))
    priced = [s for s in logged if s.task_hour_usd is not None]
    if priced:
        widgets.append(_widget("Cost per key (USD)", _key_cost_rows(cluster, priced), region, (0, 30),
                               unit_label="USD", period=KEY_PERIOD))
        widgets.append(_widget("Cost per 1,000 predictions per key (USD)", _key_unit_cost_rows(cluster, priced,
                               cost_keys), region, (12, 30), unit_label="USD", period=KEY_PERIOD))
    if logged:
        widgets.append(_widget("Shadow: mirrored texts by candidate and outcome", _shadow_rows(logged), region,
                               (0, 36), period=KEY_PERIOD))
        widgets.append(_widget("Shadow flip ratio (flip / compared)", _flip_ratio_rows(logged), region, (12, 36),
                               period=KEY_PERIOD))
    return {"start": "-PT3H", "periodOverride": "inherit", "widgets": widgets}


def _cost_rows(alb: str, load_balancer: str, cluster: str, services: list[_Resolved]) -> list[list[Any]]:
    """Metric math per service: running tasks x task price over the period, per 1,000 ALB requests in it.

    Per service and per request (a request carries up to MLAPI_MAX_BATCH texts); per key and per prediction, from
    the service's own counts, in the widgets below."""
    rows: list[list[Any]] = []
    for i, s in enumerate(services):
        if s.task_hour_usd is None:
            continue
        rows.append(["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", cluster, "ServiceName", s.ecs_service,
                     {"id": f"tasks{i}", "stat": "Average", "visible": False}])
        rows.append([alb, "RequestCount", "LoadBalancer", load_balancer, "TargetGroup", s.target_group,
                     {"id": f"requests{i}", "stat": "Sum", "visible": False}])
        expression = f"tasks{i} * {s.task_hour_usd:.6g} * PERIOD(tasks{i}) / 3600 / requests{i} * 1000"
        rows.append([{"id": f"cost{i}", "label": s.name, "expression": expression}])
    return rows


# The service writes its counters every LOG_INTERVAL_SECONDS; a point of five minutes holds five writes per task,
# so where a write falls within a minute does not show as noise.
KEY_PERIOD = 300


def _search(namespace: str, source: str | None = None) -> str:
    """SEARCH over every key's series of one service's `mlapi_key_texts_total` (optionally one source)."""
    where = f' source="{source}"' if source else ""
    return (f"SEARCH('{{\"{namespace}\",key,source}} MetricName=\"{KEY_TEXTS}\"{where}', 'Sum', {KEY_PERIOD})")


def _service_cost_rows(cluster: str, i: int, s: _Resolved) -> list[list[Any]]:
    """Hidden rows of one service: its running tasks, its cost over the period, every key's computed texts."""
    return [
        ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", cluster, "ServiceName", s.ecs_service,
         {"id": f"tasks{i}", "stat": "Average", "visible": False}],
        [{"id": f"cost{i}", "expression": f"tasks{i} * {s.task_hour_usd:.6g} * PERIOD(tasks{i}) / 3600",
          "visible": False}],
        [{"id": f"computed{i}", "expression": _search(str(s.log_namespace), "computed"), "visible": False}],
    ]


def _prediction_rows(services: list[_Resolved]) -> list[list[Any]]:
    """Texts answered per key and source, every key the service has given a series (no configuration)."""
    return [[{"id": f"texts{i}", "label": s.name, "expression": _search(str(s.log_namespace))}]
            for i, s in enumerate(services)]


def _key_cost_rows(cluster: str, services: list[_Resolved]) -> list[list[Any]]:
    """Each key's share of its service's task cost: the share of the texts the model computed for it (a cached
    text costs a Redis read), as monitoring/prometheus/alerts.yaml does. Every key, no configuration."""
    rows: list[list[Any]] = []
    for i, s in enumerate(services):
        rows += _service_cost_rows(cluster, i, s)
        rows.append([{"id": f"usd{i}", "label": s.name, "expression": f"computed{i} * cost{i} / SUM(computed{i})"}])
    return rows


def _key_unit_cost_rows(cluster: str, services: list[_Resolved], keys: tuple[str, ...]) -> list[list[Any]]:
    """Cost per 1,000 predictions of each named key: its share of the task cost over all the texts it was answered.

    Metric math cannot divide one SEARCH's series by another's key by key (arithmetic takes an array and a single
    series, never two arrays: CloudWatch "Metric math syntax and functions"), so each key is its own pair of
    metrics: `other` always, and the keys named in `costDashboardKeys`."""
    rows: list[list[Any]] = []
    for i, s in enumerate(services):
        rows += _service_cost_rows(cluster, i, s)
        for j, key in enumerate(dict.fromkeys(("other", *keys))):
            for source, prefix in (("computed", "c"), ("cached", "h")):
                rows.append([s.log_namespace, KEY_TEXTS, "key", key, "source", source,
                             {"id": f"{prefix}{i}_{j}", "stat": "Sum", "visible": False}])
            rows.append([{"id": f"unit{i}_{j}", "label": f"{s.name} {key}",
                          "expression": f"c{i}_{j} * cost{i} / SUM(computed{i}) / (c{i}_{j} + h{i}_{j}) * 1000"}])
    return rows


def _shadow_search(namespace: str, outcome: str | None = None) -> str:
    """SEARCH over one service's `mlapi_shadow_texts_total` series (every candidate; optionally one outcome)."""
    where = f' outcome="{outcome}"' if outcome else ""
    return (f"SEARCH('{{\"{namespace}\",candidate,outcome}} MetricName=\"{SHADOW_TEXTS}\"{where}', 'Sum', "
            f"{KEY_PERIOD})")


def _shadow_rows(services: list[_Resolved]) -> list[list[Any]]:
    """Texts the primary mirrored to a candidate model, agreed, flipped or failed, per candidate (no configuration)."""
    return [[{"id": f"shadow{i}", "label": s.name, "expression": _shadow_search(str(s.log_namespace))}]
            for i, s in enumerate(services)]


def _flip_ratio_rows(services: list[_Resolved]) -> list[list[Any]]:
    """Per service, the share of compared texts whose top label flipped: what a rollout's flip gate reads on EKS."""
    rows: list[list[Any]] = []
    for i, s in enumerate(services):
        ns = str(s.log_namespace)
        rows.append([{"id": f"flip{i}", "expression": f"SUM({_shadow_search(ns, 'flip')})", "visible": False}])
        rows.append([{"id": f"agree{i}", "expression": f"SUM({_shadow_search(ns, 'agree')})", "visible": False}])
        rows.append([{"id": f"ratio{i}", "label": s.name, "expression": f"flip{i} / (flip{i} + agree{i})"}])
    return rows


def _dimensions_tg(load_balancer: pulumi.Input[str], target_group: pulumi.Input[str]) -> dict[str, Any]:
    return {"LoadBalancer": load_balancer, "TargetGroup": target_group}


class CloudWatchMonitoring(pulumi.ComponentResource):
    """The dashboard, per-service SLO alarms, and the optional SNS topic they notify."""

    dashboard_name: pulumi.Output[str]
    alarm_topic_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: CloudWatchArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:cloudwatch:CloudWatchMonitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        actions: list[pulumi.Input[str]] = []
        self.alarm_topic_arn = None
        if args.alarm_email:
            identity = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self))
            key = aws.kms.Key(
                f"{name}-alarms-key",
                description=f"Encrypts the {args.dashboard_name} alarm topic; CloudWatch may use it",
                enable_key_rotation=True,
                deletion_window_in_days=7,
                policy=identity.account_id.apply(alarm_key_policy),
                tags=args.tags,
                opts=child,
            )
            topic = aws.sns.Topic(
                f"{name}-alarms",
                name=f"{args.dashboard_name}-alarms",
                kms_master_key_id=key.arn,
                tags=args.tags,
                opts=child,
            )
            aws.sns.TopicSubscription(
                f"{name}-alarms-email", topic=topic.arn, protocol="email", endpoint=args.alarm_email, opts=child
            )
            actions = [topic.arn]
            self.alarm_topic_arn = topic.arn

        names = [s.name for s in args.services]
        prices = [s.task_hour_usd for s in args.services]
        namespaces = [s.log_namespace for s in args.services]
        body = pulumi.Output.all(
            args.load_balancer,
            args.cluster_name,
            pulumi.Output.all(*[s.target_group for s in args.services]),
            pulumi.Output.all(*[s.ecs_service for s in args.services]),
        ).apply(
            lambda v: json.dumps(
                dashboard_body(
                    args.region, v[0], v[1],
                    [_Resolved(n, tg, svc, p, ns)
                     for n, tg, svc, p, ns in zip(names, v[2], v[3], prices, namespaces, strict=True)],
                    args.cost_keys,
                )
            )
        )
        dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=args.dashboard_name, dashboard_body=body, opts=child
        )
        for svc in args.services:
            self._alarms(name, args, svc, actions)
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs({"dashboard_name": self.dashboard_name, "alarm_topic_arn": self.alarm_topic_arn})

    def _alarms(self, name: str, args: CloudWatchArgs, svc: ServiceMetrics, actions: list[pulumi.Input[str]]) -> None:
        base = f"{name}-{svc.name}"
        child = pulumi.ResourceOptions(parent=self)
        tg_dims = _dimensions_tg(args.load_balancer, svc.target_group)
        ecs_dims = {"ClusterName": args.cluster_name, "ServiceName": svc.ecs_service}
        common: dict[str, Any] = {
            "alarm_actions": actions,
            "ok_actions": actions,
            "tags": args.tags,
            "opts": child,
        }
        alb_metric = aws.cloudwatch.MetricAlarmMetricQueryMetricArgs

        def query(query_id: str, metric: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=query_id,
                return_data=False,
                metric=alb_metric(namespace="AWS/ApplicationELB", metric_name=metric, dimensions=tg_dims,
                                  period=PERIOD, stat="Sum"),
            )

        aws.cloudwatch.MetricAlarm(
            f"{base}-error-rate",
            name=f"{args.dashboard_name}-{svc.name}-5xx-rate",
            alarm_description=f"{svc.name}: more than {ERROR_RATE_PERCENT:g}% of answers 5xx for 5 minutes "
            "(runbook: docs/operations.md#mlapihigherrorrate)",
            comparison_operator="GreaterThanThreshold",
            threshold=ERROR_RATE_PERCENT,
            evaluation_periods=5,
            datapoints_to_alarm=5,
            treat_missing_data="notBreaching",
            metric_queries=[
                query("errors", "HTTPCode_Target_5XX_Count"),
                query("requests", "RequestCount"),
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="rate", expression="IF(requests > 0, 100 * errors / requests, 0)",
                    label="5xx % of answers", return_data=True,
                ),
            ],
            **common,
        )
        aws.cloudwatch.MetricAlarm(
            f"{base}-latency-p99",
            name=f"{args.dashboard_name}-{svc.name}-p99-latency",
            alarm_description=f"{svc.name}: p99 target response time over {LATENCY_P99_SECONDS:g} s for 10 minutes "
            "(runbook: docs/operations.md#mlapilatencyp99overslo)",
            namespace="AWS/ApplicationELB",
            metric_name="TargetResponseTime",
            dimensions=tg_dims,
            extended_statistic="p99",
            period=PERIOD,
            comparison_operator="GreaterThanThreshold",
            threshold=LATENCY_P99_SECONDS,
            evaluation_periods=10,
            datapoints_to_alarm=10,
            treat_missing_data="notBreaching",
            **common,
        )
        aws.cloudwatch.MetricAlarm(
            f"{base}-unhealthy",
            name=f"{args.dashboard_name}-{svc.name}-unhealthy-targets",
            alarm_description=f"{svc.name}: tasks failing the load balancer health check for "
            f"{NOT_READY_MINUTES} minutes (runbook: docs/operations.md#mlapipodsnotready)",
            namespace="AWS/ApplicationELB",
            metric_name="UnHealthyHostCount",
            dimensions=tg_dims,
            statistic="Maximum",
            period=PERIOD,
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            evaluation_periods=NOT_READY_MINUTES,
            datapoints_to_alarm=NOT_READY_MINUTES,
            treat_missing_data="notBreaching",
            **common,
        )
        aws.cloudwatch.MetricAlarm(
            f"{base}-no-healthy",
            name=f"{args.dashboard_name}-{svc.name}-no-healthy-targets",
            alarm_description=f"{svc.name}: no task passes the load balancer health check; every request fails",
            namespace="AWS/ApplicationELB",
            metric_name="HealthyHostCount",
            dimensions=tg_dims,
            statistic="Minimum",
            period=PERIOD,
            comparison_operator="LessThanThreshold",
            threshold=1,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            # The ALB stops publishing for a target group with no registered targets: that is an outage too.
            treat_missing_data="breaching",
            **common,
        )
        aws.cloudwatch.MetricAlarm(
            f"{base}-at-max",
            name=f"{args.dashboard_name}-{svc.name}-at-max-tasks",
            alarm_description=f"{svc.name}: running at its maximum of {svc.max_tasks} tasks for {AT_MAX_MINUTES} "
            "minutes; scaling cannot add capacity (runbook: docs/operations.md#mlapihpaatmax)",
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions=ecs_dims,
            statistic="Minimum",
            period=PERIOD,
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=svc.max_tasks,
            evaluation_periods=AT_MAX_MINUTES,
            datapoints_to_alarm=AT_MAX_MINUTES,
            treat_missing_data="notBreaching",
            **common,
        )
        for metric in ("CPUUtilization", "MemoryUtilization"):
            aws.cloudwatch.MetricAlarm(
                f"{base}-{metric.removesuffix('Utilization').lower()}-saturated",
                name=f"{args.dashboard_name}-{svc.name}-{metric}",
                alarm_description=f"{svc.name}: average {metric} over {SATURATION_PERCENT:g}% for 10 minutes",
                namespace="AWS/ECS",
                metric_name=metric,
                dimensions=ecs_dims,
                statistic="Average",
                period=PERIOD,
                comparison_operator="GreaterThanThreshold",
                threshold=SATURATION_PERCENT,
                evaluation_periods=10,
                datapoints_to_alarm=10,
                treat_missing_data="notBreaching",
                **common,
            )
