"""The typed config: defaults agree with Pulumi.yaml, and every impossible value fails naming its key."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from infra_program import REPO, run_program

from infra.config import DEFAULTS, ConfigError, build_config
from infra.fargate.ecs_service import fargate_size
from infra.shared.cache import AUTH_TOKEN_SPECIALS, redis_url
from infra.shared.registry import lifecycle_policy


def build(raw: dict[str, Any]) -> Any:
    return build_config(raw, project="mlapi", stack="dev", region="us-east-1")


def test_defaults_match_pulumi_yaml() -> None:
    declared = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    assert {k: v["default"] for k, v in declared.items() if "default" in v} == DEFAULTS


def test_build_accepts_dev_stack_file(dev_raw: dict[str, Any]) -> None:
    cfg = build(dev_raw)
    assert cfg.platform == "eks"
    assert [(s.name, s.path_prefix) for s in cfg.services] == [("sentiment", "/project"), ("semantic", "/lab")]
    sentiment = cfg.services[0]
    assert sentiment.model_id == "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    assert sentiment.source.kind == "hub"
    assert sentiment.model_revision == "714eb0fa89d2f80546fda750413ed43d93601a13"
    assert (sentiment.cpu_millicores, sentiment.memory_mib, sentiment.intra_op_threads) == (1000, 1536, None)
    assert cfg.tags() == {"stack": "dev", "service": "mlapi", "managed-by": "pulumi"}


def test_build_reads_string_values_as_pulumi_passes_them(dev_raw: dict[str, Any]) -> None:
    raw = {**dev_raw, "nodePoolCpuLimit": "40", "nodeInstanceCpus": "[8, 4]", "cacheMultiAz": "false",
           "services": json.dumps(dev_raw["services"])}
    cfg = build(raw)
    assert (cfg.cluster.cpu_limit, cfg.cluster.instance_cpus) == (40, (4, 8))
    assert cfg.cache.multi_az is False


def _service_patch(raw: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    services = [dict(s) for s in raw["services"]]
    services[index].update(changes)
    return {**raw, "services": services}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"platform": "lambda"}, "mlapi:platform"),
        ({"natGateways": "many"}, "mlapi:natGateways"),
        ({"vpcCidr": "10.0.0.1/16"}, "mlapi:vpcCidr"),
        ({"availabilityZones": 1}, "mlapi:availabilityZones"),
        ({"nodeInstanceFamilies": []}, "mlapi:nodeInstanceFamilies"),
        ({"nodeInstanceFamilies": ["c7i", "t3"]}, "mlapi:nodeInstanceFamilies[1]"),
        ({"nodeInstanceCpus": ["4"]}, "mlapi:nodeInstanceCpus[0]"),
        ({"nodePoolMemoryGib": 2}, "mlapi:nodePoolMemoryGib"),
        ({"nodeInstanceType": "m6i.xlarge"}, "mlapi:nodeInstanceType"),
        ({"apiPublicAccessCidrs": []}, "mlapi:apiPublicAccessCidrs"),
        ({"apiPublicAccessCidrs": ["300.1.1.1/32"]}, "mlapi:apiPublicAccessCidrs[0]"),
        ({"kubernetesVersion": "latest"}, "mlapi:kubernetesVersion"),
        ({"cacheNodes": 1}, "mlapi:cacheAutomaticFailover"),
        ({"cacheAutomaticFailover": False}, "mlapi:cacheMultiAz"),
        ({"cacheNodeType": "t3.micro"}, "mlapi:cacheNodeType"),
        ({"logRetentionDays": 10}, "mlapi:logRetentionDays"),
        ({"certificateArn": "my-cert"}, "mlapi:certificateArn"),
        ({"nodeCount": 3}, "mlapi:nodeCount"),
        ({"services": []}, "mlapi:services"),
        ({"keepImages": "ten"}, "mlapi:keepImages"),
    ],
)
def test_build_rejects_bad_value_naming_key(dev_raw: dict[str, Any], change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build({**dev_raw, **change})
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("index", "change", "key"),
    [
        (0, {"minReplicas": 5, "maxReplicas": 2}, "mlapi:services[0].minReplicas"),
        (1, {"pathPrefix": "/project"}, "mlapi:services[1].pathPrefix"),
        (1, {"pathPrefix": "/project/lab"}, "mlapi:services[1].pathPrefix"),
        (1, {"pathPrefix": "lab"}, "mlapi:services[1].pathPrefix"),
        (1, {"pathPrefix": "/lab/"}, "mlapi:services[1].pathPrefix"),
        (1, {"pathPrefix": "/l ab"}, "mlapi:services[1].pathPrefix"),
        (1, {"name": "sentiment"}, "mlapi:services[1].name"),
        (0, {"name": "Sentiment_Model"}, "mlapi:services[0].name"),
        (0, {"cpu": 100}, "mlapi:services[0].cpu"),
        (0, {"cpuTarget": 100}, "mlapi:services[0].cpuTarget"),
        (0, {"replicas": 3}, "mlapi:services[0].replicas"),
    ],
)
def test_build_rejects_bad_service_naming_key(
    dev_raw: dict[str, Any], index: int, change: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        build(_service_patch(dev_raw, index, **change))
    assert err.value.key == key


def test_build_rejects_service_without_model_id(dev_raw: dict[str, Any]) -> None:
    services = [dict(s) for s in dev_raw["services"]]
    del services[0]["modelId"]
    with pytest.raises(ConfigError, match=r"^mlapi:services\[0\]\.modelId: is required"):
        build({**dev_raw, "services": services})


def test_program_fails_on_bad_stack_config_naming_key() -> None:
    with pytest.raises(Exception, match=r"mlapi:platform: must be 'eks' or 'fargate'"):
        run_program("dev", {"mlapi:platform": "nomad"})


def test_program_fails_on_misspelt_stack_key_suggesting_the_right_one() -> None:
    expected = r"mlapi:nodeCapacityTyp: unknown key \(did you mean mlapi:nodeCapacityType\?\)"
    with pytest.raises(Exception, match=expected):
        run_program("dev", {"mlapi:nodeCapacityTyp": "spot"})


def test_unknown_key_far_from_any_gets_no_guess() -> None:
    from infra.config import did_you_mean

    assert did_you_mean("zzzz", {"platform", "services"}) == ""
    assert did_you_mean("PLATFORM", {"platform", "services"}, "mlapi:") == " (did you mean mlapi:platform?)"


def test_redis_url_encodes_every_allowed_special() -> None:
    from urllib.parse import unquote, urlsplit

    token = f"a{AUTH_TOKEN_SPECIALS}b"
    url = redis_url(token, "redis.internal")
    parts = urlsplit(url)
    assert parts.scheme == "rediss"
    assert (parts.hostname, parts.port, parts.path) == ("redis.internal", 6379, "/0")
    assert unquote(parts.password or "") == token


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [(1000, 1536, (1024, 2048)), (500, 1024, (512, 1024)), (250, 512, (256, 512)), (1000, 3000, (1024, 3072)),
     (2000, 1024, (2048, 4096)), (1500, 9000, (2048, 9216))],
)
def test_fargate_size_rounds_up_to_valid_size(cpu: int, memory: int, expected: tuple[int, int]) -> None:
    assert fargate_size(cpu, memory) == expected


def test_lifecycle_policy_keeps_last_images_and_expires_untagged() -> None:
    rules = {r["rulePriority"]: r for r in json.loads(lifecycle_policy(7))["rules"]}
    assert rules[1]["selection"]["tagStatus"] == "untagged"
    assert rules[2]["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 7}
    assert max(rules) == 2  # the `any` rule must be evaluated last


def test_candidate_is_parsed_and_its_keys_are_checked() -> None:
    """`services[].candidate` names the model version rolled out beside the live one; a typo names its key."""
    from infra.config import CandidateModel, ConfigError, _service
    from infra.model_source import ModelSource

    base = {"name": "sentiment", "modelId": "org/model", "modelRevision": "b" * 40, "pathPrefix": "/sentiment"}
    assert _service(0, base).candidate is None
    svc = _service(0, {**base, "candidate": {"modelId": "org/model-v2", "modelRevision": "a" * 40}})
    assert svc.candidate == CandidateModel(model_id="org/model-v2", model_revision="a" * 40,
                                           source=ModelSource("hub", "org/model-v2", "a" * 40))
    with pytest.raises(ConfigError, match=r"mlapi:services\[0\]\.candidate\.modelRevison: unknown key \(did you mean"):
        _service(0, {**base, "candidate": {"modelId": "x", "modelRevison": "y"}})
    with pytest.raises(ConfigError, match=r"mlapi:services\[0\]\.candidate\.modelRevision: is required"):
        _service(0, {**base, "candidate": {"modelId": "org/model-v2"}})
