"""The monthly cost estimate: its arithmetic against sums worked by hand, and the stack output a preview shows."""

from __future__ import annotations

import json
from typing import Any

import pytest
from infra_mocks import plain
from infra_program import REPO, ProgramRun, run_program

from infra import cost
from infra.config import ConfigError, build_config
from infra.eks.platform import HELM_RELEASES


def _estimate(raw: dict[str, Any], region: str = "us-east-1", **overrides: Any) -> cost.Estimate:
    cfg = build_config({**raw, **overrides}, project="mlapi", stack="dev", region=region)
    return cost.estimate(cfg, HELM_RELEASES)


def _items(estimate: cost.Estimate) -> dict[str, tuple[float, float]]:
    return {i.name: (round(i.minimum, 4), round(i.maximum, 4)) for i in estimate.items}


def test_eks_defaults_cost_what_the_list_prices_add_up_to(dev_raw: dict[str, Any]) -> None:
    # By hand, 730 h: cluster 0.10/h; 2 to 4 nodes of 4 vCPU (capacity.py at min and max replicas), the cheapest
    # listed family c6i at $0.17 per c6i.xlarge, the dearest m7i at $0.2016 per m7i.xlarge; fee 12% of that;
    # NLB 0.0225/h; one NAT 0.045/h; two cache.t4g.small at 0.032/h.
    nodes_min, nodes_max = 2 * 0.17 * 730, 4 * 0.2016 * 730
    expected = {
        "eks-control-plane": (73.0, 73.0),
        "nodes": (round(nodes_min, 4), round(nodes_max, 4)),
        "eks-auto-mode-fee": (round(0.12 * nodes_min, 4), round(0.12 * nodes_max, 4)),
        "load-balancer": (16.425, 16.425),
        "nat-gateways": (32.85, 32.85),
        "redis": (46.72, 46.72),
    }
    estimate = _estimate(dev_raw)
    assert _items(estimate) == expected
    assert estimate.warnings == ()
    assert estimate.as_output()["minimum"] == 446.98  # 73 + 248.2 + 29.784 + 16.425 + 32.85 + 46.72
    assert estimate.as_output()["maximum"] == 828.31  # 73 + 588.672 + 70.64064 + 16.425 + 32.85 + 46.72


def test_fargate_defaults_cost_their_tasks_at_fargate_sizes(dev_raw: dict[str, Any]) -> None:
    # sentiment: 1 vCPU / 2 GB = 0.04048 + 2 x 0.004445 = 0.04937/h, 2 to 6 tasks;
    # semantic: 0.5 vCPU / 1 GB = 0.02024 + 0.004445 = 0.024685/h, 2 to 4 tasks; ALB 0.0225/h; NAT; Redis.
    estimate = _estimate(dev_raw, platform="fargate", apiPublicAccessCidrs=[])
    assert _items(estimate) == {
        "tasks-sentiment": (72.0802, 216.2406),
        "tasks-semantic": (36.0401, 72.0802),
        "load-balancer": (16.425, 16.425),
        "nat-gateways": (32.85, 32.85),
        "redis": (46.72, 46.72),
    }
    assert (estimate.as_output()["minimum"], estimate.as_output()["maximum"]) == (204.12, 384.32)


def test_nat_per_az_and_redis_shape_follow_their_keys(dev_raw: dict[str, Any]) -> None:
    items = _items(_estimate(dev_raw, natGateways="one-per-az", availabilityZones=3, cacheNodes=3,
                             cacheNodeType="cache.r7g.large"))
    assert items["nat-gateways"] == (98.55, 98.55)  # 3 x 0.045 x 730
    assert items["redis"] == (479.61, 479.61)  # 3 x 0.219 x 730


def test_uncovered_region_warns_and_gives_no_figure(dev_raw: dict[str, Any]) -> None:
    estimate = _estimate(dev_raw, region="ap-south-2")
    output = estimate.as_output()
    assert (output["minimum"], output["maximum"], output["lineItems"]) == (None, None, [])
    (warning,) = output["warnings"]
    assert "ap-south-2" in warning and "us-east-1" in warning


