"""Where the monitoring files are, and every PromQL expression they hold, as the tests read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
ALERTS = MONITORING / "prometheus" / "alerts.yaml"
ALERTS_TEST = MONITORING / "prometheus" / "alerts_test.yaml"
DASHBOARD_JSON = MONITORING / "grafana" / "mlapi.json"
OPERATIONS = MONITORING.parent / "docs" / "operations.md"

# Dashboard variables as a query sends them: every namespace, and a rate window spanning several scrapes.
SUBSTITUTIONS = {"$namespace": ".*", "$__rate_interval": "1m"}

# Series only a Kubernetes cluster publishes: kube-state-metrics and the kubelet's cAdvisor. A local scrape of
# mlapi cannot have them, so expressions over them are proven by promtool unit tests on input series named and
# labelled as those exporters publish them (monitoring/prometheus/alerts_test.yaml).
KUBERNETES_ONLY = {
    "kube_deployment_status_replicas_unavailable",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "container_cpu_usage_seconds_total",
    "kube_pod_container_resource_requests",
}
# Recording rules (alerts.yaml, group mlapi.cost) computed from those series: Kubernetes-only as well.
RECORDED_FROM_KUBERNETES = {
    "mlapi:service_cost_usd_per_hour",
    "mlapi:service_cost_usd_per_1000_predictions",
    "mlapi:key_cost_usd_per_1000_predictions",
}

# An alert's expression is `<signal> <comparison> <threshold>`.
_ALERT_FORM = re.compile(r"^(?P<signal>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>[0-9.]+)$", re.S)


def substitute(expr: str) -> str:
    """A dashboard expression with its template variables replaced, as Grafana sends it."""
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def dashboard_expressions() -> list[str]:
    """Every target expression of the committed dashboard JSON, variables substituted."""
    import json

    board = json.loads(DASHBOARD_JSON.read_text())
    return [substitute(t["expr"]) for panel in board["panels"] for t in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule in alerts.yaml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    """Every recording rule in alerts.yaml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "record" in rule]


def alert_as_bool(expr: str) -> str:
    """The alert expression with its comparison as `bool`: a 0/1 sample for every series the signal has."""
    match = _ALERT_FORM.match(" ".join(expr.split()))
    assert match, f"alert expression is not `<signal> <op> <threshold>`: {expr}"
    return f"({match['signal']}) {match['op']} bool {match['threshold']}"


def is_kubernetes_only(expr: str) -> bool:
    """True when the expression reads a series only a cluster publishes."""
    return any(re.search(rf"\b{name}\b", expr) for name in KUBERNETES_ONLY | RECORDED_FROM_KUBERNETES)


def promtool_tests() -> list[dict[str, Any]]:
    """The test groups of alerts_test.yaml."""
    return list(yaml.safe_load(ALERTS_TEST.read_text())["tests"])
