"""Rate limits: token buckets per key or address, shared through a real Redis, per replica when Redis is gone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from mlapi.auth.access import count_texts, parse_body
from mlapi.auth.keys import generate_key, key_line
from mlapi.auth.ratelimit import Bucket, LocalBuckets, RateLimiter
from prometheus_client import CollectorRegistry

PREDICT = {"text": ["rate limited text"]}


def test_local_bucket_admits_the_burst_then_refuses_then_refills() -> None:
    buckets = LocalBuckets()
    spec = [Bucket("requests", rate=2.0, capacity=4.0, cost=1.0)]
    decisions = [buckets.take("a", spec, now=100.0) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert decisions[3].remaining == 0 and decisions[4].retry_after == pytest.approx(0.5)
    assert decisions[4].headers()["Retry-After"] == "1"
    assert buckets.take("b", spec, now=100.0).allowed  # another client has its own bucket
    assert buckets.take("a", spec, now=100.5).allowed  # half a second refills one token
    refilled = buckets.take("a", spec, now=200.0)
    assert refilled.allowed and refilled.remaining == 3.0


def test_a_request_needs_both_buckets_and_a_refusal_spends_nothing() -> None:
    buckets = LocalBuckets()
    spec = [Bucket("requests", 10.0, 10.0, 1.0), Bucket("texts", 1.0, 5.0, 4.0)]
    assert buckets.take("a", spec, now=0.0).allowed
    refused = buckets.take("a", spec, now=0.0)
    assert not refused.allowed and refused.bucket == "texts"
    assert refused.retry_after == pytest.approx(3.0)
    small = [Bucket("requests", 10.0, 10.0, 1.0), Bucket("texts", 1.0, 5.0, 1.0)]
    allowed = buckets.take("a", small, now=0.0)
    assert allowed.allowed  # the refused request spent neither bucket
    assert allowed.bucket == "texts" and allowed.remaining == 0.0


def test_texts_are_counted_whatever_the_field_names() -> None:
    assert count_texts(parse_body(b'{"text": ["a", "b", "c"]}')) == 3
    assert count_texts(parse_body(b'{"sentence": "s", "labels": ["x", "y"]}')) == 3
    assert count_texts(parse_body(b'{"input": "one"}')) == 1
    assert count_texts(parse_body(b'["a", "b"]')) == 2
    assert count_texts(parse_body(b"not json")) == 1
    assert count_texts(parse_body(b"[" * 5000 + b"]" * 5000)) == 1  # too deep to parse: counts one; validation refuses


def test_shared_buckets_in_redis_span_replicas(redis_server) -> None:
    async def run() -> list[bool]:
        replicas = [RateLimiter(CollectorRegistry(), redis_server.url) for _ in range(2)]
        spec = [Bucket("requests", rate=0.5, capacity=3.0, cost=1.0)]
        try:
            return [(await replicas[i % 2].take("key:alice", spec)).allowed for i in range(5)]
        finally:
            for replica in replicas:
                await replica.close()

    assert asyncio.run(run()) == [True, True, True, False, False]
    assert redis_server.client().keys("mlapi-ratelimit:{key:alice}:requests")


def test_redis_unreachable_falls_back_per_replica_and_counts_it(redis_server) -> None:
    async def run() -> tuple[list[bool], float]:
        registry = CollectorRegistry()
        limiter = RateLimiter(registry, redis_server.url, timeout_ms=100, cooldown_seconds=30)
        spec = [Bucket("requests", rate=0.1, capacity=2.0, cost=1.0)]
        try:
            assert (await limiter.take("addr:1", spec)).allowed
            redis_server.stop()
            started = time.monotonic()
            allowed = [(await limiter.take("addr:1", spec)).allowed for _ in range(4)]
            elapsed = time.monotonic() - started
            assert registry.get_sample_value("mlapi_ratelimit_fallback_total", {"reason": "error"}) == 1.0
            assert registry.get_sample_value("mlapi_ratelimit_fallback_total", {"reason": "skipped"}) == 3.0
            return allowed, elapsed
        finally:
            await limiter.close()

    allowed, elapsed = asyncio.run(run())
    # The local bucket starts full: the replica admits its own burst, then refuses; one failed call, then none.
    assert allowed == [True, True, False, False]
    assert elapsed < 5


def test_burst_over_the_limit_gets_429_with_headers_then_recovers(make_client, minilm_dir, redis_server) -> None:
    with make_client(minilm_dir, redis_url=redis_server.url, rate_limit_requests=2,
                     rate_limit_burst_seconds=1) as client:
        answers = [client.post("/predict", json=PREDICT) for _ in range(4)]
        assert [a.status_code for a in answers[:2]] == [200, 200]
        assert answers[0].headers["ratelimit-limit"] == "2"
        assert answers[1].headers["ratelimit-remaining"] == "0"
        refused = next(a for a in answers if a.status_code == 429)
        body = refused.json()
        assert body["error_type"] == "rate_limited" and body["detail"] == body["error"]
        assert int(refused.headers["retry-after"]) >= 1
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(refused.headers)
        assert client.get("/health").status_code == 200  # probes are never limited
        time.sleep(1.1)
        assert client.post("/predict", json=PREDICT).status_code == 200
        assert redis_server.client().keys("fastapi-cache-project:ratelimit:{addr:testclient}:requests")
        metrics = client.get("/metrics").text
        assert 'mlapi_rate_limited_total{bucket="requests"}' in metrics


def test_texts_per_second_limit_counts_texts(make_client, minilm_dir) -> None:
    with make_client(minilm_dir, rate_limit_texts=1, max_batch=4, max_labels=3) as client:
        assert client.post("/predict", json={"text": ["a", "b", "c", "d"]}).status_code == 200
        refused = client.post("/query", json={"sentence": "s", "labels": ["x"]})
        assert refused.status_code == 429
        assert "texts" in refused.json()["error"]
        assert refused.headers["ratelimit-limit"] == "4"  # at least one full request fits the bucket


def test_limits_are_per_key_with_the_keys_own_rate(make_client, minilm_dir, tmp_path: Path) -> None:
    slow, fast = generate_key(), generate_key()
    path = tmp_path / "keys"
    path.write_text(f"{key_line('slow', slow, rate=1)}\n{key_line('fast', fast)}\n")
    with make_client(minilm_dir, api_keys_file=path, rate_limit_requests=50, rate_limit_burst_seconds=1) as client:
        statuses = [client.post("/predict", json=PREDICT, headers={"X-API-Key": slow}).status_code for _ in range(3)]
        assert statuses[0] == 200 and 429 in statuses
        fast_statuses = [client.post("/predict", json=PREDICT, headers={"X-API-Key": fast}).status_code
                         for _ in range(5)]
        assert fast_statuses == [200] * 5
        # Unauthenticated requests are refused before they can spend anyone's bucket.
        assert client.post("/predict", json=PREDICT).status_code == 401