@pytest.mark.parametrize("stack", ["dev", "fargate"])
def test_the_program_in_an_uncovered_region_warns_and_exports_no_figure(stack: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi

    warned: list[str] = []
    monkeypatch.setattr(pulumi, "warn", lambda message, *args, **kwargs: warned.append(str(message)))
    run = run_program(stack, {"aws:region": "ap-south-2"})
    exported = run.outputs["estimatedMonthlyCostUsd"]
    assert (exported["region"], exported["minimum"], exported["maximum"]) == ("ap-south-2", None, None)
    assert [w for w in warned if w.startswith("estimatedMonthlyCostUsd:")] == [
        f"estimatedMonthlyCostUsd: {exported['warnings'][0]}"]
    assert "ap-south-2" in warned[0] and "us-east-1" in warned[0]


def test_unpriced_cache_type_is_left_out_with_a_warning(dev_raw: dict[str, Any]) -> None:
    estimate = _estimate(dev_raw, cacheNodeType="cache.x2gd.large")
    assert "redis" not in _items(estimate)
    assert any("cache.x2gd.large" in w and "mlapi:cacheNodeType" in w for w in estimate.warnings)


def test_unpriced_family_is_named_and_spot_is_flagged(dev_raw: dict[str, Any]) -> None:
    estimate = _estimate(dev_raw, nodeInstanceFamilies=["c8i", "c7i"], nodeCapacityType="spot")
    nodes = _items(estimate)["nodes"]
    assert nodes == (round(2 * 4 * 0.044625 * 730, 4), round(4 * 4 * 0.044625 * 730, 4))
    assert any("c8i" in w for w in estimate.warnings)
    assert any("spot" in w for w in estimate.warnings)


@pytest.mark.parametrize("stack", ["dev", "fargate"])
def test_stack_exports_the_estimate(stack: str, request: pytest.FixtureRequest) -> None:
    # A plain value, not an Output: `pulumi preview` prints it before any resource exists.
    run: ProgramRun = request.getfixturevalue(stack)
    exported = run.outputs["estimatedMonthlyCostUsd"]
    assert exported["region"] == "us-east-1"
    assert 0 < exported["minimum"] < exported["maximum"]
    assert exported["pricesAsOf"] == cost.PRICES_AS_OF
    names = {item["name"] for item in exported["lineItems"]}
    assert {"nat-gateways", "redis", "load-balancer"} <= names
    assert ("eks-auto-mode-fee" in names) == stack.startswith("dev")


def test_no_budget_unless_configured(dev: ProgramRun) -> None:
    assert dev.of_type("aws:budgets/budget:Budget") == []
    assert "budgetName" not in dev.outputs


@pytest.mark.parametrize("stack", ["dev", "fargate"])
def test_budget_alerts_at_each_threshold_and_on_the_forecast(stack: str) -> None:
    run = run_program(stack, {"mlapi:monthlyBudgetUsd": "450", "mlapi:budgetAlertThresholds": "[80, 50]",
                              "mlapi:budgetAlertEmails": '["ops@example.com"]',
                              "mlapi:budgetAlertTopicArn": "arn:aws:sns:us-east-1:123456789012:billing"})
    (budget,) = run.of_type("aws:budgets/budget:Budget")
    inputs = plain(budget.inputs)
    assert (inputs["budgetType"], inputs["timeUnit"], inputs["limitAmount"], inputs["limitUnit"]) == (
        "COST", "MONTHLY", "450", "USD")
    assert inputs["name"] == f"mlapi-{stack}"
    assert inputs["costFilters"] == [{"name": "TagKeyValue", "values": [f"user:stack${stack}"]}]
    assert [(n["notificationType"], n["threshold"]) for n in inputs["notifications"]] == [
        ("ACTUAL", 50), ("ACTUAL", 80), ("FORECASTED", 100)]
    for notification in inputs["notifications"]:
        assert notification["subscriberEmailAddresses"] == ["ops@example.com"]
        assert notification["subscriberSnsTopicArns"] == ["arn:aws:sns:us-east-1:123456789012:billing"]
        assert (notification["comparisonOperator"], notification["thresholdType"]) == ("GREATER_THAN", "PERCENTAGE")
    assert budget.inputs["tags"]["stack"] == stack
    assert run.outputs["budgetName"] == f"mlapi-{stack}"


@pytest.mark.parametrize(("overrides", "key"), [
    ({"monthlyBudgetUsd": 100}, "mlapi:monthlyBudgetUsd"),
    ({"monthlyBudgetUsd": 100, "budgetAlertEmails": ["not-an-address"]}, "mlapi:budgetAlertEmails[0]"),
    ({"monthlyBudgetUsd": 100, "budgetAlertEmails": ["a@b.co"], "budgetAlertThresholds": [10, 20, 30, 40, 50]},
     "mlapi:budgetAlertThresholds"),
    ({"budgetAlertThresholds": [0]}, "mlapi:budgetAlertThresholds[0]"),
    ({"budgetAlertTopicArn": "billing"}, "mlapi:budgetAlertTopicArn"),
    ({"monthlyBudgetUsd": -5}, "mlapi:monthlyBudgetUsd"),
])
def test_bad_budget_config_names_its_key(dev_raw: dict[str, Any], overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({**dev_raw, **overrides}, project="mlapi", stack="dev", region="us-east-1")
    assert caught.value.key == key


def test_deploy_doc_totals_are_the_estimates_of_the_defaults(dev_raw: dict[str, Any]) -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    (row,) = [line for line in doc.splitlines() if line.startswith("| **total**")]
    totals = [cell.strip(" *") for cell in row.split("|")[2:-1]]
    dev = _estimate(dev_raw).as_output()
    fargate = _estimate(dev_raw, platform="fargate", apiPublicAccessCidrs=[]).as_output()
    assert totals == [f"{v:.2f}" for v in (dev["minimum"], dev["maximum"], fargate["minimum"], fargate["maximum"])]


def _price_rule(run: ProgramRun) -> str:
    (rules,) = [plain(r.inputs) for r in run.resources if r.inputs.get("kind") == "PrometheusRule"]
    (price,) = [rule for group in rules["spec"]["groups"] for rule in group["rules"]
                if rule.get("record") == "mlapi:vcpu_hour_usd"]
    return str(price["expr"])


def test_cost_rule_prices_a_vcpu_hour_from_the_stack(dev: ProgramRun, dev_raw: dict[str, Any]) -> None:
    # Cheapest listed family c6i at $0.0425 per vCPU-hour, plus the 12% Auto Mode fee.
    assert _price_rule(dev) == "vector(0.0476)"
    cfg = build_config({**dev_raw, "nodeInstanceFamilies": ["m7i"]}, project="mlapi", stack="dev", region="us-west-2")
    assert cost.vcpu_hour_usd(cfg) == pytest.approx(0.0504 * 1.12)
    assert cost.vcpu_hour_usd(build_config(dev_raw, project="mlapi", stack="dev", region="sa-east-1")) is None


def test_cost_rule_price_follows_node_families() -> None:
    run = run_program("dev", {"mlapi:nodeInstanceFamilies": '["m7i"]'})
    assert _price_rule(run) == "vector(0.056448)"


def test_fargate_dashboard_prices_each_service_from_the_table(fargate: ProgramRun) -> None:
    (dashboard,) = fargate.of_type("aws:cloudwatch/dashboard:Dashboard")
    body = json.loads(dashboard.inputs["dashboardBody"])
    (widget,) = [w for w in body["widgets"] if w["properties"]["title"] == "Cost per 1,000 requests (USD)"]
    expressions = [row[0]["expression"] for row in widget["properties"]["metrics"] if len(row) == 1]
    # sentiment 1 vCPU / 2 GB: 0.04048 + 2 x 0.004445; semantic 0.5 vCPU / 1 GB: 0.02024 + 0.004445.
    assert [e.split(" * ")[1] for e in expressions] == ["0.04937", "0.024685"]
