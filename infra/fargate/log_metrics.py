"""The service's own counters on CloudWatch, for the Fargate platform: JSON log lines turned into metrics.

Nothing scrapes `/metrics` on Fargate. The service writes each chosen counter's increases to stdout as JSON lines
(`mlapi.metrics_export`, on when `MLAPI_METRICS_LOG_INTERVAL_SECONDS` > 0), the awslogs driver ships them to the
service's log group, and one CloudWatch Logs metric filter per counter turns them into a CloudWatch metric with the
counter's labels as dimensions (at most three per filter), in a namespace per service (`<prefix>/<service>`).

Why not the embedded metric format: CloudWatch extracts EMF from any log event since January 2023 (What's New
2023-01-31, cited in aws/amazon-cloudwatch-agent#677), without the `x-amzn-logs-format: json/emf` header the
awslogs driver does not send (CloudWatch Logs maintainers, e.g.
aws/aws-logging-dotnet#186 and rusoto#1707, 2023-01-31; the PutLogEvents EMF page now calls the header optional),
but "EMF auto detection is not launched in all AWS regions" (aws/shim-loggers-for-containerd#285, 2025-04), and an
EMF line must name its namespace and dimensions, which belong to the stack, not to the image. A metric filter works
in every region, is declared here beside the dashboard that reads it, and is tested under mocks.

The lines look like `{"metric":"mlapi_key_texts_total","key":"web","source":"computed","value":12}`; a filter
selects its counter's lines and takes `$.value` as the value and each label as a dimension. Label values are
bounded by the service (keys from the keys file, the rest folded into `other`), because CloudWatch disables a
filter that sees 1,000 dimension values within an hour. To publish another counter (say a shadow model's
`mlapi_shadow_texts_total`), add it to `LOG_METRICS`: the task's environment and the filters follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

LOG_INTERVAL_SECONDS = 60


@dataclass(frozen=True)
class LogMetric:
    """One service counter published through the log: its Prometheus name and the labels that become dimensions."""

    counter: str
    dimensions: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.dimensions) <= 3:
            raise ValueError(f"{self.counter}: a metric filter takes one to three dimensions, got {self.dimensions}")
        if {"metric", "value"} & set(self.dimensions):
            raise ValueError(f"{self.counter}: 'metric' and 'value' are fields of every line, not labels")


LOG_METRICS: tuple[LogMetric, ...] = (
    # Texts answered per API key, computed by the model or from the cache: cost per 1,000 predictions per key.
    LogMetric("mlapi_key_texts_total", ("key", "source")),
    # Mirrored texts that agreed, flipped or failed on a candidate model, and those dropped: the rollout's gate.
    LogMetric("mlapi_shadow_texts_total", ("candidate", "outcome")),
    LogMetric("mlapi_shadow_dropped_texts_total", ("candidate",)),
)


def metrics_log_env(metrics: tuple[LogMetric, ...] = LOG_METRICS) -> dict[str, str]:
    """The `MLAPI_*` settings that make a task write the lines its log group's filters read."""
    return {
        "MLAPI_METRICS_LOG_INTERVAL_SECONDS": str(LOG_INTERVAL_SECONDS),
        "MLAPI_METRICS_LOG_COUNTERS": ",".join(m.counter for m in metrics),
    }


def filter_pattern(metric: LogMetric) -> str:
    """The filter pattern that selects `metric`'s lines: its name, a positive value and every dimension present."""
    terms = [f'$.metric = "{metric.counter}"', "$.value > 0", *(f"$.{d} = *" for d in metric.dimensions)]
    return "{ " + " && ".join(terms) + " }"


def namespace(prefix: str, service: str) -> str:
    """The CloudWatch namespace of one service's log metrics: two services' keys never add up."""
    return f"{prefix}/{service}"


@dataclass(frozen=True)
class LogMetricsArgs:
    """The stack prefix, and each service's name and log group."""

    prefix: str
    log_groups: dict[str, pulumi.Input[str]]
    metrics: tuple[LogMetric, ...] = LOG_METRICS


class LogMetricFilters(pulumi.ComponentResource):
    """One metric filter per (service, counter) on the service's log group."""

    def __init__(self, name: str, args: LogMetricsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:cloudwatch:LogMetricFilters", name, None, opts)
        for service, log_group in args.log_groups.items():
            for metric in args.metrics:
                aws.cloudwatch.LogMetricFilter(
                    f"{name}-{service}-{metric.counter}",
                    name=f"{args.prefix}-{service}-{metric.counter}",
                    log_group_name=log_group,
                    pattern=filter_pattern(metric),
                    # No default value: CloudWatch refuses one beside dimensions ("dimensions and default value
                    # are mutually exclusive properties"), and dimensions need a JSON pattern, as this one is.
                    metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                        name=metric.counter,
                        namespace=namespace(args.prefix, service),
                        value="$.value",
                        dimensions={d: f"$.{d}" for d in metric.dimensions},
                        unit="Count",
                    ),
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.register_outputs({})
