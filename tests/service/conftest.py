"""Fixtures for service tests: an app per test over a baked model, ready before the test starts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlapi.api.app import create_app
from mlapi.settings import Settings


def wait_ready(client: TestClient, path: str = "/health", timeout: float = 60.0) -> dict:
    """Poll /health until the model is loaded; fail the test if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(path)
        if response.status_code == 200:
            return response.json()
        time.sleep(0.05)
    raise AssertionError(f"{path} never became ready: {response.status_code} {response.text}")




@pytest.fixture
def make_client() -> Iterator[Callable[..., object]]:
    """`with make_client(model_dir, **settings) as client:` a started app with its model loaded."""

    @contextmanager
    def factory(model_dir: Path, ready: bool = True, **overrides: object) -> Iterator[TestClient]:
        settings = Settings(model_dir=model_dir, **overrides)
        with TestClient(create_app(settings)) as client:
            if ready:
                wait_ready(client, f"{settings.path_prefix}/health")
            yield client

    yield factory


@pytest.fixture
def minilm_client(make_client, minilm_dir: Path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The bundled MiniLM served with the in-process cache."""
    with make_client(minilm_dir) as client:
        yield client


@pytest.fixture
def classifier_client(make_client, classifier_dir: Path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The tiny three-label classifier, served with caching off so every call runs the model."""
    with make_client(classifier_dir, cache_enabled=False) as client:
        yield client
