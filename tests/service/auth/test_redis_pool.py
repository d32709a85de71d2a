"""A busy connection pool is not an outage: 200 concurrent calls against a healthy Redis keep the limits shared
and exact, and the cache's circuit breaker shut."""

from __future__ import annotations

import asyncio

from mlapi.auth.ratelimit import Bucket, RateLimiter
from mlapi.engine.cache import RedisCache
from mlapi.metrics import Metrics
from prometheus_client import CollectorRegistry

CONCURRENT = 200


def test_two_hundred_concurrent_requests_admit_exactly_the_capacity(redis_server) -> None:
    registry = CollectorRegistry()

    async def run() -> list[bool]:
        limiter = RateLimiter(registry, redis_server.url, timeout_ms=100, cooldown_seconds=30)
        bucket = Bucket("requests", rate=0.001, capacity=10, cost=1)
        try:
            decisions = await asyncio.gather(*(limiter.take("key:burst", [bucket]) for _ in range(CONCURRENT)))
        finally:
            await limiter.close()
        return [d.allowed for d in decisions]

    admitted = asyncio.run(run())
    assert sum(admitted) == 10
    for reason in ("error", "skipped"):
        assert registry.get_sample_value("mlapi_ratelimit_fallback_total", {"reason": reason}) == 0


def test_two_hundred_concurrent_lookups_keep_the_cache_circuit_shut(redis_server) -> None:
    metrics = Metrics()

    async def run() -> tuple[list[list[bytes | None]], dict[str, object]]:
        cache = RedisCache(redis_server.url, metrics, ttl_seconds=60, timeout_ms=200, cooldown_seconds=30)
        try:
            await cache.set_many({f"k{i}": b"v" for i in range(10)})
            found = await asyncio.gather(*(cache.get_many([f"k{i % 10}", "absent"]) for i in range(CONCURRENT)))
            return found, cache.status()
        finally:
            await cache.close()

    found, status = asyncio.run(run())
    assert status["healthy"] is True
    assert all(values == [b"v", None] for values in found)
    errors = {s.labels["kind"]: s.value for s in metrics.cache_errors.collect()[0].samples if s.name.endswith("_total")}
    assert {kind: n for kind, n in errors.items() if n} == {}
