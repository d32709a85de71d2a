"""Settings: validated once, errors name the variable."""

from __future__ import annotations

import pytest
from mlapi.settings import Settings, setting_variables, unknown_variables, usable_cpus
from pydantic import ValidationError


def test_defaults_are_the_documented_ones() -> None:
    s = Settings(_env_file=None)
    assert (s.host, s.port, s.backend, s.cache_prefix, s.max_batch) == (
        "127.0.0.1", 8000, "onnx", "fastapi-cache-project", 1000)
    assert s.redis_url is None
    assert s.backends == ["onnx"]


def test_environment_overrides_with_prefix(monkeypatch) -> None:
    monkeypatch.setenv("MLAPI_PORT", "9001")
    monkeypatch.setenv("MLAPI_PATH_PREFIX", "/project/")
    monkeypatch.setenv("MLAPI_EXTRA_BACKENDS", "torch, onnx")
    monkeypatch.setenv("MLAPI_REDIS_URL", "rediss://:secret@cache.example:6379/0")
    s = Settings()
    assert s.port == 9001
    assert s.path_prefix == "/project"
    assert s.backends == ["onnx", "torch"]
    assert s.redis_url is not None and "secret" not in repr(s)


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 0), ("path_prefix", "project"), ("path_prefix", "/a b"), ("backend", "tensorflow"),
     ("redis_url", "http://x"), ("max_batch", 0), ("extra_backends", "gpu")],
)
def test_bad_values_fail_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(**{field: value})
    assert field in str(error.value)


def test_queue_smaller_than_a_request_is_refused() -> None:
    with pytest.raises(ValidationError, match="MLAPI_MAX_QUEUE"):
        Settings(max_batch=100, max_queue=10)
    with pytest.raises(ValidationError, match=r"1 \+ MLAPI_MAX_LABELS"):
        Settings(max_batch=10, max_queue=10, max_labels=10)


def test_usable_cpus_is_positive_and_bounded() -> None:
    import os

    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


def test_unknown_variable_is_refused_with_a_suggestion(monkeypatch) -> None:
    monkeypatch.setenv("MLAPI_BACH_MAX_SIZE", "8")
    expected = "MLAPI_BACH_MAX_SIZE is not a setting .did you mean MLAPI_BATCH_MAX_SIZE"
    with pytest.raises(ValidationError, match=expected):
        Settings()


def test_every_field_is_an_mlapi_variable() -> None:
    assert "MLAPI_REDIS_URL" in setting_variables()
    assert "MLAPI_BATCH_WAIT_MS" in setting_variables()
    assert unknown_variables({"MLAPI_PORT": "1", "HOME": "/", "MLAPI_NOPE": "x"}) == ["MLAPI_NOPE"]
