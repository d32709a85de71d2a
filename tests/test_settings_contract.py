"""Every `MLAPI_*` variable the image, compose file and Pulumi program set is one the server reads.

The server refuses unknown `MLAPI_*` variables at start, so a name that drifts here would stop pods in the cloud.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from mlapi.settings import setting_variables

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"\bMLAPI_[A-Z0-9_]+\b")


def _dockerfile_env_names() -> set[str]:
    text = (ROOT / "Dockerfile").read_text()
    runtime = text[text.rindex("FROM ") :]
    return {m.group(1) for m in re.finditer(r"\b(MLAPI_[A-Z0-9_]+)=", runtime)}


def _compose_env_names() -> set[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names: set[str] = set()
    for service in compose["services"].values():
        env = service.get("environment") or {}
        names |= set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}
    return {n for n in names if n.startswith("MLAPI_")}


def _infra_env_names() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "infra").rglob("*.py"):
        found |= set(re.findall(r'"name":\s*"(MLAPI_[A-Z0-9_]+)"', path.read_text()))
    return found


@pytest.mark.parametrize(
    "source", [_dockerfile_env_names, _compose_env_names, _infra_env_names], ids=["dockerfile", "compose", "infra"]
)
def test_deployed_variables_are_settings(source) -> None:
    names = source()
    assert names, "no MLAPI_ variables found: the parser no longer matches the file"
    assert names <= setting_variables(), names - setting_variables()
