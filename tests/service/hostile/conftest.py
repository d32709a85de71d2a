"""A live `mlapi serve` process with keys, rate limits and a real Redis: what hostile-input tests run against."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlapi.auth.keys import generate_key, key_line

SERVICE = Path(__file__).resolve().parents[3] / "service"


@dataclass
class LiveServer:
    """A running server: its base URL, its keys by name, and the process."""

    base: str
    port: int
    keys: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Poll /health until 200; fail with the server's output if it exits or never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlapi exited with {process.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.2)
    raise AssertionError("mlapi never became healthy")


@pytest.fixture
def live_server(minilm_dir: Path, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """`with live_server(keys={"name": "rate=5"}, MLAPI_X=...) as server:` a started `mlapi serve`."""

    @contextmanager
    def start(keys: dict[str, str] | None = None, **env: str) -> Iterator[LiveServer]:
        port = _free_port()
        presented: dict[str, str] = {}
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")}
        environ.update({"PYTHONPATH": str(SERVICE), "TOKENIZERS_PARALLELISM": "false", **env})
        if keys is not None:
            lines = []
            for name, options in keys.items():
                presented[name] = generate_key()
                lines.append(f"{key_line(name, presented[name])} {options}".strip())
            path = tmp_path / "keys"
            path.write_text("\n".join(lines) + "\n")
            environ["MLAPI_API_KEYS_FILE"] = str(path)
        log = tmp_path / f"mlapi-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir), "--port", str(port)],
                env=environ, stdout=sink, stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base, process)
            yield LiveServer(base, port, presented, process, log, environ)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    yield start
