"""The mlapi Grafana dashboard as code: `python monitoring/dashboard.py` writes monitoring/grafana/mlapi.json.

Built with grafana-foundation-sdk's typed builders so a panel cannot name a field Grafana does not have; the JSON
is committed so the Grafana chart's dashboard sidecar (and a reviewer) reads it as is. Every query goes through
the `datasource` variable, which the sidecar import resolves to the cluster's Prometheus.

Label conventions the queries rely on (kube-prometheus-stack defaults): mlapi series carry `namespace` and `pod`
from the ServiceMonitor/PodMonitor; the model container is named `model` (infra/eks/workloads.py); each HPA is
named after what it scales (`<service>-primary` is the live one under Flagger, `<service>` the canary);
kube-state-metrics publishes `kube_horizontalpodautoscaler_*` with `namespace`/`horizontalpodautoscaler`; the
kubelet's cAdvisor publishes `container_cpu_usage_seconds_total` with `namespace`/`pod`/`container`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common, heatmap, prometheus, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement, SortOrder, TooltipDisplayMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "grafana" / "mlapi.json"
UID = "mlapi-overview"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Selectors shared by the queries; `$namespace` is a dashboard variable.
MLAPI = 'namespace=~"$namespace"'
RATE = "$__rate_interval"
SERVED = f'{MLAPI}, route=~".*/(predict|query)"'


@dataclass(frozen=True)
class Query:
    """One PromQL target: the expression and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    """One panel: a time series by default, a heatmap of histogram buckets when `heatmap` is set."""

    title: str
    description: str
    unit: str
    queries: list[Query] = field(default_factory=list)
    heatmap: bool = False


