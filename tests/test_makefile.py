"""The Makefile as a new user meets it: the CPU build of torch, and the model named by MODEL is the model served.

The install itself is not run here (minutes, gigabytes); what it would resolve is, with `pip install --dry-run`, and
the bake and serve rules run for real with a venv whose `mlapi` is this checkout's.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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
    ("models/my-ckpt", "models/my-ckpt-baked"),  # bake replaces its --out: never the checkpoint itself
    ("distilbert/distilbert-base-uncased-finetuned-sst-2-english",
     "models/distilbert-base-uncased-finetuned-sst-2-english"),
])
def test_model_is_baked_into_and_served_from_a_directory_of_its_own(tmp_path: Path, model: str,
                                                                    model_dir: str) -> None:
    project, venv = _project(tmp_path), _fake_venv(tmp_path)
    plan = _make("-n", "serve", f"MODEL={model}", f"VENV={venv}", cwd=project)
    assert re.search(rf"mlapi bake {re.escape(model)} *--out {re.escape(model_dir)}$", plan, flags=re.M), plan
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


def _torch_pip_args(tmp_path: Path, **variables: str) -> list[str]:
    """The arguments the Makefile gives `pip install` for torch, with `variables` set on make's command line."""
    venv = tmp_path / "empty-venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "python").touch()
    plan = _make("-n", f"VENV={venv}", f"{venv}/.torch-ready", *[f"{k}={v}" for k, v in variables.items()])
    found = re.search(r"^echo '\S+/bin/python -m pip install (.*torch==\S+)'$", plan, flags=re.M)
    assert found, plan
    return found.group(1).split()


