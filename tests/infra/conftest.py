"""Fixtures that run the real Pulumi program under mocks, once per stack file, and hand tests what it declared."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The harness modules beside this file, and the per-platform test directories (their tests share constants).
_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), *(str(_HERE / d) for d in ("shared", "eks", "fargate"))]

from infra_program import ProgramRun, operated_config, run_program  # noqa: E402


@pytest.fixture(scope="session")
def dev() -> ProgramRun:
    """The `dev` stack (EKS) as declared by the program."""
    return run_program("dev")


@pytest.fixture(scope="session")
def fargate() -> ProgramRun:
    """The `fargate` stack (ECS Fargate) as declared by the program."""
    return run_program("fargate")


@pytest.fixture(scope="session")
def dev_preview() -> ProgramRun:
    """The `dev` stack as a first `pulumi preview` sees it: every computed value unknown."""
    return run_program("dev", preview=True)


@pytest.fixture(scope="session")
def fargate_preview() -> ProgramRun:
    """The `fargate` stack as a first `pulumi preview` sees it."""
    return run_program("fargate", preview=True)


@pytest.fixture()
def dev_raw() -> Iterator[dict[str, Any]]:
    """The dev stack's `mlapi:` values, parsed, for building variations of the config in tests."""
    raw: dict[str, Any] = {}
    for key, value in operated_config("dev").items():
        if key.startswith("mlapi:"):
            # Scalars stay strings, as the engine passes them; lists and objects are parsed as get_object does.
            raw[key.split(":", 1)[1]] = json.loads(value) if value.startswith(("[", "{")) else value
    yield raw
