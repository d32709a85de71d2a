"""The canary gates, exactly as the MetricTemplates carry them, evaluated by promtool on synthetic series.

Each gate is rendered the way Flagger renders it for the `sentiment` Canary in namespace `mlapi` with a 2m window,
then evaluated by `promtool test rules` at a time when the series below have run for 10 minutes: a disagreeing,
failing or slow canary gives a value over the gate's maximum, an agreeing, healthy and fast one a value under it,
and a canary nobody compared or nobody called gives no value (nothing, or NaN), which Flagger counts as a
failed check. Series carry the
labels a PodMonitor scrape gives them: `namespace`, `pod` (the primary's pods are `sentiment-primary-...`, the
canary's `sentiment-...`), `job`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.eks.canary_gates import ERROR_RATIO, GATES, LATENCY_P99, MIN_COMPARED_TEXTS, SHADOW_FLIP_RATIO, Gate

PRIMARY = 'namespace="mlapi", job="monitoring/sentiment", pod="sentiment-primary-6d4cf56db6-x7k2p"'
CANARY = 'namespace="mlapi", job="monitoring/sentiment", pod="sentiment-5b8d7c9f4-q9w8e"'
# Another service's primary in the same namespace: never counted for `sentiment`.
OTHER = 'namespace="mlapi", job="monitoring/sentiment-v2", pod="sentiment-v2-primary-7f9c8d-a1b2c"'


def _shadow(agree_per_min: int, flip_per_min: int | None, error_per_min: int = 0) -> list[dict[str, str]]:
    series = [
        {"series": f'mlapi_shadow_texts_total{{{PRIMARY}, candidate="0123456789abcdef", outcome="agree"}}',
         "values": f"0+{agree_per_min}x15"},
        {"series": f'mlapi_shadow_texts_total{{{PRIMARY}, candidate="0123456789abcdef", outcome="error"}}',
         "values": f"0+{error_per_min}x15"},
        # The other service disagrees completely; it must not move sentiment's ratio.
        {"series": f'mlapi_shadow_texts_total{{{OTHER}, candidate="fedcba9876543210", outcome="flip"}}',
         "values": "0+500x15"},
    ]
    if flip_per_min is not None:
        series.append({"series": f'mlapi_shadow_texts_total{{{PRIMARY}, candidate="0123456789abcdef", outcome="flip"}}',
                       "values": f"0+{flip_per_min}x15"})
    return series


def _requests(ok_per_min: int, errors_per_min: int, pods: str = CANARY) -> list[dict[str, str]]:
    return [
        {"series": f'mlapi_requests_total{{{pods}, route="/sentiment/predict", status="200"}}',
         "values": f"0+{ok_per_min}x15"},
        {"series": f'mlapi_requests_total{{{pods}, route="/sentiment/predict", status="503"}}',
         "values": f"0+{errors_per_min}x15"},
    ]


def _latency(per_min_by_bucket: dict[str, int]) -> list[dict[str, str]]:
    """Cumulative histogram buckets of the canary's /predict: requests per minute at or under each bound."""
    return [
        {"series": f'mlapi_request_seconds_bucket{{{CANARY}, route="/sentiment/predict", le="{le}"}}',
         "values": f"0+{count}x15"}
        for le, count in per_min_by_bucket.items()
    ]


def _holds(tool: Any, tmp_path: Path, series: list[dict[str, str]], expr: str, expected: list[dict[str, Any]]) -> bool:
    """Whether promtool, at 10m over `series`, finds exactly `expected` for `expr` (the rule `gate` defined)."""
    test = tmp_path / "test.yaml"
    test.write_text(yaml.safe_dump({
        "rule_files": [str(tmp_path / "rules.yaml")], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series,
                   "promql_expr_test": [{"expr": expr, "eval_time": "10m", "exp_samples": expected}]}],
    }))
    done = subprocess.run([tool("promtool"), "test", "rules", str(test)], capture_output=True, text=True,
                          timeout=60, check=False)
    return done.returncode == 0


class Verdict:
    """What Flagger would conclude from one gate over some series: `passes`, `fails` or `no_value`, and whether
    the value lies in a range (promtool compares sample values exactly, so values are bracketed)."""

    def __init__(self, tool: Any, tmp_path: Path, gate: Gate, series: list[dict[str, str]]) -> None:
        rule = {"record": "gate", "expr": gate.render("mlapi", "sentiment", "2m")}
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "gate", "rules": [rule]}]}))
        self._check = lambda expr, expected: _holds(tool, tmp_path, series, expr, expected)
        self.gate = gate

    @property
    def no_value(self) -> bool:
        """No sample, or NaN (0/0): Flagger's Prometheus provider refuses both as "no values found"
        (pkg/metrics/providers/prometheus.go, `value == nil || math.IsNaN(*value)`)."""
        return self._check("gate", []) or self._check("gate != bool gate", [{"labels": "{}", "value": 1}])

    def between(self, low: float, high: float) -> bool:
        return self._check(f"(gate >= bool {low}) * (gate <= bool {high})", [{"labels": "{}", "value": 1}])

    @property
    def passes(self) -> bool:
        return self._check(f"gate <= bool {self.gate.max_value}", [{"labels": "{}", "value": 1}])

    @property
    def fails(self) -> bool:
        return self._check(f"gate <= bool {self.gate.max_value}", [{"labels": "{}", "value": 0}])


