"""`mlapi serve` as a real process: starts fast, answers, stops cleanly on SIGTERM, refuses bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_serve_answers_then_stops_on_sigterm(minilm_dir, unused_port: int) -> None:
    env = {**os.environ, "MLAPI_PATH_PREFIX": "/project"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir), "--port", str(unused_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{unused_port}/project"
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status, _ = _get(base + "/health")
            except OSError:
                time.sleep(0.1)
        assert status == 200
        request = urllib.request.Request(base + "/predict", data=b'{"text": ["I love you."]}', method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["predictions"][0][0]["label"] == "POSITIVE"
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says what stopped it.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        output = process.stdout.read().decode() if process.stdout else ""
        assert "stopped cleanly" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_refuses_bad_config_naming_the_variable(minilm_dir) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir)],
        env={**os.environ, "MLAPI_PATH_PREFIX": "no-slash"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "MLAPI_PATH_PREFIX" in result.stderr


def test_serve_refuses_an_unbaked_directory(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "MLAPI_MODEL_DIR" in result.stderr and "mlapi bake" in result.stderr
