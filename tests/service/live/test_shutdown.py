"""Stopping and slow requests as the real server meets them, on CPUs kept busy: every request gets an answer
(its own, or a JSON 503 with Retry-After), never uvicorn's bare 500, and /health drops to 503 while draining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from mlapi.server import graceful_shutdown_seconds
from mlapi.settings import Settings

# Texts at the model's 256-token limit: seconds of inference on two busy cores.
LONG_TEXTS = [f"text {i} " + "with enough words to keep the model busy for a while " * 30 for i in range(256)]


@pytest.fixture
def busy_cpus() -> Iterator[None]:
    """One spinning process per CPU for the test (each also stops by itself after three minutes)."""
    spin = "import time\nend = time.monotonic() + 180\nwhile time.monotonic() < end:\n    pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def _call(method: str, url: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, Message, dict]:
    request = urllib.request.Request(url, data=body, method=method)  # no Content-Type, as k6 sends it
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


class Server:
    """`python -m mlapi serve` as a subprocess, output captured."""

    def __init__(self, model_dir: Path, port: int, **env: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(model_dir), "--port", str(port)],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if _call("GET", self.base + "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server never became ready")

    def predict_in_background(self, texts: list[str], result: dict[str, object]) -> threading.Thread:
        body = json.dumps({"text": texts}).encode()

        def call() -> None:
            result["status"], result["headers"], result["body"] = _call("POST", self.base + "/predict", body, 170)
            result["finished"] = time.monotonic()

        caller = threading.Thread(target=call)
        caller.start()
        return caller

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        return self.process.stdout.read().decode() if self.process.stdout else ""


@pytest.fixture
def start_server(minilm_dir, unused_port) -> Iterator:  # type: ignore[no-untyped-def]
    servers: list[Server] = []

    def start(**env: str) -> Server:
        servers.append(Server(minilm_dir, unused_port, **env))
        servers[-1].wait_ready()
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_graceful_shutdown_outlasts_the_request_deadline() -> None:
    assert graceful_shutdown_seconds(Settings(_env_file=None)) == 40
    assert graceful_shutdown_seconds(Settings(_env_file=None, request_timeout_seconds=2.5)) == 13


def test_sigterm_lets_the_request_in_flight_finish(start_server, busy_cpus) -> None:
    server = start_server(MLAPI_REQUEST_TIMEOUT_SECONDS="150", MLAPI_CACHE_ENABLED="false")
    result: dict[str, object] = {}
    caller = server.predict_in_background(LONG_TEXTS[:64], result)
    time.sleep(0.3)  # the request is in the server now
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    caller.join(timeout=175)
    assert result["status"] == 200
    assert len(result["body"]["predictions"]) == 64  # type: ignore[index]
    assert result["finished"] > signalled  # type: ignore[operator]  # it really was in flight at the signal
    assert server.process.wait(timeout=180) in (0, -signal.SIGTERM)
    assert "stopped cleanly" in server.stop()


def test_request_past_its_deadline_gets_a_json_503_even_while_stopping(start_server, busy_cpus) -> None:
    # One inference worker: start-up is then a single pass, so the batcher has no measured speed to refuse the
    # request up front with (an `overloaded` 503), and the request is admitted and meets its deadline in flight.
    server = start_server(MLAPI_REQUEST_TIMEOUT_SECONDS="1", MLAPI_CACHE_ENABLED="false", MLAPI_INFERENCE_WORKERS="1")
    result: dict[str, object] = {}
    caller = server.predict_in_background(LONG_TEXTS, result)
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    caller.join(timeout=175)
    message = "no answer within MLAPI_REQUEST_TIMEOUT_SECONDS (1 s); retry later"
    assert result["status"] == 503
    assert result["body"] == {"detail": message, "error": message, "error_type": "timeout"}
    assert result["headers"]["Retry-After"] == "1"  # type: ignore[index]
    assert result["headers"]["Content-Type"] == "application/json"  # type: ignore[index]
    assert server.process.wait(timeout=180) in (0, -signal.SIGTERM)
    output = server.stop()
    assert "stopped cleanly" in output
    assert "timeout graceful shutdown exceeded" not in output


def test_health_answers_503_draining_after_sigterm(start_server, busy_cpus) -> None:
    server = start_server(MLAPI_DRAIN_SECONDS="6")
    assert _call("GET", server.base + "/health")[2]["status"] == "healthy"
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    status, _, body = _call("GET", server.base + "/health")
    for _ in range(20):
        if status == 503:
            break
        time.sleep(0.05)
        status, _, body = _call("GET", server.base + "/health")
    assert status == 503
    assert (body["status"], body["error_type"], body["detail"]) == (
        "draining", "unhealthy", "the server is shutting down")
    # Still answering what it is sent while the load balancer moves traffic away.
    answer = _call("POST", server.base + "/predict", b'{"text": ["I love you."]}')
    assert answer[0] == 200
    assert answer[2]["predictions"][0][0]["label"] == "POSITIVE"
    assert time.monotonic() - signalled < 6, "the checks above ran after the drain; the machine is too slow"
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "stopped cleanly" in server.stop()


def test_request_over_the_deadline_is_a_json_503_with_retry_after(make_client, minilm_dir) -> None:
    # One inference worker, so the request is admitted and times out in flight (see the test above).
    with make_client(minilm_dir, cache_enabled=False, request_timeout_seconds=0.5, inference_workers=1) as client:
        response = client.post("/predict", content=json.dumps({"text": LONG_TEXTS}).encode())
        message = "no answer within MLAPI_REQUEST_TIMEOUT_SECONDS (0.5 s); retry later"
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"detail": message, "error": message, "error_type": "timeout"}
        samples = dict(line.rsplit(" ", 1) for line in client.get("/metrics").text.splitlines() if line[0] != "#")
        assert float(samples['mlapi_requests_total{route="/predict",status="503"}']) == 1
        # At least this one (a /health poll of the fixture can also run late on a busy machine).
        assert float(samples['mlapi_rejected_total{reason="timeout"}']) >= 1


def test_a_timeout_error_inside_the_app_is_not_reported_as_the_deadline(minilm_dir) -> None:
    """Only the request deadline answers 503 `timeout`; any other TimeoutError is a server fault (JSON 500)."""
    from fastapi.testclient import TestClient
    from mlapi.api.app import create_app
    from mlapi.settings import Settings

    app = create_app(Settings(model_dir=minilm_dir, request_timeout_seconds=30))

    @app.post("/raises-timeout")
    async def raises_timeout() -> None:
        raise TimeoutError("an inner call gave up")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/raises-timeout", json={})
        assert response.status_code == 500
        assert response.json()["error_type"] == "internal"
        assert "retry-after" not in response.headers
        samples = dict(line.rsplit(" ", 1) for line in client.get("/metrics").text.splitlines() if line[0] != "#")
        assert float(samples.get('mlapi_rejected_total{reason="timeout"}', "0")) == 0
