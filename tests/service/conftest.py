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


class LiveServer:
    """One `mlapi serve` process on a free port, with only the MLAPI_ settings given (none from the environment)."""

    def __init__(self, model_dir: Path, **settings: str) -> None:
        import os
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLAPI_") and k != "FORWARDED_ALLOW_IPS"}
        env.update(TOKENIZERS_PARALLELISM="false", **settings)
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(model_dir), "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 120.0) -> LiveServer:
        """Until /health answers; fails if the process exits or the time runs out."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=2)
                return self
            except OSError:
                assert self.process.poll() is None, "mlapi serve exited"
                assert time.monotonic() < deadline, f"{self.base} never became ready"
                time.sleep(0.2)

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM and wait (or kill at once when the queued work is of no interest)."""
        if self.process.poll() is None:
            (self.process.terminate if graceful else self.process.kill)()
        self.process.wait(timeout=120)


@pytest.fixture(scope="session")
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """`live_server(model_dir, MLAPI_X="...")`: a ready `mlapi serve` process; any still running are killed at end."""
    started: list[LiveServer] = []

    def start(model_dir: Path, **settings: str) -> LiveServer:
        server = LiveServer(model_dir, **settings)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop(graceful=False)
