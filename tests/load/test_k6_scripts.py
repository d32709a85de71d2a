"""The k6 scripts parse, read their virtual users and duration from the environment as documented, and send the
API key every stack requires (API_KEY, as X-API-Key), stopping at once when the server refuses it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bench
import pytest

LOAD_DIR = Path(bench.__file__).resolve().parent


def _inspect(script: str, *env: str) -> dict[str, object]:
    try:
        k6 = bench.k6_bin()
    except SystemExit:
        pytest.skip("k6 is not installed")
    argv = [k6, "inspect", *[arg for pair in env for arg in ("-e", pair)], str(LOAD_DIR / script)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_predict_unique_takes_vus_and_duration_from_env() -> None:
    options = _inspect("predict_unique.js", "VUS=32", "DURATION=7s")
    assert (options["vus"], options["duration"]) == (32, "7s")
    assert set(options["thresholds"]) == {"checks", "http_req_failed"}


def test_seed_profile_runs_ten_users_with_the_seeds_thresholds() -> None:
    options = _inspect("seed_profile.js", "DURATION=5s")
    assert (options["vus"], options["duration"]) == (10, "5s")
    assert options["thresholds"]["checks"] == ["rate>0.99"]
    assert "http_req_failed" in options["thresholds"]


def test_every_scenario_script_exists() -> None:
    scripts = {s.script for spec in bench.SERVERS for phase in spec.phases for s in phase.scenarios}
    assert all((LOAD_DIR / script).is_file() for script in scripts)
    assert sys.executable


def test_mixed_takes_vus_and_duration_from_env() -> None:
    options = _inspect("mixed.js", "VUS=3", "DURATION=4s")
    assert (options["vus"], options["duration"]) == (3, "4s")
    assert options["thresholds"]["checks"] == ["rate>0.99"]


def test_spike_ramps_to_four_times_the_seeds_users_in_ten_seconds_and_back() -> None:
    stages = _inspect("spike.js")["scenarios"]["spike"]
    assert stages["startVUs"] == 10
    assert stages["stages"] == [
        {"duration": "30s", "target": 10},
        {"duration": "10s", "target": 40},
        {"duration": "0s", "target": 40},
        {"duration": "10s", "target": 10},
        {"duration": "30s", "target": 10},
    ]


def test_spike_keeps_a_p95_and_error_rate_per_window() -> None:
    thresholds = _inspect("spike.js", "BASELINE=4s", "RAMP=2s", "RECOVERY=4s", "WINDOW_S=1")["thresholds"]
    windows = {name for name in thresholds if name.startswith("http_req_duration{window:")}
    assert len(windows) == 13  # 12 s in 1 s windows, plus the one k6 stops in
    assert "shed_503{phase:spike}" in thresholds


class _KeyedPredict(BaseHTTPRequestHandler):
    """/predict answering like mlapi behind API keys: 401 without the key, one prediction list per text with it."""

    key = "mlapi_the-right-key"
    seen: list[str | None] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"]
        type(self).seen.append(self.headers.get("X-API-Key"))
        if self.headers.get("X-API-Key") != type(self).key:
            status, body = 401, {"detail": "API key required", "error": "unauthorized"}
        else:
            status, body = 200, {"predictions": [[{"label": "POSITIVE", "score": 0.9},
                                                  {"label": "NEGATIVE", "score": 0.1}] for _ in texts]}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("api_key", "passes"), [("mlapi_the-right-key", True), ("mlapi_a-wrong-key", False)])
def test_seed_profile_sends_api_key_and_stops_at_once_when_it_is_refused(api_key: str, passes: bool) -> None:
    try:
        k6 = bench.k6_bin()
    except SystemExit:
        pytest.skip("k6 is not installed")
    handler = type("Handler", (_KeyedPredict,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            [k6, "run", "--quiet", "-e", f"BASE_URL=http://127.0.0.1:{server.server_address[1]}", "-e", "VUS=1",
             "-e", "THINK_S=0.2", "--duration", "2s", str(LOAD_DIR / "seed_profile.js")],
            env={**os.environ, "API_KEY": api_key}, capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert set(handler.seen) == {api_key}
    if passes:
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(handler.seen) > 2
    else:
        # Aborted in setup: one request, and the reason in the output, instead of 30 s of 401s.
        assert done.returncode != 0
        assert handler.seen == [api_key]
        assert "answered 401" in done.stdout + done.stderr


# Every k6 script and the short run that exercises it against a real server (a few seconds each).
_SCRIPT_RUNS = {
    "seed_profile.js": ["VUS=1", "DURATION=2s", "THINK_S=0.1"],
    "predict_unique.js": ["VUS=1", "DURATION=2s"],
    "mixed.js": ["VUS=1", "DURATION=2s"],
    "spike.js": ["VUS=1", "BASELINE=1s", "RAMP=1s", "RECOVERY=1s", "WINDOW_S=1", "THINK_S=0.1"],
}


def test_every_k6_script_is_covered_by_the_key_runs() -> None:
    # texts.js and keys.js are modules the scripts import; every file with a default function is a script.
    scripts = {p.name for p in LOAD_DIR.glob("*.js") if "export default function" in p.read_text()}
    assert scripts == set(_SCRIPT_RUNS)


@pytest.fixture(scope="module")
def keyed_mlapi(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real `mlapi serve` that requires API keys, as every stack does: (base URL, the one key it accepts)."""
    from mlapi.auth.keys import generate_key, key_line

    key = generate_key()
    port = _free_port()
    log = (tmp_path_factory.mktemp("keyed") / "mlapi.log").open("wb")
    env = bench.server_env({"MLAPI_API_KEYS": key_line("load", key), "TOKENIZERS_PARALLELISM": "false"})
    process = subprocess.Popen([sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir),
                                "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, f"mlapi did not start; see {log.name}"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield base, key
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _auth_failures(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlapi_auth_failures_total{"))


def _run(script: str, base: str, api_key: str | None) -> subprocess.CompletedProcess[str]:
    try:
        k6 = bench.k6_bin()
    except SystemExit:
        pytest.skip("k6 is not installed")
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    settings = [f"BASE_URL={base}", *_SCRIPT_RUNS[script], *([f"API_KEY={api_key}"] if api_key else [])]
    return subprocess.run([k6, "run", "--quiet", *[a for s in settings for a in ("-e", s)], str(LOAD_DIR / script)],
                          env={**env, "K6_NO_USAGE_REPORT": "true"}, capture_output=True, text=True, timeout=180,
                          check=False)


@pytest.mark.parametrize(("api_key", "status"), [(None, 401), ("mlapi_not-a-key-the-server-knows", 403)])
@pytest.mark.parametrize("script", sorted(_SCRIPT_RUNS))
def test_script_with_no_or_an_unknown_key_stops_at_the_first_refusal_saying_to_set_api_key(
    keyed_mlapi, script: str, api_key: str | None, status: int
) -> None:
    base, _ = keyed_mlapi
    before = _auth_failures(base)
    done = _run(script, base, api_key)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"answered {status}" in output and "API_KEY" in output, output
    # One refused request, in setup, instead of a whole run of them.
    assert _auth_failures(base) - before == 1


@pytest.mark.parametrize("script", sorted(_SCRIPT_RUNS))
def test_script_with_the_key_runs_through_without_a_refusal(keyed_mlapi, script: str) -> None:
    base, key = keyed_mlapi
    before = _auth_failures(base)
    done = _run(script, base, key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _auth_failures(base) == before


@pytest.mark.parametrize(("api_key", "status"), [(None, 401), ("mlapi_not-a-key-the-server-knows", 403), ("", 200)])
def test_locustfile_sends_api_key_and_stops_at_the_first_refusal(keyed_mlapi, tmp_path, api_key, status) -> None:
    base, key = keyed_mlapi
    locust = Path(sys.executable).parent / "locust"
    if not locust.exists():
        pytest.skip("locust is not installed (dev extra)")
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    if api_key is not None:
        env["API_KEY"] = api_key or key
    before = _auth_failures(base)
    done = subprocess.run(
        [str(locust), "-f", str(LOAD_DIR / "locustfile.py"), "--host", base, "--headless", "-u", "2", "-r", "2",
         "-t", "4s", "--only-summary", "--csv", str(tmp_path / "locust"), "--exit-code-on-error", "1"],
        env={**env, "THINK_S": "0.2"}, capture_output=True, text=True, timeout=120, check=False,
    )
    refused = _auth_failures(base) - before
    if status == 200:
        assert done.returncode == 0 and refused == 0, done.stderr
        rows = {row.split(",")[1]: row.split(",") for row in (tmp_path / "locust_stats.csv").read_text().splitlines()}
        assert int(rows["/query"][2]) > 0 and int(rows["/query"][3]) == 0
    else:
        # Stopped at the first refusals (one per user already started), not after 4 s of them.
        assert done.returncode != 0 and 1 <= refused <= 2, done.stderr
        assert f"answered {status}" in done.stderr and "API_KEY" in done.stderr, done.stderr


class _InfinityClassify(BaseHTTPRequestHandler):
    """POST /classify answering as infinity-emb does: {"data": [[{label, score}, ...] per input]}."""

    seen: list[tuple[str, list[str]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        inputs = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["input"]
        type(self).seen.append((self.path, inputs))
        rows = [[{"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.1}] for _ in inputs]
        payload = json.dumps({"object": "classify", "data": rows, "model": "m"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_predict_unique_speaks_infinity_emb_classify_api_when_asked() -> None:
    try:
        k6 = bench.k6_bin()
    except SystemExit:
        pytest.skip("k6 is not installed")
    handler = type("Handler", (_InfinityClassify,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            [k6, "run", "--quiet", "-e", f"BASE_URL=http://127.0.0.1:{server.server_address[1]}", "-e", "VUS=1",
             "-e", "API=infinity", "-e", "DURATION=1s", str(LOAD_DIR / "predict_unique.js")],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stdout + done.stderr  # its checks (one prediction list per text) passed
    assert handler.seen and {path for path, _ in handler.seen} == {"/classify"}
    assert all(len(inputs) == 1 for _, inputs in handler.seen)
    assert len({inputs[0] for _, inputs in handler.seen}) == len(handler.seen)  # every text new
