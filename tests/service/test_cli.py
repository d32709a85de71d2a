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


def test_serve_on_an_unbaked_checkpoint_hints_a_bake_into_its_own_directory(tmp_path) -> None:
    # `mlapi bake --out DIR` replaces DIR: the hint must read from the checkpoint, never write over it.
    checkpoint = tmp_path / "my-ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", "./my-ckpt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "`mlapi bake my-ckpt --out models/my-ckpt`" in result.stderr, result.stderr
    assert "`mlapi serve --model-dir models/my-ckpt`" in result.stderr
    assert "--out my-ckpt" not in result.stderr and "--out ./my-ckpt" not in result.stderr
    assert (checkpoint / "config.json").read_text() == "{}"


def test_serve_on_a_checkpoint_under_models_hints_a_directory_beside_it(tmp_path) -> None:
    checkpoint = tmp_path / "models" / "my-ckpt"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", "models/my-ckpt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "`mlapi bake models/my-ckpt --out models/my-ckpt-baked`" in result.stderr, result.stderr


def test_serve_on_a_missing_directory_hints_a_bake_into_it(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(tmp_path / "fresh")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert f"`mlapi bake [SOURCE] --out {tmp_path / 'fresh'}`" in result.stderr, result.stderr


# What `pulumi install` puts into .venv (infra/requirements.txt: the package with its `infra` extra): none of the
# service's runtime or bake dependencies. docs/deploy.md creates keys there with `.venv/bin/mlapi keys create`.
_NOT_IN_THE_INFRA_ENVIRONMENT = ("pydantic", "pydantic_settings", "fastapi", "starlette", "uvicorn", "onnxruntime",
                                 "tokenizers", "numpy", "redis", "orjson", "prometheus_client", "torch",
                                 "transformers", "yaml")
_INFRA_ENVIRONMENT = f"""
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {_NOT_IN_THE_INFRA_ENVIRONMENT + ("boto3", "botocore", "huggingface_hub")!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, _Absent())
"""
_WITHOUT_RUNTIME = _INFRA_ENVIRONMENT + """
from mlapi.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_keys_create_works_where_only_the_infra_extra_is_installed() -> None:
    from mlapi.auth.keys import KeyStore, parse_keys

    result = subprocess.run([sys.executable, "-c", _WITHOUT_RUNTIME, "keys", "create", "ci-deploy", "--rate", "5"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    key = next(line for line in lines if line.startswith("mlapi_"))
    entry = next(line for line in lines if line.startswith("ci-deploy "))
    store = KeyStore(parse_keys(entry))
    found = store.lookup(key)
    assert found is not None and found.name == "ci-deploy" and found.rate == 5


def test_model_source_rules_work_where_only_the_infra_extra_is_installed() -> None:
    # The infra program validates services[].modelId at preview with bake's own rules, without bake's libraries.
    script = _INFRA_ENVIRONMENT + """
from mlapi.build.sources import SourceError, is_commit_sha, parse_source, revision_problem
print(parse_source("s3://team-models/ft", check_disk=False).kind, parse_source("acme/ft", check_disk=False).kind,
      parse_source("./models/ft", check_disk=False).kind)
print(is_commit_sha("0123456789abcdef0123456789abcdef01234567"), revision_problem("acme/ft", "main"))
try:
    parse_source("s3://Bad_Bucket/x", check_disk=False)
except SourceError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    kinds, revision, bucket = result.stdout.splitlines()
    assert kinds == "s3 hub local"
    assert revision.startswith("True acme/ft: revision 'main' is a branch or tag, not a commit SHA")
    assert "is not an S3 bucket name" in bucket


def test_the_guard_itself_refuses_the_service_runtime() -> None:
    # The same guard around `mlapi serve`, which does need pydantic: it must fail, or the test above proves nothing.
    result = subprocess.run([sys.executable, "-c", _WITHOUT_RUNTIME, "serve", "--model-dir", "/nonexistent"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "No module named 'pydantic" in result.stderr


def test_serve_on_a_busy_port_says_so_at_once_naming_the_flag(minilm_dir, unused_port: int) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", unused_port))
        holder.listen()
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir), "--port", str(unused_port)],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{unused_port} is already in use" in result.stderr
    assert "--port" in result.stderr
    # The port is checked before the model loads: nothing of the load or of uvicorn is printed.
    assert "model ready" not in result.stdout + result.stderr and "Errno" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 100


def test_serve_names_the_model_dir_flag_when_it_was_given(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(tmp_path / "nothing")],
        env={k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("invalid configuration: --model-dir (MLAPI_MODEL_DIR): ")
    assert "is not a baked model directory" in result.stderr


def test_serve_names_the_variable_when_the_model_dir_came_from_it(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")}
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve"], env={**env, "MLAPI_MODEL_DIR": str(tmp_path / "nothing")},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "MLAPI_MODEL_DIR (or --model-dir)" in result.stderr


def test_serve_names_the_port_flag_for_a_bad_port(minilm_dir) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir), "--port", "70000"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "invalid configuration: --port (MLAPI_PORT): " in result.stderr
