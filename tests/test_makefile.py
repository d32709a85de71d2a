"""The Makefile as a new user meets it: the CPU build of torch, and the model named by MODEL is the model served.

The install itself is not run here (minutes, gigabytes); what it would resolve is, with `pip install --dry-run`, and
the bake and serve rules run for real with a venv whose `mlapi` is this checkout's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make(*args: str, cwd: Path = ROOT, **env: str) -> str:
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _fake_venv(where: Path) -> Path:
    """A venv as `make install-serve` leaves it, whose `mlapi` is this checkout's (no install needed)."""
    venv = where / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    mlapi = venv / "bin" / "mlapi"
    mlapi.write_text(f"#!/bin/sh\nexec {sys.executable} -m mlapi \"$@\"\n")
    mlapi.chmod(0o755)
    for marker in (".torch-ready", ".bake-ready"):
        (venv / marker).touch()
    return venv


def _project(where: Path) -> Path:
    """The files the Makefile's rules read, in a directory of their own (models/ is written there, not here)."""
    project = where / "project"
    project.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    return project


@pytest.mark.parametrize(("model", "model_dir"), [
    ("", "models/default"),
    ("./my-ckpt", "models/my-ckpt"),
    ("/data/runs/my-ckpt/", "models/my-ckpt"),
    ("distilbert/distilbert-base-uncased-finetuned-sst-2-english",
     "models/distilbert-base-uncased-finetuned-sst-2-english"),
])
def test_model_is_baked_into_and_served_from_a_directory_of_its_own(tmp_path: Path, model: str,
                                                                    model_dir: str) -> None:
    project, venv = _project(tmp_path), _fake_venv(tmp_path)
    plan = _make("-n", "serve", f"MODEL={model}", f"VENV={venv}", cwd=project)
    assert re.search(rf"mlapi bake {re.escape(model)} *--out {re.escape(model_dir)};", plan), plan
    assert f"mlapi serve --model-dir {model_dir} " in plan


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(url: str, process: subprocess.Popen[bytes], log: Path) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"make serve never became healthy: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_make_serve_serves_the_model_named_even_when_models_default_exists(
        tmp_path: Path, minilm_dir: Path, tiny_classifier_writer) -> None:
    project, venv = _project(tmp_path), _fake_venv(tmp_path)
    shutil.copytree(minilm_dir, project / "models" / "default")  # a first `make serve` baked the bundled model
    checkpoint = tiny_classifier_writer(tmp_path / "runs" / "my-ckpt", ["CALM", "STORM"])
    port, log = _free_port(), tmp_path / "make-serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["make", "serve", f"MODEL={checkpoint}", f"VENV={venv}", f"PORT={port}"],
                                   cwd=project, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = _health(f"http://127.0.0.1:{port}/health", process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    assert health["model"]["source"] == str(checkpoint)
    assert health["model"]["labels"] == ["CALM", "STORM"]
    assert (project / "models" / "my-ckpt" / "manifest.json").is_file()
    assert json.loads((project / "models" / "default" / "manifest.json").read_text())["source"].endswith("(bundled)")

    # Baked once: the next serve of the same model starts at once (a real run: `make -n` cannot know the stamp stays).
    manifest = "models/my-ckpt/manifest.json"
    assert "mlapi bake" not in _make(manifest, f"MODEL={checkpoint}", f"VENV={venv}", cwd=project)
    # Another checkpoint that happens to share the name is baked again, never served from the first one's bake.
    other = tiny_classifier_writer(tmp_path / "elsewhere" / "my-ckpt", ["LOW", "HIGH"])
    assert f"mlapi bake {other} --out models/my-ckpt" in _make(manifest, f"MODEL={other}", f"VENV={venv}", cwd=project)
    assert json.loads((project / manifest).read_text())["labels"] == ["LOW", "HIGH"]
