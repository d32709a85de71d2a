"""The dashboard JSON is the generator's output; the rules load, pass their promtool tests and have runbooks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import dashboard
import pytest
from monitoring_files import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD_JSON,
    KUBERNETES_ONLY,
    OPERATIONS,
    alert_rules,
    dashboard_expressions,
    is_kubernetes_only,
    promtool_tests,
    recording_rules,
    substitute,
)


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed (.ci/run installs it: apt-get install prometheus)")
    return found


def test_committed_dashboard_equals_generator_output() -> None:
    assert DASHBOARD_JSON.read_text() == dashboard.render(), "stale dashboard JSON: run `make dashboard`"


def test_dashboard_queries_go_through_the_datasource_variable() -> None:
    board = json.loads(DASHBOARD_JSON.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_dashboard_covers_every_required_signal() -> None:
    text = " ".join(dashboard.expressions())
    for metric in (
        "mlapi_requests_total", "mlapi_request_seconds_bucket", "mlapi_cache_hits_total", "mlapi_texts_total",
        "mlapi_batch_texts_bucket", "mlapi_queue_wait_seconds_bucket", "mlapi_queue_texts", "mlapi_rejected_total",
        "mlapi_inference_seconds_bucket", "mlapi_cache_errors_total", "mlapi_cache_circuit_open",
        "kube_horizontalpodautoscaler_status_current_replicas", "kube_horizontalpodautoscaler_status_desired_replicas",
        "container_cpu_usage_seconds_total", "mlapi_shadow_texts_total", "mlapi_shadow_dropped_texts_total",
        "mlapi:shadow_flip_ratio:rate5m", "mlapi_shadow_score_difference_bucket", "mlapi_shadow_errors_total",
        "mlapi_model_info",
    ):
        assert metric in text, metric
    assert all(f"histogram_quantile({q}, " in text for q in ("0.5", "0.95", "0.99"))


def test_substitute_replaces_every_variable() -> None:
    assert substitute('rate(x{namespace=~"$namespace"}[$__rate_interval])') == 'rate(x{namespace=~".*"}[1m])'


def test_promtool_check_rules_passes() -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules()) + len(recording_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run([_promtool(), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True,
                          timeout=120, cwd=ALERTS_TEST.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in promtool_tests():
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {"MlapiHighErrorRate", "MlapiLatencyP99OverSLO", "MlapiQueueSaturated", "MlapiCacheDegraded",
                     "MlapiPodsNotReady", "MlapiHpaAtMax"}
    assert fired == names
    assert quiet == names


def test_every_kubernetes_only_dashboard_query_has_a_promtool_test() -> None:
    tested = {" ".join(t["expr"].split()) for case in promtool_tests() for t in case.get("promql_expr_test", [])}
    kubernetes = {" ".join(e.split()) for e in dashboard_expressions() if is_kubernetes_only(e)}
    assert len(kubernetes) == 6
    assert kubernetes <= tested, kubernetes - tested


def test_kubernetes_only_series_are_promtool_inputs_under_their_exporters_names() -> None:
    inputs = {s["series"].split("{")[0] for case in promtool_tests() for s in case["input_series"]}
    assert inputs >= KUBERNETES_ONLY
    assert not any(name.startswith("mlapi_") for name in KUBERNETES_ONLY)


def test_every_alert_has_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines() if line.startswith("#")
    }
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/operations.md", url
        assert anchor == rule["alert"].lower() and anchor in anchors, url
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in {"warning", "critical"}
