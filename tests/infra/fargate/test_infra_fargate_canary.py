"""A candidate on the `fargate` stack: ECS deploys the candidate's image and rolls it back on the canary's gates.

The gates are the EKS canary's (infra/eks/canary_gates.py), restated as CloudWatch alarms on the service's ALB
target group; the service's `alarms` block names them with rollback on. A service without a candidate is declared
exactly as before.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from infra_mocks import REPOSITORY_URL, plain
from infra_program import REPO, ProgramRun, operated_config, run_program

from infra.eks.canary_gates import ERROR_RATIO, LATENCY_P99
from infra.fargate.ecs_service import CANARY_RUNBOOK, ROLLOUT_PERIODS

CANDIDATE = {"modelId": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
             "modelRevision": "0123456789abcdef0123456789abcdef01234567"}


@pytest.fixture(scope="module")
def with_candidate() -> ProgramRun:
    services = json.loads(operated_config("fargate")["mlapi:services"])
    assert services[0]["name"] == "sentiment"
    services[0]["candidate"] = CANDIDATE
    return run_program("fargate", {"mlapi:services": json.dumps(services)})


def _by_name(run: ProgramRun, typ: str) -> dict[str, dict[str, Any]]:
    return {r.name: plain(r.inputs) for r in run.of_type(typ)}


def test_the_candidate_image_is_deployed(with_candidate: ProgramRun, fargate: ProgramRun) -> None:
    def image(run: ProgramRun, family: str) -> str:
        tasks = {t["family"]: t for t in _by_name(run, "aws:ecs/taskDefinition:TaskDefinition").values()}
        return json.loads(tasks[family]["containerDefinitions"])[0]["image"]

    assert image(with_candidate, "mlapi-fargate-sentiment").startswith(REPOSITORY_URL + ":sentiment-candidate-")
    assert not image(fargate, "mlapi-fargate-sentiment").startswith(REPOSITORY_URL + ":sentiment-candidate-")


def test_the_deployment_rolls_back_on_the_gate_alarms(with_candidate: ProgramRun) -> None:
    services = _by_name(with_candidate, "aws:ecs/service:Service")
    alarms = services["ecs-sentiment-service"]["alarms"]
    assert alarms == {"alarmNames": ["mlapi-fargate-sentiment-rollout-5xx", "mlapi-fargate-sentiment-rollout-p99"],
                      "enable": True, "rollback": True}
    # The circuit breaker stays: tasks that never become healthy roll back too.
    assert services["ecs-sentiment-service"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert "alarms" not in services["ecs-semantic-service"]


def test_the_alarms_are_the_canary_gates_on_the_target_group(with_candidate: ProgramRun) -> None:
    alarms = {a["name"]: a for a in _by_name(with_candidate, "aws:cloudwatch/metricAlarm:MetricAlarm").values()}
    errors = alarms["mlapi-fargate-sentiment-rollout-5xx"]
    assert errors["threshold"] == ERROR_RATIO.max_value
    assert errors["comparisonOperator"] == "GreaterThanThreshold"
    assert errors["evaluationPeriods"] == errors["datapointsToAlarm"] == ROLLOUT_PERIODS
    queries = {q["id"]: q for q in errors["metricQueries"]}
    assert queries["ratio"]["expression"] == "IF(requests > 0, errors / requests, 0)"
    assert queries["ratio"]["returnData"] is True
    assert queries["errors"]["metric"]["metricName"] == "HTTPCode_Target_5XX_Count"
    assert queries["requests"]["metric"]["metricName"] == "RequestCount"
    assert set(queries["errors"]["metric"]["dimensions"]) == {"LoadBalancer", "TargetGroup"}
    latency = alarms["mlapi-fargate-sentiment-rollout-p99"]
    assert (latency["metricName"], latency["extendedStatistic"]) == ("TargetResponseTime", "p99")
    assert latency["threshold"] == LATENCY_P99.max_value
    assert latency["evaluationPeriods"] == ROLLOUT_PERIODS
    assert not any(name.startswith("mlapi-fargate-semantic-rollout") for name in alarms)


def test_a_service_without_a_candidate_is_declared_the_same(with_candidate: ProgramRun,
                                                            fargate: ProgramRun) -> None:
    def semantic(run: ProgramRun) -> dict[str, Any]:
        return {r.urn: plain(r.inputs) for r in run.resources if "semantic" in r.name and r.typ.startswith("aws:")}

    assert semantic(with_candidate) == semantic(fargate)


def test_the_alarms_point_at_the_canary_runbook(with_candidate: ProgramRun) -> None:
    page, anchor = CANARY_RUNBOOK.split("#")
    headings = re.findall(r"^## (.+)$", (REPO / page).read_text(), re.M)
    slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    assert anchor in slugs
    alarms = [a for a in _by_name(with_candidate, "aws:cloudwatch/metricAlarm:MetricAlarm").values()
              if "rollout" in a["name"]]
    assert len(alarms) == 2 and all(CANARY_RUNBOOK in a["alarmDescription"] for a in alarms)
