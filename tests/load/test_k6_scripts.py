"""The k6 scripts parse, and read their virtual users and duration from the environment as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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