def _dry_run(args: list[str], report: Path, *pip_options: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = subprocess.run([sys.executable, "-m", "pip", *pip_options, "install", "--dry-run", "--ignore-installed",
                           "--report", str(report), *args], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    return done, {i["metadata"]["name"].lower(): i["metadata"] for i in installs}


def _gpu_packages(names: object) -> list[str]:
    return sorted(name for name in names if name.startswith(("nvidia-", "cuda-", "triton")))  # type: ignore[attr-defined]


def _requires(metadata: dict) -> list[str]:
    """The distributions a package's metadata requires on this machine (Linux; markers of other systems dropped)."""
    from packaging.requirements import Requirement

    return [Requirement(r).name.lower() for r in metadata.get("requires_dist", [])
            if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]


def _local_cpu_wheel() -> Path | None:
    """The torch CPU wheel that pip's configuration points at on this machine (find-links), if any."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            timeout=60, check=False).stdout
    places = re.findall(r"find-links='([^']+)'", listed) + os.environ.get("PIP_FIND_LINKS", "").split()
    for place in places:
        for wheel in sorted(Path(place.removeprefix("file://")).glob("torch-2.13.0+cpu-*.whl")):
            return wheel
    return None


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/torch/", timeout=10):
            return True
    except OSError:
        return False


class _Index(threading.Thread):
    """A PEP 503 index on loopback serving one wheel (and its PEP 658 metadata), as PyTorch's CPU index serves it."""

    def __init__(self, root: Path, wheel: Path) -> None:
        super().__init__(daemon=True)
        (root / "whl" / "cpu" / "torch").mkdir(parents=True)
        (root / "files").mkdir()
        (root / "files" / wheel.name).symlink_to(wheel)
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            (root / "files" / f"{wheel.name}.metadata").write_bytes(archive.read(metadata))
        href = "../../../files/" + wheel.name.replace("+", "%2B")
        (root / "whl" / "cpu" / "torch" / "index.html").write_text(
            f'<html><body><a href="{href}" data-dist-info-metadata="true" data-core-metadata="true">{wheel.name}</a>'
            "</body></html>")
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None  # type: ignore[attr-defined]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/whl/cpu"

    def run(self) -> None:
        self.server.serve_forever()


def test_torch_resolves_to_the_cpu_build_from_public_pypi_and_the_cpu_index(tmp_path: Path) -> None:
    # What a machine with only the public indexes resolves: `pip --isolated` reads no pip configuration (no local
    # wheel, no mirror, no cap) and reaches PyPI itself. download.pytorch.org cannot be reached here, so TORCH_INDEX
    # points at a stand-in serving the very file the CPU index serves, torch-2.13.0+cpu (found through this
    # machine's pip configuration). What this proves: the Makefile's torch command, given PyPI and a CPU index,
    # takes the CPU build, whose dependencies (installed by the next step) hold nothing of CUDA; and that PyPI
    # alone would not (the control runs).
    wheel = _local_cpu_wheel()
    if wheel is None:
        pytest.skip("no torch-2.13.0+cpu wheel on this machine to stand in for PyTorch's CPU index")
    if not _pypi_reachable():
        pytest.skip("pypi.org cannot be reached")
    index = _Index(tmp_path / "index", wheel)
    index.start()
    try:
        args = _torch_pip_args(tmp_path, TORCH_INDEX=index.url)
        assert "--no-deps" in args
        _, torch_only = _dry_run(args, tmp_path / "cpu.json", "--isolated")
        # The same with torch's dependencies resolved too: what the two install steps put into the venv together.
        _, everything = _dry_run([a for a in args if a != "--no-deps"], tmp_path / "cpu-all.json", "--isolated")
    finally:
        index.server.shutdown()
    assert torch_only["torch"]["version"] == "2.13.0+cpu"
    assert _gpu_packages(_requires(torch_only["torch"])) == []
    assert everything["torch"]["version"] == "2.13.0+cpu" and _gpu_packages(everything) == []
    assert {"sympy", "networkx", "filelock"} <= set(everything)  # torch's own dependencies, from PyPI

    args = _torch_pip_args(tmp_path, TORCH_INDEX="")
    _, pypi_only = _dry_run(args, tmp_path / "pypi.json", "--isolated")
    _, pypi_all = _dry_run([a for a in args if a != "--no-deps"], tmp_path / "pypi-all.json", "--isolated")
    assert pypi_only["torch"]["version"] == "2.13.0" and _gpu_packages(_requires(pypi_only["torch"]))
    assert len(_gpu_packages(pypi_all)) > 10


class _Silent(threading.Thread):
    """An index that accepts connections, reads the request and never answers: a firewall that drops, as seen
    from pip. Counts the requests per path."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/whl/cpu"
        self.requests: dict[str, int] = {}
        self.held: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            line = conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
            path = line.split(" ")[1] if line.count(" ") >= 2 else line
            self.requests[path] = self.requests.get(path, 0) + 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_an_unreachable_torch_index_is_tried_once_then_pip_takes_its_own_sources(tmp_path: Path) -> None:
    # pip's defaults retry an index that does not answer 5 times per page (minutes with a long timeout); the
    # Makefile's command asks each page once, then resolves from pip's configuration (here: the local CPU wheel).
    silent = _Silent()
    silent.start()
    try:
        done, installs = _dry_run(_torch_pip_args(tmp_path, TORCH_INDEX=silent.url, TORCH_INDEX_TIMEOUT="1"),
                                  tmp_path / "fallback.json")
    finally:
        silent.close()
    assert installs["torch"]["version"].split("+")[0] == "2.13.0"
    # Only torch is asked of TORCH_INDEX, once: its dependencies come from pip's usual indexes in the next step.
    assert silent.requests == {"/whl/cpu/torch/": 1}, silent.requests
    assert "Retrying" not in done.stdout + done.stderr
    if _local_cpu_wheel() is not None:
        assert installs["torch"]["version"] == "2.13.0+cpu"


def test_every_install_step_says_what_it_does_and_pip_shows_its_progress(tmp_path: Path) -> None:
    venv = tmp_path / "fresh"  # nothing installed: every step of a first install is in the plan
    tools = tmp_path / "tools"
    plan = _make("-n", f"VENV={venv}", f"TOOLS={tools}", "install-dev", f"{tools}/bin/checkov")
    runs = [line for line in plan.splitlines() if not line.startswith("echo ")]
    installs = [line for line in runs if "pip install" in line]
    assert len(installs) >= 4, plan  # pip itself, torch, the dev extra, checkov
    assert not [line for line in installs if re.search(r" (-q|--quiet)\b", line)]
    announced = [line for line in plan.splitlines() if line.startswith('echo "==> ')]
    assert len(announced) >= len(installs)
    # Each install runs with the heartbeat, since pip says nothing while it unpacks (a minute for torch).
    assert all("still running" in line for line in installs), installs


def test_lint_and_test_show_what_runs(tmp_path: Path) -> None:
    venv = tmp_path / "ready"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    for marker in (".torch-ready", ".bake-ready", ".dev-ready"):
        (venv / marker).touch()
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "checkov").touch()
    plan = _make("-n", f"VENV={venv}", f"TOOLS={tools}", "test")
    mypy = [line for line in plan.splitlines() if "/bin/mypy" in line and "still running" in line]
    assert len(mypy) == 1 and "still running" in mypy[0]  # mypy prints nothing until it is done
    assert re.search(r"-m pytest -v\b", plan), plan  # each test named as it starts
    # ... and a long one says it is still running, on the terminal handed over as fd 3 (tests/conftest.py).
    assert re.search(r"TEST_HEARTBEAT_FD=3 .*-m pytest -v .*3>&1", plan.replace("\\\n", " ")), plan


def test_a_silent_step_prints_a_heartbeat_stops_it_and_keeps_the_exit_status(tmp_path: Path) -> None:
    def run(command: str) -> subprocess.CompletedProcess[str]:
        # The pipes close only when every writer is gone: a heartbeat left running would hang this past its timeout.
        return subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "HEARTBEAT=1",
                               "--eval", f"probe: ; $(call step,a quiet command,{command})", "probe"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    done = run("sleep 4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["==> a quiet command", "sleep 4"]
    assert re.fullmatch(r"    \.\.\. still running: \d+ s", lines[2]), lines
    failed = run("sleep 2; exit 3")
    assert failed.returncode != 0 and "==> a quiet command" in failed.stdout


def _torch_check(tmp_path: Path) -> str:
    """The Python the Makefile runs after installing torch to say which build it got."""
    venv = tmp_path / "check-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    plan = _make("-n", f"VENV={venv}", f"{venv}/.torch-ready")
    found = re.search(rf"^{re.escape(str(venv))}/bin/python -c '(.*)'$", plan, flags=re.M)
    assert found, plan
    return found.group(1)


def _site(where: Path, *dists: tuple[str, str]) -> Path:
    for name, version in dists:
        info = where / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return where


@pytest.mark.parametrize(("dists", "says", "stream"), [
    ([("torch", "2.13.0+cpu")], "torch 2.13.0+cpu: CPU build", "stdout"),
    ([("torch", "2.13.0"), ("nvidia-cublas", "13.1.0"), ("triton", "3.6.0")],
     "torch 2.13.0: a CUDA build with nvidia-cublas, triton (was TORCH_INDEX=", "stderr"),
])
def test_the_install_says_which_torch_build_it_got(tmp_path: Path, dists, says: str, stream: str) -> None:
    site = _site(tmp_path / "site", *dists)
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r}); "
                           + _torch_check(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert says in getattr(done, stream), (done.stdout, done.stderr)


def test_a_long_test_says_it_is_still_running_on_the_descriptor_make_test_hands_over(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(
        "import time\nimport pytest\n\n@pytest.fixture\ndef slow_fixture():\n    time.sleep(2.5)\n\n"
        "def test_slow(slow_fixture):\n    time.sleep(3.5)\n\ndef test_fast():\n    pass\n")
    read, write = os.pipe()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-p", "conftest", "-p", "no:cacheprovider", "test_probe.py"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "tests"), "TEST_HEARTBEAT_FD": str(write),
                               "TEST_HEARTBEAT_SECONDS": "1"},
            pass_fds=(write,), capture_output=True, text=True, timeout=120, check=False)
    finally:
        os.close(write)
    with os.fdopen(read) as beats:
        heard = beats.read()
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\.\.\. test_probe\.py::test_slow still setting up: \d+ s", heard), heard
    assert re.search(r"\.\.\. test_probe\.py::test_slow still running: \d+ s", heard), heard
    assert "test_fast" not in heard
