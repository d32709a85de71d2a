"""The shadow settings: a bad value stops the server naming the variable; a good one is read as documented."""

from __future__ import annotations

import pytest
from mlapi.settings import Settings
from pydantic import ValidationError


@pytest.mark.parametrize(("field", "value"), [
    ("shadow_url", "candidate:8000"), ("shadow_url", "ftp://candidate"), ("shadow_url", "http://c:8000/p?x=1"),
    ("shadow_url", "http:///nohost"), ("shadow_url", "http://user:secret@candidate:8000"),
    ("shadow_fraction", 1.5), ("shadow_fraction", -0.1), ("shadow_queue", 0),
    ("shadow_timeout_seconds", 0),
])
def test_bad_shadow_values_fail_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert field in str(error.value)


def test_shadow_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLAPI_SHADOW_URL", "http://sentiment-canary:8000/sentiment/")
    monkeypatch.setenv("MLAPI_SHADOW_FRACTION", "0.25")
    monkeypatch.setenv("MLAPI_SHADOW_API_KEY", "k-secret")
    s = Settings()
    assert s.shadow_url == "http://sentiment-canary:8000/sentiment"  # `/predict` is appended to it
    assert s.shadow_fraction == 0.25
    assert s.shadow_api_key is not None and "k-secret" not in repr(s)
    assert Settings(shadow_url="  ").shadow_url is None


def test_shadow_is_off_by_default() -> None:
    s = Settings()
    assert (s.shadow_url, s.shadow_fraction, s.shadow_queue) == (None, 0.1, 1000)
