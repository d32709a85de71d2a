"""What fuzzers miss, against a live server with keys, rate limits and a real Redis that is paused, then killed.

Each hostile client gets a stated status, and a well-behaved client probing all along gets 200 every time. The
figures (statuses, counts, the probe's latencies per phase) are printed (`pytest -s`) and, when
`CAMPAIGN_REPORT` names a file, written there as JSON. All traffic goes to 127.0.0.1 and is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

MAX_BODY = 2 * 1024 * 1024
BODY_TIMEOUT = 2.0
SLOW_CLIENTS = 20
CONCURRENT = 200


def _post(port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 60.0
          ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _chunked(port: int, path: str, body: bytes, headers: dict[str, str], chunk: int = 65536) -> int:
    """POST with Transfer-Encoding: chunked (no Content-Length); the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        chunks = (body[i:i + chunk] for i in range(0, len(body), chunk))
        conn.request("POST", path, body=chunks, headers={"Content-Type": "application/json", **headers},
                     encode_chunked=True)
        response = conn.getresponse()
        response.read()
        return response.status
    except (BrokenPipeError, ConnectionResetError):
        return -1
    finally:
        conn.close()


def _slow_client(port: int, key: str, results: list[tuple[int, float]]) -> None:
    """Announce a 100-byte body, then send it a byte a second; record the status and when it came."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: {key}\r\n"
                     "Content-Length: 100\r\n\r\n".encode())
        sock.settimeout(1.0)
        for byte in b'{"text": ["' + b"s" * 89:
            try:
                sock.sendall(bytes([byte]))
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if data:
                results.append((int(data.split(b" ", 2)[1]), time.monotonic() - started))
                return
        results.append((-1, time.monotonic() - started))
    finally:
        sock.close()


class Probe:
    """A well-behaved client: a /predict every 0.2 s, recording status and latency by phase."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.phase = "normal"
        self.samples: list[tuple[str, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            started = time.monotonic()
            try:
                status, _, _ = _post(self.port, "/predict", json.dumps({"text": [f"probe {i % 50}"]}).encode(),
                                     {"X-API-Key": self.key}, timeout=30)
            except OSError:
                status = -1
            self.samples.append((self.phase, status, time.monotonic() - started))
            self._stop.wait(0.2)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _hostile_round(port: int, keys: dict[str, str]) -> dict[str, object]:
    """Every hostile client once; returns what each got."""
    key = {"X-API-Key": keys["hostile"]}
    got: dict[str, object] = {}
    slow: list[tuple[int, float]] = []
    slow_threads = [threading.Thread(target=_slow_client, args=(port, keys["hostile"], slow))
                    for _ in range(SLOW_CLIENTS)]
    for thread in slow_threads:
        thread.start()

    valid = b'{"text": ["at the limit"]}'
    at_limit = valid + b" " * (MAX_BODY - len(valid))
    got["body at limit, Content-Length"] = _post(port, "/predict", at_limit, key)[0]
    got["body over limit, Content-Length"] = _post(port, "/predict", at_limit + b" ", key)[0]
    got["body at limit, chunked"] = _chunked(port, "/predict", at_limit, key)
    got["body over limit, chunked"] = _chunked(port, "/predict", at_limit + b" ", key)
    got["no key"] = _post(port, "/predict", valid, {})[0]
    got["unknown key"] = _post(port, "/predict", valid, {"Authorization": "Bearer mlapi_nope"})[0]
    depth = 100_000
    got["nested JSON depth 1e5"] = _post(port, "/predict", b'{"text": ' + b"[" * depth + b"]" * depth + b"}", key)[0]
    got["1e6-char string"] = _post(port, "/predict", json.dumps({"text": ["x" * 10**6]}).encode(), key)[0]
    got["invalid UTF-8"] = _post(port, "/predict", b'{"text": ["\xff\xfe\xfd"]}', key)[0]
    got["escaped NUL in text"] = _post(port, "/predict", b'{"text": ["a\\u0000b"]}', key)[0]
    got["raw NUL byte in JSON"] = _post(port, "/predict", b'{"text": ["a\x00b"]}', key)[0]
    labels = [f"label {i}" for i in range(1000)]
    got["1,000 labels"] = _post(port, "/query", json.dumps({"sentence": "s", "labels": labels}).encode(), key)[0]

    statuses: list[int] = []
    latencies: list[float] = []
    barrier = threading.Barrier(CONCURRENT)
    lock = threading.Lock()

    def crowd(i: int) -> None:
        barrier.wait(timeout=60)
        started = time.monotonic()
        try:
            status = _post(port, "/predict", json.dumps({"text": [f"crowd {i}"]}).encode(),
                           {"X-API-Key": keys["crowd"]})[0]
        except OSError:
            status = -1
        with lock:
            statuses.append(status)
            latencies.append(time.monotonic() - started)

    crowd_threads = [threading.Thread(target=crowd, args=(i,)) for i in range(CONCURRENT)]
    for thread in crowd_threads:
        thread.start()
    for thread in crowd_threads:
        thread.join(timeout=120)
    got[f"{CONCURRENT} concurrent connections"] = dict(Counter(statuses))
    got[f"{CONCURRENT} concurrent: p50 / max s"] = [round(statistics.median(latencies), 3), round(max(latencies), 3)]

    burst = [_post(port, "/predict", b'{"text": ["burst"]}', {"X-API-Key": keys["burst"]}) for _ in range(30)]
    got["burst of 30 at rate=5"] = dict(Counter(status for status, _, _ in burst))
    refused = next((headers for status, headers, _ in burst if status == 429), None)
    got["burst 429 headers"] = {k: v for k, v in (refused or {}).items() if k.startswith(("retry", "ratelimit"))}
    time.sleep(int((refused or {}).get("retry-after", "1")))
    got["after Retry-After"] = _post(port, "/predict", b'{"text": ["burst"]}', {"X-API-Key": keys["burst"]})[0]

    for thread in slow_threads:
        thread.join(timeout=60)
    got[f"{SLOW_CLIENTS} slow clients, 1 byte/s"] = dict(Counter(status for status, _ in slow))
    got["slow clients answered after (max s)"] = round(max(seconds for _, seconds in slow), 2)
    return got


EXPECTED: dict[str, Callable[[object], bool]] = {
    "body at limit, Content-Length": lambda s: s == 200,
    "body over limit, Content-Length": lambda s: s == 413,
    "body at limit, chunked": lambda s: s == 200,
    "body over limit, chunked": lambda s: s == 413,
    "no key": lambda s: s == 401,
    "unknown key": lambda s: s == 403,
    "nested JSON depth 1e5": lambda s: s == 422,
    "1e6-char string": lambda s: s == 422,
    "invalid UTF-8": lambda s: s == 422,
    "escaped NUL in text": lambda s: s == 200,
    "raw NUL byte in JSON": lambda s: s == 422,
    "1,000 labels": lambda s: s == 422,
    f"{CONCURRENT} concurrent connections": lambda s: s == {200: CONCURRENT},
    "burst of 30 at rate=5": lambda s: isinstance(s, dict) and s.get(200, 0) >= 1 and s.get(429, 0) >= 10
    and set(s) == {200, 429},
    "burst 429 headers": lambda s: isinstance(s, dict)
    and {"retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(s),
    "after Retry-After": lambda s: s == 200,
    f"{SLOW_CLIENTS} slow clients, 1 byte/s": lambda s: s == {408: SLOW_CLIENTS},
}


@pytest.mark.slow
def test_hostile_clients_get_their_status_and_nobody_else_notices(live_server, redis_server) -> None:
    env = {"MLAPI_REDIS_URL": redis_server.url, "MLAPI_RATE_LIMIT_REQUESTS": "1000",
           "MLAPI_RATE_LIMIT_TEXTS": "100000", "MLAPI_BODY_READ_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
           "MLAPI_MAX_BODY_BYTES": str(MAX_BODY)}
    keys = {"probe": "", "hostile": "", "crowd": "", "burst": "rate=5"}
    report: dict[str, object] = {}
    with live_server(keys=keys, **env) as server, Probe(server.port, server.keys["probe"]) as probe:
        assert redis_server.process is not None
        for phase in ("normal", "redis paused", "redis killed"):
            probe.phase = phase
            if phase == "redis paused":
                redis_server.process.send_signal(signal.SIGSTOP)
            if phase == "redis killed":
                redis_server.process.send_signal(signal.SIGCONT)
                redis_server.stop()
            try:
                report[phase] = _hostile_round(server.port, server.keys)
            finally:
                if phase == "redis paused" and redis_server.process is not None:
                    redis_server.process.send_signal(signal.SIGCONT)
            assert server.process.poll() is None, server.output()
        metrics = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        metrics.request("GET", "/metrics")
        exposition = metrics.getresponse().read().decode()
    fallbacks = sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
                    if line.startswith("mlapi_ratelimit_fallback_total{"))
    for phase in ("normal", "redis paused", "redis killed"):
        samples = [(status, seconds) for p, status, seconds in probe.samples if p == phase]
        latencies = sorted(seconds for _, seconds in samples)
        report[f"probe during {phase}"] = {
            "requests": len(samples), "statuses": dict(Counter(status for status, _ in samples)),
            "p50 ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p95 ms": round(1000 * latencies[int(len(latencies) * 0.95)], 1),
            "max ms": round(1000 * latencies[-1], 1),
        }
    report["rate-limit decisions made per replica (Redis away)"] = fallbacks
    print(json.dumps(report, indent=1, default=str))
    if os.environ.get("CAMPAIGN_REPORT"):
        Path(os.environ["CAMPAIGN_REPORT"]).write_text(json.dumps(report, indent=1, default=str))

    failures = [f"{phase}: {name} got {report[phase][name]!r}"  # type: ignore[index]
                for phase in ("normal", "redis paused", "redis killed")
                for name, ok in EXPECTED.items() if not ok(report[phase][name])]  # type: ignore[index]
    assert not failures, "\n".join(failures)
    for phase in ("normal", "redis paused", "redis killed"):
        probe_report = report[f"probe during {phase}"]
        assert probe_report["requests"] > 0 and probe_report["statuses"] == {200: probe_report["requests"]}, (
            phase, probe_report)  # type: ignore[index]
    assert fallbacks > 0
