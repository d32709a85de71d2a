"""The checks a canary must pass before Flagger shifts more traffic to it, as PromQL, kept in one place.

Flagger's MetricTemplates (infra/eks/canary.py) carry these queries verbatim, and tests/infra/eks/
test_infra_canary_gates.py evaluates the same strings with promtool on synthetic series, so the gate that runs in
the cluster is the gate that was proven. Each query is a Flagger template: `{{ namespace }}`, `{{ target }}` (the
Deployment the Canary targets, i.e. the service's name) and `{{ interval }}` (the metric's window) are filled in by
Flagger at every check (Flagger "Metrics Analysis", custom metrics).

Which pods each gate reads: Flagger runs the new version in the target Deployment's pods (`<target>-<hash>-<id>`)
and the live one in `<target>-primary-<hash>-<id>`. Latency and 5xx are the canary's own answers. Agreement is
counted by the primary, which mirrors a sample of its texts to the canary and compares answers
(`mlapi_shadow_texts_total{outcome="agree|flip|error"}`, service/mlapi/shadow), so the flip gate reads the
primary's pods. A query with no sample (no traffic, no compared texts) fails the check in Flagger ("no values
found"), so a silent canary never passes.
"""

from __future__ import annotations

from dataclasses import dataclass

# Pods of the target Deployment only (Flagger's own built-in templates use this pattern): `<target>-primary-...`
# has one segment too many to match.
CANARY_PODS = '{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)'
PRIMARY_PODS = '{{ target }}-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)'
# A flip ratio over a handful of texts is noise: fewer compared texts than this in the window is no evidence.
MIN_COMPARED_TEXTS = 50


@dataclass(frozen=True)
class Gate:
    """One check: a Flagger MetricTemplate query and the largest value that passes."""

    name: str
    query: str
    max_value: float
    description: str

    def render(self, namespace: str, target: str, interval: str) -> str:
        """The query as Flagger sends it to Prometheus for one Canary (what promtool evaluates)."""
        return (self.query.replace("{{ namespace }}", namespace).replace("{{ target }}", target)
                .replace("{{ interval }}", interval))


_CANARY = 'namespace="{{ namespace }}", pod=~"' + CANARY_PODS + '"'
_PRIMARY = 'namespace="{{ namespace }}", pod=~"' + PRIMARY_PODS + '"'
_COMPARED = "mlapi_shadow_texts_total{" + _PRIMARY + ', outcome=~"agree|flip"}[{{ interval }}]'

SHADOW_FLIP_RATIO = Gate(
    name="shadow-flip-ratio",
    query=(
        # No flip series yet (a candidate that always agreed) is no flip, not no data.
        "(sum(rate(mlapi_shadow_texts_total{" + _PRIMARY + ', outcome="flip"}[{{ interval }}])) or on () vector(0))\n'
        "/ sum(rate(" + _COMPARED + "))\n"
        f"and on () sum(increase({_COMPARED})) >= {MIN_COMPARED_TEXTS}"
    ),
    max_value=0.05,
    description="share of mirrored texts on which the canary's top label differs from the live model's",
)

ERROR_RATIO = Gate(
    name="error-ratio",
    query=(
        "sum(rate(mlapi_requests_total{" + _CANARY + ', status=~"5.."}[{{ interval }}]))\n'
        "/ sum(rate(mlapi_requests_total{" + _CANARY + "}[{{ interval }}]))"
    ),
    max_value=0.01,
    description="share of the canary's answers that are 5xx",
)

LATENCY_P99 = Gate(
    name="latency-p99",
    query=(
        "histogram_quantile(0.99, sum by (le) (rate(mlapi_request_seconds_bucket{"
        + _CANARY + ', route=~".*/(predict|query)"}[{{ interval }}])))'
    ),
    max_value=1.0,
    description="p99 seconds of the canary's /predict and /query (the SLO of MlapiLatencyP99OverSLO)",
)

GATES = (SHADOW_FLIP_RATIO, ERROR_RATIO, LATENCY_P99)
