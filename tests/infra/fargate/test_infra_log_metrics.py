"""Per-key counts on CloudWatch (Fargate): the lines the service really writes, the metric filters that read them,
and the dashboard math that prices each key from the task price of infra/cost.py.

CloudWatch cannot run here, so the filter pattern is checked with a small evaluator of the JSON pattern syntax the
CloudWatch Logs guide defines ("Filter and pattern syntax": `{ SELECTOR = STRING }`, `= *`, numeric `>`, `&&`). The
evaluator refuses any pattern it does not fully parse, so it cannot agree with a pattern it did not understand.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from infra_mocks import plain
from infra_program import ProgramRun, run_program
from mlapi.metrics import Metrics
from mlapi.metrics_export import CounterLog
from mlapi.settings import Settings

from infra import cost
from infra.config import ConfigError, build_config
from infra.fargate import log_metrics
from infra.fargate.log_metrics import LOG_METRICS, LogMetric, filter_pattern, metrics_log_env

_TERM = re.compile(r'\s*\$\.([A-Za-z0-9_-]+)\s*(=|!=|>|<|>=|<=)\s*("[^"]*"|\*|[-+]?\d+(?:\.\d+)?)\s*')


def _parse(pattern: str) -> list[tuple[str, str, str]]:
    """The terms of a `{ term && term ... }` JSON filter pattern; anything else raises."""
    match = re.fullmatch(r"\{(.*)\}", pattern.strip())
    assert match, f"not a JSON filter pattern: {pattern}"
    terms = []
    for part in match.group(1).split("&&"):
        term = _TERM.fullmatch(part)
        assert term, f"term not understood: {part!r}"
        terms.append((term.group(1), term.group(2), term.group(3)))
    return terms


def _selects(pattern: str, event: str) -> bool:
    """Whether a CloudWatch JSON filter pattern (this subset) selects a log event."""
    terms = _parse(pattern)
    try:
        doc = json.loads(event)
    except ValueError:
        return False  # a JSON pattern never selects a non-JSON event
    if not isinstance(doc, dict):
        return False
    for field, op, operand in terms:
        if field not in doc or isinstance(doc[field], (dict, list)) or doc[field] is None:
            return False  # the selector must point to a value node
        value = doc[field]
        if operand == "*":
            ok = op == "="
        elif operand.startswith('"'):
            ok = isinstance(value, str) and (value == operand[1:-1]) == (op == "=")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            ok = {"=": value == float(operand), "!=": value != float(operand), ">": value > float(operand),
                  "<": value < float(operand), ">=": value >= float(operand), "<=": value <= float(operand)}[op]
        if not ok:
            return False
    return True


def _service_lines() -> list[str]:
    """Lines the service writes after real traffic: a key from the keys file, and texts from no key."""
    metrics = Metrics()
    metrics.prime("")
    metrics.prime_keys(["web"])
    metrics.count_key_texts("web", [False, False, True])
    metrics.count_key_texts(None, [True])
    metrics.texts.labels(route="predict").inc(4)
    return CounterLog(metrics.registry, [m.counter for m in LOG_METRICS]).lines()


def test_filter_pattern_selects_the_service_lines_and_their_dimensions() -> None:
    (metric,) = [m for m in LOG_METRICS if m.counter == "mlapi_key_texts_total"]
    pattern = filter_pattern(metric)
    assert pattern == '{ $.metric = "mlapi_key_texts_total" && $.value > 0 && $.key = * && $.source = * }'
    lines = _service_lines()
    assert lines and all(_selects(pattern, line) for line in lines)
    # What the filter publishes: $.value under the dimensions key and source.
    published = {(json.loads(line)["key"], json.loads(line)["source"]): json.loads(line)["value"] for line in lines}
    assert published == {("web", "computed"): 2, ("web", "cached"): 1, ("other", "cached"): 1}


@pytest.mark.parametrize("event", [
    'INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)',
    '{"metric":"mlapi_texts_total","route":"predict","value":4}',
    '{"metric":"mlapi_key_texts_total","key":"web","source":"computed","value":0}',
    '{"metric":"mlapi_key_texts_total","source":"computed","value":3}',
    '{"metric":"mlapi_key_texts_total","key":"web","source":"computed","value":"3"}',
    '["mlapi_key_texts_total"]',
])
def test_filter_pattern_leaves_other_events_alone(event: str) -> None:
    assert not _selects(filter_pattern(LOG_METRICS[0]), event)


def test_evaluator_refuses_what_it_does_not_parse() -> None:
    with pytest.raises(AssertionError):
        _selects('{ $.metric = "x" || $.value > 0 }', '{"metric": "x", "value": 1}')
    with pytest.raises(AssertionError):
        _selects("ERROR", "ERROR")


def test_every_log_metric_is_a_counter_the_service_exports_and_the_task_settings_are_valid() -> None:
    env = log_metrics.metrics_log_env()
    settings = Settings(**{k.removeprefix("MLAPI_").lower(): v for k, v in env.items()})
    assert settings.metrics_log_interval_seconds == log_metrics.LOG_INTERVAL_SECONDS
    assert settings.metrics_log_counters == [m.counter for m in LOG_METRICS]
    CounterLog(Metrics().registry, settings.metrics_log_counters)  # raises for a counter the service lacks


@pytest.mark.parametrize("dimensions", [(), ("a", "b", "c", "d"), ("key", "value")])
def test_log_metric_refuses_what_a_filter_cannot_publish(dimensions: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        LogMetric("mlapi_key_texts_total", dimensions)


def test_fargate_stack_declares_one_filter_per_service_on_its_log_group(fargate: ProgramRun) -> None:
    filters = {r.name: plain(r.inputs) for r in fargate.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter")}
    groups = {g["name"] for g in (plain(r.inputs) for r in fargate.of_type("aws:cloudwatch/logGroup:LogGroup"))}
    assert set(filters) == {f"log-metrics-{service}-{metric.counter}"
                            for service in ("sentiment", "semantic") for metric in LOG_METRICS}
    assert {m.counter for m in LOG_METRICS} >= {"mlapi_key_texts_total", "mlapi_shadow_texts_total"}
    for service in ("sentiment", "semantic"):
        declared = filters[f"log-metrics-{service}-mlapi_key_texts_total"]
        assert declared["logGroupName"] == f"/ecs/mlapi-fargate/{service}" and declared["logGroupName"] in groups
        assert declared["pattern"] == filter_pattern(LOG_METRICS[0])
        transformation = declared["metricTransformation"]
        assert transformation == {"name": "mlapi_key_texts_total", "namespace": f"mlapi-fargate/{service}",
                                  "value": "$.value", "dimensions": {"key": "$.key", "source": "$.source"},
                                  "unit": "Count"}  # no defaultValue: CloudWatch refuses one beside dimensions
        shadow = filters[f"log-metrics-{service}-mlapi_shadow_texts_total"]["metricTransformation"]
        assert shadow["dimensions"] == {"candidate": "$.candidate", "outcome": "$.outcome"}


def test_fargate_tasks_write_the_lines_the_filters_read(fargate: ProgramRun) -> None:
    for task in fargate.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        (container,) = json.loads(plain(task.inputs)["containerDefinitions"])
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert env["MLAPI_METRICS_LOG_INTERVAL_SECONDS"] == "60"
        assert env["MLAPI_METRICS_LOG_COUNTERS"].split(",") == [m.counter for m in LOG_METRICS]
        assert container["logConfiguration"]["logDriver"] == "awslogs"


def _widget(run: ProgramRun, title: str) -> dict[str, Any]:
    (dashboard,) = run.of_type("aws:cloudwatch/dashboard:Dashboard")
    (widget,) = [w for w in json.loads(dashboard.inputs["dashboardBody"])["widgets"]
                 if w["properties"]["title"] == title]
    return dict(widget["properties"])


def _evaluate(rows: list[list[Any]], data: dict[tuple[str, ...], float], search: dict[str, list[float]],
              period: int) -> dict[str, float]:
    """Each visible expression's value for one period: metrics from `data` (by their dimensions), each SEARCH's
    series from `search` (by its query), arithmetic as metric math does it on single values."""
    values: dict[str, Any] = {}
    for row in rows:
        if isinstance(row[0], dict):
            continue
        options = row[-1]
        values[options["id"]] = data[tuple(str(part) for part in row[:-1])]
    results: dict[str, float] = {}
    for row in rows:
        if not isinstance(row[0], dict):
            continue
        expression: str = row[0]["expression"]
        if expression.startswith("SEARCH("):
            values[row[0]["id"]] = search[expression]
            continue
        python = re.sub(r"PERIOD\(\w+\)", str(period), expression)
        python = re.sub(r"SUM\((\w+)\)", r"sum(\1)", python)
        try:
            value = eval(python, {"__builtins__": {}, "sum": sum}, values)  # noqa: S307 (our own expression)
        except ZeroDivisionError:
            continue  # metric math drops a point that divides by zero
        values[row[0]["id"]] = value
        if row[0].get("visible", True):
            results[row[0]["label"]] = value
    return results


def test_dashboard_prices_each_named_key_per_1000_predictions() -> None:
    run = run_program("fargate", {"mlapi:costDashboardKeys": '["alice", "bob"]'})
    widget = _widget(run, "Cost per 1,000 predictions per key (USD)")
    assert widget["period"] == 300
    # Five minutes of sentiment (1 vCPU / 2 GB, $0.04937 an hour by infra/cost.py) on 2 tasks: 2 x 0.04937 x
    # 300 / 3600 = $0.0082283. Texts: alice 60 computed + 120 cached, bob 180 computed, other 60 cached: 240
    # computed. alice caused 1/4 of the computed texts, $0.0020571, over her 180 = $0.0114282 per 1,000; bob 3/4,
    # $0.0061713 over 180 = $0.0342847; other computed nothing: $0. The same split as the Prometheus rule.
    price = cost.fargate_task_hour(1024, 2048, cost.PRICES["us-east-1"])
    assert price == pytest.approx(0.04937)
    ns = "mlapi-fargate/sentiment"
    texts = {("alice", "computed"): 60, ("alice", "cached"): 120, ("bob", "computed"): 180, ("bob", "cached"): 0,
             ("other", "computed"): 0, ("other", "cached"): 60}
    data: dict[tuple[str, ...], float] = {
        (ns, "mlapi_key_texts_total", "key", k, "source", s): v for (k, s), v in texts.items()}
    cluster = "mlapi-fargate"
    for service in ("sentiment", "semantic"):
        data[("ECS/ContainerInsights", "RunningTaskCount", "ClusterName", cluster, "ServiceName",
              service)] = 2  # the mocks name each ECS service after its model service
    for k, s in list(texts):
        data[("mlapi-fargate/semantic", "mlapi_key_texts_total", "key", k, "source", s)] = 0
    search = {row[0]["expression"]: ([60, 180] if "sentiment" in row[0]["expression"] else [0])
              for row in widget["metrics"] if isinstance(row[0], dict) and row[0]["expression"].startswith("SEARCH")}
    results = _evaluate(widget["metrics"], data, search, 300)
    service_cost = 2 * 0.04937 * 300 / 3600
    assert results["sentiment alice"] == pytest.approx(service_cost * 60 / 240 / 180 * 1000)
    assert results["sentiment alice"] == pytest.approx(0.0114282, abs=1e-7)
    assert results["sentiment bob"] == pytest.approx(0.0342847, abs=1e-7)
    assert results["sentiment other"] == 0
    assert not any(label.startswith("semantic") for label in results)  # no texts: no point, not a made-up $0
    # Every key of the search is the filter's metric in the filter's namespace, computed texts only.
    for expression in search:
        assert expression.startswith('SEARCH(\'{"mlapi-fargate/') and 'MetricName="mlapi_key_texts_total"' in expression
        assert 'source="computed"' in expression


def test_dashboard_charts_every_key_without_configuration(fargate: ProgramRun) -> None:
    per_key = _widget(fargate, "Cost per key (USD)")
    expressions = [row[0] for row in per_key["metrics"] if isinstance(row[0], dict)]
    visible = [e for e in expressions if e.get("visible", True)]
    assert [e["expression"] for e in visible] == ["computed0 * cost0 / SUM(computed0)",
                                                 "computed1 * cost1 / SUM(computed1)"]
    costs = [e["expression"] for e in expressions if e["id"].startswith("cost")]
    assert costs == ["tasks0 * 0.04937 * PERIOD(tasks0) / 3600", "tasks1 * 0.024685 * PERIOD(tasks1) / 3600"]
    predictions = _widget(fargate, "Predictions per key (texts answered)")
    assert [row[0]["label"] for row in predictions["metrics"]] == ["sentiment", "semantic"]
    unit = _widget(fargate, "Cost per 1,000 predictions per key (USD)")
    assert [row[0]["label"] for row in unit["metrics"] if isinstance(row[0], dict) and "label" in row[0]] == [
        "sentiment other", "semantic other"]


def _search_schema(expression: str) -> tuple[set[str], str]:
    """The namespace and dimension names of a SEARCH's schema (their order does not matter), and its MetricName."""
    match = re.search(r"SEARCH\('\{([^}]*)\} MetricName=\"([^\"]+)\"", expression)
    assert match, expression
    return {part.strip('"') for part in match.group(1).split(",")}, match.group(2)