@pytest.fixture
def verdict(tool: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    return lambda gate, series: Verdict(tool, tmp_path, gate, series)


def test_a_disagreeing_candidate_fails_the_flip_gate(verdict) -> None:  # type: ignore[no-untyped-def]
    v = verdict(SHADOW_FLIP_RATIO, _shadow(agree_per_min=80, flip_per_min=20))
    assert v.fails
    assert v.between(0.199, 0.201)


def test_an_agreeing_candidate_passes_the_flip_gate(verdict) -> None:  # type: ignore[no-untyped-def]
    v = verdict(SHADOW_FLIP_RATIO, _shadow(agree_per_min=99, flip_per_min=1, error_per_min=5))
    assert v.passes
    assert v.between(0.0099, 0.0101)  # errors are not comparisons: 1 flip in 100 compared


def test_a_candidate_that_never_flipped_passes_without_a_flip_series(verdict) -> None:  # type: ignore[no-untyped-def]
    v = verdict(SHADOW_FLIP_RATIO, _shadow(agree_per_min=100, flip_per_min=None))
    assert v.passes
    assert v.between(0, 0)


def test_too_few_compared_texts_is_no_evidence(verdict) -> None:  # type: ignore[no-untyped-def]
    # Over the 2m window the gate needs MIN_COMPARED_TEXTS compared; 10 a minute is 20.
    assert MIN_COMPARED_TEXTS > 20
    assert verdict(SHADOW_FLIP_RATIO, _shadow(agree_per_min=10, flip_per_min=0)).no_value
    # Only errors (the canary unreachable): nothing compared, no value, a failed check.
    assert verdict(SHADOW_FLIP_RATIO, _shadow(agree_per_min=0, flip_per_min=0, error_per_min=50)).no_value
    # The same series with enough agreement has a value: the two cases above are the evidence rule, not a typo.
    assert not verdict(SHADOW_FLIP_RATIO, _shadow(agree_per_min=100, flip_per_min=0)).no_value


def test_a_failing_canary_fails_the_5xx_gate_and_a_healthy_one_passes(verdict) -> None:  # type: ignore[no-untyped-def]
    bad = verdict(ERROR_RATIO, _requests(ok_per_min=90, errors_per_min=10))
    assert bad.fails
    assert bad.between(0.099, 0.101)
    # The primary's 5xx are not the canary's.
    good = verdict(ERROR_RATIO, _requests(ok_per_min=1000, errors_per_min=1)
                   + _requests(ok_per_min=0, errors_per_min=900, pods=PRIMARY))
    assert good.passes
    assert good.between(0.0009, 0.0011)


def test_a_slow_canary_fails_the_p99_gate_and_a_fast_one_passes(verdict) -> None:  # type: ignore[no-untyped-def]
    slow = verdict(LATENCY_P99, _latency({"0.1": 50, "0.5": 80, "1.0": 90, "2.5": 100, "+Inf": 100}))
    assert slow.fails
    assert slow.between(1.0, 2.5)
    fast = verdict(LATENCY_P99, _latency({"0.01": 90, "0.025": 99, "0.05": 100, "1.0": 100, "2.5": 100,
                                          "+Inf": 100}))
    assert fast.passes
    assert fast.between(0.025, 0.05)


def test_no_traffic_gives_no_value_for_every_gate(verdict) -> None:  # type: ignore[no-untyped-def]
    quiet = _requests(0, 0) + _latency({"0.1": 0, "+Inf": 0}) + _shadow(0, 0)
    for gate in GATES:
        assert verdict(gate, quiet).no_value, gate.name


def test_queries_use_only_the_variables_flagger_fills_in() -> None:
    # Flagger renders a MetricTemplate's query as a Go template with these variables (Flagger "Metrics Analysis",
    # custom metrics); anything else between braces would fail the template or reach Prometheus unrendered.
    for gate in GATES:
        assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", gate.query)) == {"namespace", "target", "interval"}
        rendered = gate.render("mlapi", "sentiment", "2m")
        assert "{{" not in rendered and "}}" not in rendered


def test_latency_and_error_gates_read_metrics_the_service_exports() -> None:
    from mlapi.metrics import Metrics

    metrics = Metrics()
    metrics.prime("/sentiment")
    exported = {s.name for family in metrics.registry.collect() for s in family.samples}
    for gate in (ERROR_RATIO, LATENCY_P99):
        used = set(re.findall(r"\b(mlapi_\w+)\{", gate.query))
        assert used and used <= exported, (gate.name, used - exported)
