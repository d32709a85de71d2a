"""Shadow between two real `mlapi serve` processes with different models, and with a candidate that is slow or down.

The primary serves the bundled MiniLM (zero-shot POSITIVE / NEGATIVE); the candidate the tiny random classifier
(NEGATIVE / NEUTRAL / POSITIVE), so they disagree on many texts. Under concurrent load every text is mirrored
(`MLAPI_SHADOW_FRACTION=1`), and the primary's counts equal what comparing the two servers' own answers gives.
Then the candidate is slow (a loopback server that answers after `SLOW_SECONDS`) or down (a closed port): the
primary's answers are byte-for-byte those of a primary without shadowing, measured side by side on the same
requests, its latency stays in line with that primary's, and the errors and drops are counted.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from mlapi.auth.keys import generate_key, key_line
from mlapi.shadow.compare import compare
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

# The slow candidate answers /predict after this long; the primary gives up on it after SHADOW_TIMEOUT.
SLOW_SECONDS = 30.0
SHADOW_TIMEOUT = 3.0
SLOW_HASH = "5105" * 16

_ADJECTIVES = ["wonderful", "awful", "fine", "boring", "brilliant", "terrible", "okay", "moving", "dull", "great"]


def _texts(round_: int, n: int) -> list[str]:
    return [f"round {round_} item {i}: the film was {_ADJECTIVES[(round_ * n + i) % len(_ADJECTIVES)]}"
            for i in range(n)]


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def _total(base: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    return sum(value for (sample, sample_labels), value in _samples(base).items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def _wait_for(condition, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.2)


def test_mirrored_texts_are_counted_as_comparing_both_servers_answers_gives(minilm_dir, classifier_dir, live_server
                                                                            ) -> None:
    # The candidate requires API keys, as the stacks run it; the primary has a key of its own there.
    shadow_key, other_key = generate_key(), generate_key()
    candidate = live_server(classifier_dir, MLAPI_INTRA_OP_THREADS="1",
                            MLAPI_API_KEYS=f"{key_line('shadow', shadow_key)};{key_line('other', other_key)}")
    primary = live_server(minilm_dir, MLAPI_SHADOW_URL=f"{candidate.base}/", MLAPI_SHADOW_FRACTION="1",
                          MLAPI_SHADOW_QUEUE="100000", MLAPI_INTRA_OP_THREADS="1", MLAPI_SHADOW_API_KEY=shadow_key)
    try:
        label = httpx.get(f"{candidate.base}/health", timeout=10).json()["model"]["content_hash"]
        _wait_for(lambda: httpx.get(f"{primary.base}/health", timeout=10).json()["shadow"]["candidate"] == label)

        rounds = [_texts(r, 5) for r in range(40)]  # 200 distinct texts, 40 requests from 4 clients at once
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(
                lambda texts: client.post(f"{primary.base}/predict", json={"text": texts}).json()["predictions"],
                rounds,
            ))
        texts = [t for r in rounds for t in r]
        ours = [a for answer in answers for a in answer]
        _wait_for(lambda: _total(primary.base, "mlapi_shadow_texts_total", candidate=label) == len(texts))

        # What the candidate says of each text when asked directly (it has no shadow of its own).
        theirs = httpx.post(f"{candidate.base}/predict", json={"text": texts}, timeout=60,
                            headers={"X-API-Key": other_key}).json()["predictions"]
        expected = [compare(o, t) for o, t in zip(ours, theirs, strict=True)]
        flips = sum(result.outcome == "flip" for result in expected)
        assert 0 < flips < len(texts)
        assert _total(primary.base, "mlapi_shadow_texts_total", candidate=label, outcome="flip") == flips
        assert _total(primary.base, "mlapi_shadow_texts_total", candidate=label, outcome="agree") == len(texts) - flips
        assert _total(primary.base, "mlapi_shadow_texts_total", outcome="error") == 0
        # Every mirrored text reached the candidate's model under the primary's key, and only there.
        assert _total(candidate.base, "mlapi_key_texts_total", key="shadow") == len(texts)
        assert _total(primary.base, "mlapi_shadow_dropped_texts_total") == 0
        assert _total(primary.base, "mlapi_shadow_score_difference_count", candidate=label) == len(texts)
        assert _total(primary.base, "mlapi_shadow_score_difference_sum", candidate=label) == pytest.approx(
            sum(result.difference for result in expected), abs=1e-6)

        # Which model is live, on each side, from /health and /metrics.
        health = httpx.get(f"{primary.base}/health", timeout=10).json()
        manifest = json.loads((Path(minilm_dir) / "manifest.json").read_text())
        assert health["model"]["content_hash"] == manifest["content_hash"][:16]
        assert health["model"]["source"] == manifest["source"]
        assert health["shadow"]["candidate_model"]["content_hash"] == label
        assert _total(primary.base, "mlapi_model_info", content_hash=manifest["content_hash"][:16]) == 1
        assert _total(primary.base, "mlapi_shadow_candidate_info", candidate=label) == 1
    finally:
        primary.stop()
        candidate.stop()


class _SlowCandidate(BaseHTTPRequestHandler):
    """A candidate whose /health answers at once and whose /predict answers only after SLOW_SECONDS."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer({"status": "healthy", "model": {"source": "slow", "revision": "r", "content_hash": SLOW_HASH}})

    def do_POST(self) -> None:  # noqa: N802
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"]
        time.sleep(SLOW_SECONDS)
        self._answer({"predictions": [[{"label": "POSITIVE", "score": 1.0}] for _ in texts]})

    def _answer(self, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the primary gave up on this request long ago

    def log_message(self, *args: object) -> None:
        pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_slow_or_absent_candidate_changes_no_answer_and_adds_no_latency(minilm_dir, live_server) -> None:
    slow = ThreadingHTTPServer(("127.0.0.1", 0), _SlowCandidate)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    common = {"MLAPI_CACHE_ENABLED": "false", "MLAPI_INTRA_OP_THREADS": "1"}
    shadowed = {"MLAPI_SHADOW_FRACTION": "1", "MLAPI_SHADOW_TIMEOUT_SECONDS": str(SHADOW_TIMEOUT),
                "MLAPI_SHADOW_QUEUE": "8"}
    servers = {
        "baseline": live_server(minilm_dir, **common),
        "slow": live_server(minilm_dir, **common, **shadowed,
                            MLAPI_SHADOW_URL=f"http://127.0.0.1:{slow.server_address[1]}/project"),
        "down": live_server(minilm_dir, **common, **shadowed, MLAPI_SHADOW_URL=f"http://127.0.0.1:{_closed_port()}"),
    }
    try:
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        bodies: dict[str, list[bytes]] = {name: [] for name in servers}
        with httpx.Client(timeout=120) as client:
            for round_ in range(40):
                body = json.dumps({"text": _texts(round_, 4)}).encode()
                # The same request to each in turn, starting with another each round: whatever else loads the
                # machine loads all three alike.
                names = list(servers)
                for name in names[round_ % 3:] + names[: round_ % 3]:
                    server = servers[name]
                    started = time.perf_counter()
                    response = client.post(f"{server.base}/predict", content=body)
                    latencies[name].append(time.perf_counter() - started)
                    assert response.status_code == 200, (name, response.text)
                    bodies[name].append(response.content)

        # The same answers, byte for byte, as the primary without a shadow gives.
        assert bodies["slow"] == bodies["baseline"]
        assert bodies["down"] == bodies["baseline"]
        # No request waited for the candidate: none took as long as the slow candidate takes to answer, and the
        # typical request is in line with the unshadowed primary's, measured side by side.
        baseline = statistics.median(latencies["baseline"])
        for name in ("slow", "down"):
            assert max(latencies[name]) < SLOW_SECONDS, (name, max(latencies[name]))
            assert statistics.median(latencies[name]) < 2 * baseline + 0.1, (name, latencies[name], baseline)

        # The slow candidate: mirrored requests time out (error), and with the queue full, texts are dropped.
        slow_base = servers["slow"].base
        _wait_for(lambda: _total(slow_base, "mlapi_shadow_errors_total", reason="timeout") > 0, SLOW_SECONDS)
        label = SLOW_HASH[:16]
        assert _total(slow_base, "mlapi_shadow_texts_total", candidate=label, outcome="error") > 0
        assert _total(slow_base, "mlapi_shadow_dropped_texts_total", candidate=label) > 0
        assert _total(slow_base, "mlapi_shadow_texts_total", outcome="agree") == 0
        # The absent candidate: every mirrored text is an error (unreachable); nothing ever compared.
        down_base = servers["down"].base
        _wait_for(lambda: _total(down_base, "mlapi_shadow_queue_texts") == 0)
        down_errors = _total(down_base, "mlapi_shadow_texts_total", candidate="unknown", outcome="error")
        down_dropped = _total(down_base, "mlapi_shadow_dropped_texts_total")
        assert down_errors > 0 and down_errors + down_dropped == 40 * 4
        assert _total(down_base, "mlapi_shadow_errors_total", reason="unreachable") > 0
        assert httpx.get(f"{down_base}/health", timeout=10).json()["status"] == "healthy"
    finally:
        for server in servers.values():
            server.stop(graceful=False)
        slow.shutdown()


def test_a_server_mirroring_to_itself_mirrors_each_text_once(minilm_dir, tmp_path: Path) -> None:
    # The shape of a Deployment whose copy (Flagger's primary) took its shadow setting along: mirrored requests
    # carry a header and are never mirrored again, so there is no loop.
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")}
    env.update(TOKENIZERS_PARALLELISM="false", MLAPI_SHADOW_URL=f"http://127.0.0.1:{port}", MLAPI_SHADOW_FRACTION="1",
               MLAPI_INTRA_OP_THREADS="1")
    log = (tmp_path / "self.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir), "--port",
                                str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert process.poll() is None, "mlapi serve exited"
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(ready)
        texts = _texts(0, 10)
        assert httpx.post(f"{base}/predict", json={"text": texts}, timeout=60).status_code == 200
        assert httpx.post(f"{base}/onnx/infer", json={"input": "one more"}, timeout=60).status_code == 200
        _wait_for(lambda: _total(base, "mlapi_shadow_texts_total", outcome="agree") == 11)
        _wait_for(lambda: _total(base, "mlapi_shadow_queue_texts") == 0)
        # 10 + 1 texts from the client, the same 11 once more from its own mirror, and not again.
        assert _total(base, "mlapi_texts_total", route="predict") == 10 + 11
        assert _total(base, "mlapi_shadow_texts_total", outcome="flip") == 0
    finally:
        process.kill()
        process.wait(timeout=30)
        log.close()