def _quantile(q: float, metric: str, by: str, selector: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


ROWS: list[tuple[str, list[Chart]]] = [
    ("Traffic", [
        Chart("Request rate by route and status", "HTTP answers per second, every route and status code.", "reqps", [
            Query(f"sum by (route, status) (rate(mlapi_requests_total{{{MLAPI}}}[{RATE}]))", "{{route}} {{status}}"),
        ]),
        Chart("Error rate by route and status",
              "Share of each route's answers that were 4xx or 5xx (422 bad input, 503 shed or not ready, 500 fault).",
              "percentunit", [
                  Query(f'sum by (route, status) (rate(mlapi_requests_total{{{MLAPI}, status=~"[45].."}}[{RATE}]))'
                        f" / ignoring (status) group_left"
                        f" sum by (route) (rate(mlapi_requests_total{{{MLAPI}}}[{RATE}]))",
                        "{{route}} {{status}}"),
              ]),
        Chart("Latency p50 / p95 / p99", "Request latency of /predict and /query, from the server's histogram.", "s", [
            Query(_quantile(q, "mlapi_request_seconds", "route", SERVED), f"p{int(q * 100)} {{{{route}}}}")
            for q in (0.5, 0.95, 0.99)
        ]),
        Chart("Texts per second", "Texts received for inference (a /query counts its sentence and its labels).",
              "short", [
                  Query(f"sum by (route) (rate(mlapi_texts_total{{{MLAPI}}}[{RATE}]))", "{{route}}"),
              ]),
    ]),
    ("Cache", [
        Chart("Cache hit ratio", "Texts answered from the cache over all texts looked up, per operation.",
              "percentunit", [
                  Query(f"sum by (op) (rate(mlapi_cache_hits_total{{{MLAPI}}}[{RATE}]))"
                        f" / (sum by (op) (rate(mlapi_cache_hits_total{{{MLAPI}}}[{RATE}]))"
                        f" + sum by (op) (rate(mlapi_cache_misses_total{{{MLAPI}}}[{RATE}])))", "{{op}}"),
              ]),
        Chart("Redis errors", "Failed cache calls by exception, and calls skipped while the circuit is open.", "ops", [
            Query(f"sum by (kind) (rate(mlapi_cache_errors_total{{{MLAPI}}}[{RATE}]))", "{{kind}}"),
        ]),
        Chart("Redis circuit open", "1 while a pod skips Redis after a failure (its /health says degraded).", "bool", [
            Query(f"max by (pod, instance) (mlapi_cache_circuit_open{{{MLAPI}}})", "{{pod}} {{instance}}"),
        ]),
    ]),
    ("Batching and queue", [
        Chart("Batch size distribution", "Texts per inference pass.", "short", [
            Query(f"sum by (le) (rate(mlapi_batch_texts_bucket{{{MLAPI}}}[{RATE}]))", "{{le}}"),
        ], heatmap=True),
        Chart("Queue wait distribution", "Time a request waited before its pass started.", "s", [
            Query(f"sum by (le) (rate(mlapi_queue_wait_seconds_bucket{{{MLAPI}}}[{RATE}]))", "{{le}}"),
        ], heatmap=True),
        Chart("Queue depth", "Texts waiting for inference per pod and backend, against the limit (MLAPI_MAX_QUEUE).",
              "short", [
                  Query(f"sum by (pod, instance, backend) (mlapi_queue_texts{{{MLAPI}}})",
                        "{{pod}} {{instance}} {{backend}}"),
                  Query(f"max by (backend) (mlapi_queue_capacity_texts{{{MLAPI}}})", "limit {{backend}}"),
              ]),
        Chart("503s", "Answers refused with 503 per route, and why (queue full, model not ready, shutting down).",
              "reqps", [
                  Query(f'sum by (route) (rate(mlapi_requests_total{{{MLAPI}, status="503"}}[{RATE}]))', "{{route}}"),
                  Query(f"sum by (reason) (rate(mlapi_rejected_total{{{MLAPI}}}[{RATE}]))", "reason {{reason}}"),
              ]),
        Chart("Inference time per backend", "Time per inference pass, p50 and p95, per backend.", "s", [
            Query(_quantile(q, "mlapi_inference_seconds", "backend", MLAPI), f"p{int(q * 100)} {{{{backend}}}}")
            for q in (0.5, 0.95)
        ]),
    ]),
    ("Capacity", [
        Chart("Replicas (HPA current / desired / max)", "From kube-state-metrics, per HorizontalPodAutoscaler.",
              "short", [
                  Query(f"max by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_{kind}_replicas"
                        f"{{{MLAPI}}})", f"{{{{horizontalpodautoscaler}}}} {kind}")
                  for kind in ("current", "desired")
              ] + [
                  Query(f"max by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_max_replicas{{{MLAPI}}})",
                        "{{horizontalpodautoscaler}} max"),
              ]),
        Chart("CPU per pod", "CPU cores used by each model container, from the kubelet's cAdvisor.", "short", [
            Query(f'sum by (pod) (rate(container_cpu_usage_seconds_total{{{MLAPI}, container="model"}}[{RATE}]))',
                  "{{pod}}"),
        ]),
    ]),
    ("Cost", [
        Chart("Cost per 1,000 predictions",
              "USD per 1,000 texts answered, per service and per API key: the pods' CPU requests at the vCPU-hour "
              "price of the NodePool (mlapi:vcpu_hour_usd, from infra/cost.py), a key charged its share of the "
              "texts the model computed (recording rules in monitoring/prometheus/alerts.yaml).", "currencyUSD", [
                  Query(f"mlapi:service_cost_usd_per_1000_predictions{{{MLAPI}}}", "{{job}}"),
                  Query(f"mlapi:key_cost_usd_per_1000_predictions{{{MLAPI}}}", "{{job}} key {{key}}"),
              ]),
    ]),
]


# Shadow (MLAPI_SHADOW_URL): the primary's counts of how a candidate model answered the texts mirrored to it.
SHADOW_ROW = ("Shadow", [
    Chart("Shadow outcomes",
          "Mirrored texts per second per service and candidate model (its content hash): agree (same top label), "
          "flip (another top label), error (no usable answer), and dropped (shadow queue full, never sent).", "short", [
              Query(f"sum by (job, candidate, outcome) (rate(mlapi_shadow_texts_total{{{MLAPI}}}[{RATE}]))",
                    "{{job}} {{candidate}} {{outcome}}"),
              Query(f"sum by (job, candidate) (rate(mlapi_shadow_dropped_texts_total{{{MLAPI}}}[{RATE}]))",
                    "{{job}} {{candidate}} dropped"),
          ]),
    Chart("Shadow flip ratio",
          "Flips over texts compared, per service and candidate, over 5 minutes: mlapi:shadow_flip_ratio:rate5m, the "
          "series the canary gate reads (recording rules in monitoring/prometheus/alerts.yaml). Errors, the texts the "
          "candidate gave no usable answer, are the share next to it.", "percentunit", [
              Query(f"mlapi:shadow_flip_ratio:rate5m{{{MLAPI}}}", "{{job}} {{candidate}} flips"),
              Query(f"mlapi:shadow_error_ratio:rate5m{{{MLAPI}}}", "{{job}} {{candidate}} errors"),
          ]),
    Chart("Shadow score difference p50 / p99",
          "Largest difference of any label's score between the live model and the candidate, per compared text.",
          "short", [
              Query(_quantile(q, "mlapi_shadow_score_difference", "job, candidate", MLAPI),
                    f"p{int(q * 100)} {{{{job}}}} {{{{candidate}}}}")
              for q in (0.5, 0.99)
          ]),
    Chart("Shadow errors by reason",
          "Mirrored requests with no usable answer: timeout (MLAPI_SHADOW_TIMEOUT_SECONDS), unreachable, status "
          "(not 200: a 401/403 is a missing MLAPI_SHADOW_API_KEY), invalid (not a /predict answer).", "reqps", [
              Query(f"sum by (job, candidate, reason) (rate(mlapi_shadow_errors_total{{{MLAPI}}}[{RATE}]))",
                    "{{job}} {{candidate}} {{reason}}"),
          ]),
    Chart("Shadow queue", "Mirrored texts waiting for the candidate per pod (bounded by MLAPI_SHADOW_QUEUE).",
          "short", [
              Query(f"sum by (pod, instance) (mlapi_shadow_queue_texts{{{MLAPI}}})", "{{pod}} {{instance}}"),
          ]),
    Chart("Models live and candidates",
          "Pods per model each service runs (source, revision, content hash, precision, from its manifest), and the "
          "candidate each service mirrors to (from the candidate's /health): a rollout shows as pods moving across.",
          "short", [
              Query(f"count by (job, source, revision, content_hash, precision) (mlapi_model_info{{{MLAPI}}})",
                    "{{job}} live {{source}} {{revision}} {{content_hash}} {{precision}}"),
              Query(f"max by (job, candidate, source, revision, precision) (mlapi_shadow_candidate_info{{{MLAPI}}})",
                    "{{job}} candidate {{source}} {{revision}} {{candidate}} {{precision}}"),
          ]),
])
ROWS.append(SHADOW_ROW)


def _panel(chart: Chart, panel_id: int) -> timeseries.Panel | heatmap.Panel:
    panel: timeseries.Panel | heatmap.Panel
    if chart.heatmap:
        # The buckets are already a histogram: draw them, do not re-bucket the series.
        panel = heatmap.Panel().calculate(False).span(12)
    else:
        panel = (
            timeseries.Panel()
            .span(8)
            .legend(common.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
                    .placement(LegendPlacement.BOTTOM))
            .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
        )
    panel.title(chart.title).description(chart.description).unit(chart.unit).datasource(DATASOURCE).height(8)
    panel.id(panel_id)
    for ref, query in zip("ABCDEFGH", chart.queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref).datasource(DATASOURCE)
        if chart.heatmap:
            target.format(PromQueryFormat.HEATMAP)
        panel.with_target(target)
    return panel


def build() -> dict[str, object]:
    """The dashboard as the JSON object Grafana imports."""
    board = (
        dash.Dashboard("mlapi")
        .uid(UID)
        .tags(["mlapi"])
        .description("mlapi model services: traffic, errors, latency, cache, batching, queue, capacity, cost and "
                     "shadow agreement of candidate models.")
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dash.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query("label_values(mlapi_requests_total, namespace)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    panel_id = 0
    for title, charts in ROWS:
        panel_id += 1
        board.with_row(dash.Row(title).id(panel_id))
        for chart in charts:
            panel_id += 1
            board.with_panel(_panel(chart, panel_id))
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    """The committed file's exact text."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def expressions() -> list[str]:
    """Every PromQL expression the dashboard runs, as written (with its `$variables`)."""
    return [query.expr for _, charts in ROWS for chart in charts for query in chart.queries]


def main(argv: list[str]) -> int:
    """Write the dashboard JSON (or, with --check, fail if the committed file is stale)."""
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run `make dashboard`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
