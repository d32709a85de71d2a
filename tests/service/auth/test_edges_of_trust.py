"""What one client must not learn or decide about another: forwarded addresses, emptied key tables, the internal
Redis address, echoed input, and whether someone else already sent a text."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlapi.auth.keys import NO_KEYS_LINE, KeyStore, generate_key, key_line


def test_x_forwarded_for_from_loopback_does_not_pick_the_rate_limited_address(minilm_dir, live_server) -> None:
    # 4 requests, then 1 a second
    server = live_server(minilm_dir, MLAPI_RATE_LIMIT_REQUESTS="1", MLAPI_RATE_LIMIT_BURST_SECONDS="4")
    try:
        statuses = []
        for i in range(12):
            request = urllib.request.Request(f"{server.base}/predict", data=b'{"text": ["hi"]}', method="POST",
                                             headers={"X-Forwarded-For": f"203.0.113.{i}"})
            try:
                statuses.append(urllib.request.urlopen(request, timeout=10).status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
        # Twelve requests in a few seconds from one address: 4 of burst plus what refills meanwhile, not 12.
        assert statuses.count(200) <= 7 and statuses.count(429) >= 5, statuses
    finally:
        server.stop()


def test_an_emptied_keys_file_keeps_the_last_table_unless_it_says_no_keys(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys.txt"
    path.write_text(key_line("alice", key) + "\n")
    store = KeyStore.from_file(path, reload_seconds=1)
    path.write_text("")  # a truncated write, or an emptied Secret
    assert store.maybe_reload(now=time.monotonic() + 5) is False
    assert store.lookup(key) is not None and store.reload_errors == 1
    path.write_text(f"{NO_KEYS_LINE}\n")
    assert store.maybe_reload(now=time.monotonic() + 10) is True
    assert store.keys == []


def test_health_names_a_redis_failure_without_its_address(make_client, minilm_dir) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with make_client(minilm_dir, redis_url=f"redis://127.0.0.1:{port}/0") as client:
        client.post("/predict", json={"text": ["trip the breaker"]})
        health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert str(port) not in str(health) and "127.0.0.1" not in str(health)
    assert health["cache"]["error"].isidentifier()  # the kind of failure, e.g. ConnectionError


def test_a_long_backend_name_is_refused_without_being_echoed(minilm_client) -> None:
    answer = minilm_client.post(f"/predict?backend={'a' * 65_000}", json={"text": ["hi"]})
    assert answer.status_code == 422
    assert len(answer.content) < 2_000


def test_cache_headers_are_left_out_when_keys_make_the_service_shared(make_client, minilm_dir, tmp_path) -> None:
    key = generate_key()
    path = tmp_path / "keys.txt"
    path.write_text(key_line("alice", key) + "\n")
    with make_client(minilm_dir, api_keys_file=path) as client:
        for _ in range(2):
            answer = client.post("/predict", json={"text": ["did anyone send this?"]}, headers={"X-API-Key": key})
            assert answer.status_code == 200
            assert not {"x-cache-hits", "x-cache-misses", "x-cache-texts"} & set(answer.headers)
    with make_client(minilm_dir, api_keys_file=path, cache_headers="on") as client:
        answer = client.post("/predict", json={"text": ["did anyone send this?"]}, headers={"X-API-Key": key})
        assert answer.headers["x-cache-texts"] in {"hit", "miss"}
