"""The per-text cache, against the in-process LRU and a real redis-server, including Redis failing mid-test."""

from __future__ import annotations

import re
import threading
import time

import pytest
from mlapi.engine.cache import cache_key

KEY_RE = re.compile(r"^fastapi-cache-project::[0-9a-f]{16}:[0-9a-f]{40}$")


def _metric(client, name: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def redis_client(make_client, minilm_dir, redis_server):  # type: ignore[no-untyped-def]
    with make_client(minilm_dir, redis_url=redis_server.url, redis_cooldown_seconds=0.2,
                     cache_ttl_seconds=600) as client:
        yield client


def test_cache_key_has_prefix_model_and_digest() -> None:
    key = cache_key("fastapi-cache-project", "0123456789abcdef", "predict", "hello")
    assert KEY_RE.match(key)
    assert key != cache_key("fastapi-cache-project", "0123456789abcdef", "embed", "hello")
    assert key != cache_key("fastapi-cache-project", "fedcba9876543210", "predict", "hello")


def test_memory_cache_computes_only_new_texts(minilm_client) -> None:
    first = minilm_client.post("/predict", json={"text": ["alpha text", "beta text"]}).json()
    second = minilm_client.post("/predict", json={"text": ["alpha text", "gamma text", "alpha text"]}).json()
    assert second["predictions"][0] == first["predictions"][0] == second["predictions"][2]
    assert _metric(minilm_client, "mlapi_cache_misses_total") == 3  # alpha, beta, gamma
    assert _metric(minilm_client, "mlapi_cache_hits_total") == 2  # alpha twice in the second request


def test_redis_stores_one_key_per_distinct_text(redis_client, redis_server) -> None:
    redis_client.post("/predict", json={"text": ["one", "two", "one", "three"]})
    keys = sorted(k.decode() for k in redis_server.client().keys("*"))
    assert len(keys) == 3
    assert all(KEY_RE.match(k) for k in keys)


def test_redis_hit_returns_the_stored_answer(redis_client, redis_server) -> None:
    first = redis_client.post("/predict", json={"text": ["cached sentence"]}).json()
    (key,) = redis_server.client().keys("*")
    assert 0 < redis_server.client().ttl(key) <= 600
    second = redis_client.post("/predict", json={"text": ["cached sentence", "new sentence"]}).json()
    assert second["predictions"][0] == first["predictions"][0]
    assert _metric(redis_client, "mlapi_cache_hits_total") == 1
    assert _metric(redis_client, "mlapi_cache_misses_total") == 2


def test_redis_shared_between_servers(make_client, minilm_dir, redis_server) -> None:
    with make_client(minilm_dir, redis_url=redis_server.url) as a:
        a.post("/predict", json={"text": ["shared text"]})
    with make_client(minilm_dir, redis_url=redis_server.url) as b:
        b.post("/predict", json={"text": ["shared text"]})
        assert _metric(b, "mlapi_cache_hits_total") == 1


def test_query_caches_sentence_and_label_embeddings(redis_client, redis_server) -> None:
    redis_client.post("/query", json={"sentence": "I lost my job", "labels": ["happy", "sad"]})
    assert len(redis_server.client().keys("*")) == 3
    redis_client.post("/query", json={"sentence": "I got a raise", "labels": ["sad", "happy"]})
    assert len(redis_server.client().keys("*")) == 4
    assert _metric(redis_client, "mlapi_cache_hits_total") == 2


def test_custom_prefix_and_other_model_use_other_keys(make_client, minilm_dir, classifier_dir, redis_server
                                                      ) -> None:
    with make_client(minilm_dir, redis_url=redis_server.url, cache_prefix="other") as client:
        client.post("/predict", json={"text": ["same text"]})
    with make_client(classifier_dir, redis_url=redis_server.url) as client:
        client.post("/predict", json={"text": ["same text"]})
    keys = [k.decode() for k in redis_server.client().keys("*")]
    assert len(keys) == 2
    assert any(k.startswith("other::") for k in keys)
    assert any(k.startswith("fastapi-cache-project::") for k in keys)


def test_redis_killed_mid_test_still_answers_and_recovers(redis_client, redis_server) -> None:
    assert redis_client.get("/health").json()["status"] == "healthy"
    redis_server.stop()
    started = time.monotonic()
    response = redis_client.post("/predict", json={"text": ["while redis is down"]})
    assert response.status_code == 200
    assert time.monotonic() - started < 2.0
    assert redis_client.post("/predict", json={"text": ["while redis is down"]}).status_code == 200
    health = redis_client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["cache"]["healthy"] is False
    assert _metric(redis_client, "mlapi_cache_errors_total") >= 1

    redis_server.start()
    time.sleep(0.3)  # past the cooldown
    assert redis_client.post("/predict", json={"text": ["after recovery"]}).status_code == 200
    assert redis_client.get("/health").json()["status"] == "healthy"
    assert len(redis_server.client().keys("*")) == 1


def test_redis_unreachable_from_start_serves_uncached(make_client, minilm_dir, unused_port: int) -> None:
    with make_client(minilm_dir, redis_url=f"redis://127.0.0.1:{unused_port}/0") as client:
        assert client.get("/health").json()["status"] == "degraded"  # known before any request
        for _ in range(3):
            assert client.post("/predict", json={"text": ["nobody listens"]}).status_code == 200
        assert client.get("/health").json()["status"] == "degraded"
        assert _metric(client, "mlapi_cache_errors_total") >= 1


def test_slow_redis_is_bounded_by_the_timeout(make_client, minilm_dir, redis_server) -> None:
    with make_client(minilm_dir, redis_url=redis_server.url, redis_timeout_ms=100) as client:
        client.post("/predict", json={"text": ["warm"]})
        blocker = threading.Thread(target=lambda: redis_server.client().execute_command("DEBUG", "SLEEP", "1.5"))
        blocker.start()
        time.sleep(0.1)
        started = time.monotonic()
        response = client.post("/predict", json={"text": ["during a stall"]})
        elapsed = time.monotonic() - started
        blocker.join()
        assert response.status_code == 200
        assert elapsed < 1.0
        assert _metric(client, "mlapi_cache_errors_total") >= 1


def test_full_redis_still_answers(redis_client, redis_server) -> None:
    admin = redis_server.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        response = redis_client.post("/predict", json={"text": ["no room for me"]})
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == 1
        assert _metric(redis_client, "mlapi_cache_errors_total") >= 1
    finally:
        admin.config_set("maxmemory", "0")


def test_hot_text_is_answered_in_process_without_a_redis_round_trip(redis_client, redis_server) -> None:
    first = redis_client.post("/predict", json={"text": ["hot text"]}).json()
    redis_server.stop()  # a round trip now would fail and count an error
    second = redis_client.post("/predict", json={"text": ["hot text"]})
    assert second.status_code == 200
    assert second.json() == first
    assert _metric(redis_client, "mlapi_cache_hits_total") == 1
    assert _metric(redis_client, "mlapi_cache_errors_total") == 0
    redis_server.start()


def test_answers_from_redis_fill_the_in_process_tier(make_client, minilm_dir, redis_server) -> None:
    with make_client(minilm_dir, redis_url=redis_server.url) as writer:
        stored = writer.post("/predict", json={"text": ["from another replica"]}).json()
    with make_client(minilm_dir, redis_url=redis_server.url) as reader:
        assert reader.post("/predict", json={"text": ["from another replica"]}).json() == stored  # via Redis
        redis_server.stop()
        assert reader.post("/predict", json={"text": ["from another replica"]}).json() == stored  # in process
        assert _metric(reader, "mlapi_cache_hits_total") == 2
        assert _metric(reader, "mlapi_cache_errors_total") == 0
        redis_server.start()
