"""The Redis AUTH token is in the stack state only as a Pulumi secret, and the code says exactly that."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from infra_mocks import AUTH_TOKEN, is_secret
from infra_program import ProgramRun

import infra.shared.cache


def _plain_leaks(value: Any, path: str = "") -> list[str]:
    """Paths of values holding the token outside a secret wrapper."""
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [leak for k, v in value.items() for leak in _plain_leaks(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [leak for i, v in enumerate(value) for leak in _plain_leaks(v, f"{path}[{i}]")]
    if isinstance(value, str) and (AUTH_TOKEN in value or quote(AUTH_TOKEN, safe="") in value):
        return [path]
    return []


@pytest.mark.parametrize("stack", ["dev", "fargate"])
def test_token_reaches_resources_only_as_a_secret(stack: str, request: pytest.FixtureRequest) -> None:
    run: ProgramRun = request.getfixturevalue(stack)
    holders = [r for r in run.resources if AUTH_TOKEN in repr(r.inputs) or quote(AUTH_TOKEN, safe="") in repr(r.inputs)]
    assert holders  # the token does reach Redis and the workloads
    for res in holders:
        assert _plain_leaks(res.inputs) == [], res.name


def test_cache_docs_say_the_token_is_in_state_encrypted() -> None:
    doc = " ".join((infra.shared.cache.__doc__ or "").split())
    assert "out of the replication group's state only" in doc
    assert "still in the stack state" in doc and "encrypted" in doc