def test_dashboard_shows_the_shadow_counts_the_filters_make(fargate: ProgramRun) -> None:
    """The shadow widgets search the namespace, metric and dimensions the filters write, so they cannot go blank."""
    filters = {r.name: plain(r.inputs) for r in fargate.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter")}
    shadow = _widget(fargate, "Shadow: mirrored texts by candidate and outcome")
    ratio = _widget(fargate, "Shadow flip ratio (flip / compared)")
    for i, service in enumerate(("sentiment", "semantic")):
        written = filters[f"log-metrics-{service}-mlapi_shadow_texts_total"]["metricTransformation"]
        expected = {written["namespace"], *written["dimensions"]}
        schema, metric = _search_schema(shadow["metrics"][i][0]["expression"])
        assert (schema, metric) == (expected, written["name"])
        rows = {row[0]["id"]: row[0] for row in ratio["metrics"] if row[0]["id"].endswith(str(i))}
        for outcome in ("flip", "agree"):
            assert _search_schema(rows[f"{outcome}{i}"]["expression"]) == (expected, written["name"])
            assert f'outcome="{outcome}"' in rows[f"{outcome}{i}"]["expression"]
        assert rows[f"ratio{i}"] == {"id": f"ratio{i}", "label": service,
                                     "expression": f"flip{i} / (flip{i} + agree{i})"}


@pytest.mark.parametrize(("keys", "where"), [
    (["web", "bad name"], "mlapi:costDashboardKeys[1]"),
    ([f"k{i}" for i in range(51)], "mlapi:costDashboardKeys"),
    ("web", "mlapi:costDashboardKeys"),
])
def test_bad_cost_dashboard_keys_name_their_key(dev_raw: dict[str, Any], keys: Any, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({**dev_raw, "costDashboardKeys": keys}, project="mlapi", stack="dev", region="us-east-1")
    assert caught.value.key == where


def test_every_counter_the_tasks_ask_for_is_one_the_server_exports() -> None:
    """A counter the server does not export stops `mlapi serve`: the task's list must be the server's own names."""
    from mlapi.metrics import Metrics
    from mlapi.metrics_export import CounterLog

    CounterLog(Metrics().registry, metrics_log_env()["MLAPI_METRICS_LOG_COUNTERS"].split(","))
