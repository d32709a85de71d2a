"""Grace periods, drains and stop timeouts line up with the service's request timeout and graceful shutdown."""

from __future__ import annotations

import json
from typing import Any

import pytest
from infra_mocks import plain
from infra_program import ProgramRun, run_program

from infra.config import ConfigError, build_config
from infra.timeouts import ECS_MAX_STOP_TIMEOUT, MAX_REQUEST_TIMEOUT_SECONDS, Timeouts


@pytest.mark.parametrize("request_seconds", [1, 30, 60, MAX_REQUEST_TIMEOUT_SECONDS])
def test_every_layer_outlasts_a_request_and_the_shutdown(request_seconds: int) -> None:
    t = Timeouts(request_seconds)
    assert t.shutdown_seconds == request_seconds + 10  # what the service gives uvicorn
    # Kubernetes counts the grace period from the start of preStop.
    assert t.termination_grace_seconds > t.pre_stop_seconds + t.shutdown_seconds
    assert t.shutdown_seconds < t.ecs_stop_timeout_seconds <= ECS_MAX_STOP_TIMEOUT
    assert t.deregistration_delay_seconds > request_seconds
    assert t.idle_timeout_seconds > request_seconds and t.route_timeout_seconds > request_seconds


def test_request_timeout_beyond_what_ecs_can_wait_fails_naming_key(dev_raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({**dev_raw, "requestTimeoutSeconds": MAX_REQUEST_TIMEOUT_SECONDS + 1}, project="mlapi",
                     stack="dev", region="us-east-1")
    assert err.value.key == "mlapi:requestTimeoutSeconds"


def _pods(run: ProgramRun) -> list[dict[str, Any]]:
    return [plain(d.inputs)["spec"]["template"]["spec"] for d in run.of_type("kubernetes:apps/v1:Deployment")]


def test_pods_wait_pre_stop_then_shutdown_before_kill(dev: ProgramRun) -> None:
    for pod in _pods(dev):
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MLAPI_REQUEST_TIMEOUT_SECONDS"] == "30"
        assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
        assert pod["terminationGracePeriodSeconds"] == 5 + 40 + 5
        assert container["readinessProbe"]["failureThreshold"] == 1
    # The route timeout lives where the routes are: in Flagger's VirtualService of each service (the gateway's
    # delegates to it).
    canaries = dev.of_type("kubernetes:flagger.app/v1beta1:Canary")
    assert {plain(c.inputs)["spec"]["service"]["timeout"] for c in canaries} == {"35s"}


def test_changing_the_request_timeout_moves_every_layer() -> None:
    eks = run_program("dev", {"mlapi:requestTimeoutSeconds": "90"})
    for pod in _pods(eks):
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["MLAPI_REQUEST_TIMEOUT_SECONDS"] == "90"
        assert pod["terminationGracePeriodSeconds"] == 5 + 100 + 5
    assert {plain(c.inputs)["spec"]["service"]["timeout"]
            for c in eks.of_type("kubernetes:flagger.app/v1beta1:Canary")} == {"95s"}
    fargate = run_program("fargate", {"mlapi:requestTimeoutSeconds": "90"})
    for task in fargate.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        container = json.loads(plain(task.inputs)["containerDefinitions"])[0]
        assert container["stopTimeout"] == 105
        assert {"name": "MLAPI_REQUEST_TIMEOUT_SECONDS", "value": "90"} in container["environment"]
    assert {plain(tg.inputs)["deregistrationDelay"] for tg in fargate.of_type("aws:lb/targetGroup:TargetGroup")} \
        == {95}
    assert plain(fargate.one("aws:lb/loadBalancer:LoadBalancer").inputs)["idleTimeout"] == 95


def test_ecs_tasks_stop_after_the_shutdown(fargate: ProgramRun) -> None:
    for task in fargate.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        container = json.loads(plain(task.inputs)["containerDefinitions"])[0]
        assert container["stopTimeout"] == 45
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert env["MLAPI_REQUEST_TIMEOUT_SECONDS"] == "30"
        assert "MLAPI_INTRA_OP_THREADS" not in env


def test_threads_and_workers_pass_through_only_when_the_stack_sets_them(dev_raw: dict[str, Any]) -> None:
    services = [dict(s) for s in dev_raw["services"]]
    services[0].update(intraOpThreads=2, inferenceWorkers=2)
    run = run_program("dev", {"mlapi:services": json.dumps(services)})
    envs = {plain(d.inputs)["metadata"]["name"]: {e["name"]: e.get("value") for e in
            plain(d.inputs)["spec"]["template"]["spec"]["containers"][0]["env"]}
            for d in run.of_type("kubernetes:apps/v1:Deployment")}
    assert (envs["sentiment"]["MLAPI_INTRA_OP_THREADS"], envs["sentiment"]["MLAPI_INFERENCE_WORKERS"]) == ("2", "2")
    assert "MLAPI_INTRA_OP_THREADS" not in envs["semantic"]
