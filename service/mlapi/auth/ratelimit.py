"""Token buckets of requests and of texts per second, per API key (or client address), shared across replicas.

With Redis (`MLAPI_REDIS_URL`) every replica spends from the same buckets: one Lua script checks and debits both
buckets atomically in one round trip, timed by Redis's own clock so replicas' clocks do not matter. When Redis is
unreachable, slow or paused, each replica falls back to its own in-process buckets for a cooldown (fail-open: the
service keeps answering, each replica enforcing the limit on its own share) and counts it in
`mlapi_ratelimit_fallback_total`.

A request is admitted only if every bucket it draws from holds enough tokens; a refused request spends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from mlapi.redis_gate import POOL_CONNECTIONS, PoolBusy, RedisGate

log = logging.getLogger(__name__)

# KEYS: one hash per bucket. ARGV: rate, capacity, cost for each bucket in KEYS order.
# Returns {allowed (1/0), seconds to wait, tokens left in each bucket...} as strings (Lua numbers become integers).
_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local tokens = {}
local wait = 0
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i - 2])
  local capacity = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local level = tonumber(state[1])
  local ts = tonumber(state[2])
  if level == nil or ts == nil then
    level = capacity
    ts = now
  end
  level = math.min(capacity, level + math.max(0, now - ts) * rate)
  tokens[i] = level
  if level < cost then
    wait = math.max(wait, (cost - level) / rate)
  end
end
local allowed = 0
if wait == 0 then allowed = 1 end
local out = {tostring(allowed), tostring(wait)}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i - 2])
  local capacity = tonumber(ARGV[3 * i - 1])
  if allowed == 1 then tokens[i] = tokens[i] - tonumber(ARGV[3 * i]) end
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(capacity / rate * 1000) + 1000)
  out[#out + 1] = tostring(tokens[i])
end
return out
"""


@dataclass(frozen=True)
class Bucket:
    """One limit: `rate` tokens per second, holding at most `capacity`; a request costs `cost` tokens."""

    kind: str  # "requests" or "texts"
    rate: float
    capacity: float
    cost: float


@dataclass(frozen=True)
class Decision:
    """The outcome for one request, and what the RateLimit-* headers say about the tightest bucket."""

    allowed: bool
    retry_after: float
    limit: float
    remaining: float
    reset: float
    bucket: str

    def headers(self) -> dict[str, str]:
        """IETF draft RateLimit headers (and Retry-After when refused), in whole units."""
        headers = {
            "RateLimit-Limit": str(int(self.limit)),
            "RateLimit-Remaining": str(max(0, math.floor(self.remaining))),
            "RateLimit-Reset": str(max(0, math.ceil(self.reset))),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def decide(buckets: list[Bucket], allowed: bool, wait: float, levels: list[float]) -> Decision:
    """Report the bucket that refused (the longest wait), or, when admitted, the one closest to empty."""
    if not allowed:
        index = max(range(len(buckets)), key=lambda i: (buckets[i].cost - levels[i]) / buckets[i].rate)
    else:
        index = min(range(len(buckets)), key=lambda i: levels[i] / buckets[i].capacity)
    bucket, level = buckets[index], levels[index]
    return Decision(allowed, wait, bucket.capacity, level, (bucket.capacity - level) / bucket.rate, bucket.kind)


class LocalBuckets:
    """In-process token buckets: the fallback when Redis cannot be reached. Bounded to `max_clients` identities."""

    def __init__(self, max_clients: int = 10_000) -> None:
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_clients

    def take(self, identity: str, buckets: list[Bucket], now: float | None = None) -> Decision:
        """Check and debit `buckets` for `identity`, as the Lua script does."""
        now = time.monotonic() if now is None else now
        levels: list[float] = []
        wait = 0.0
        for bucket in buckets:
            level, ts = self._state.get(f"{identity}:{bucket.kind}", (bucket.capacity, now))
            level = min(bucket.capacity, level + max(0.0, now - ts) * bucket.rate)
            levels.append(level)
            if level < bucket.cost:
                wait = max(wait, (bucket.cost - level) / bucket.rate)
        allowed = wait == 0.0
        for i, bucket in enumerate(buckets):
            if allowed:
                levels[i] -= bucket.cost
            key = f"{identity}:{bucket.kind}"
            self._state[key] = (levels[i], now)
            self._state.move_to_end(key)
        while len(self._state) > self._max:
            self._state.popitem(last=False)
        return decide(buckets, allowed, wait, levels)


class RateLimiter:
    """Token buckets in Redis when configured, in process otherwise or while Redis is failing."""

    def __init__(
        self,
        registry: CollectorRegistry,
        redis_url: str | None = None,
        timeout_ms: int = 100,
        cooldown_seconds: float = 5.0,
        key_prefix: str = "mlapi-ratelimit",
    ) -> None:
        self._local = LocalBuckets()
        self._prefix = key_prefix
        self._timeout = timeout_ms / 1000.0
        self._cooldown = cooldown_seconds
        self._open_until = 0.0
        self._client: aioredis.Redis | None = None
        if redis_url is not None:
            self._client = aioredis.Redis.from_url(
                redis_url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout, retry=None,
                retry_on_timeout=False, health_check_interval=0, max_connections=POOL_CONNECTIONS,
            )
            self._gate = RedisGate()
            self._script = self._client.register_script(_SCRIPT)
        self.limited = Counter(
            "mlapi_rate_limited_total", "Requests refused with 429, by the bucket that ran out", ["bucket"],
            registry=registry,
        )
        self.fallback = Counter(
            "mlapi_ratelimit_fallback_total",
            "Rate-limit decisions made in process because Redis was unreachable (fail-open), by cause",
            ["reason"], registry=registry,
        )
        for bucket in ("requests", "texts"):
            self.limited.labels(bucket=bucket)
        for reason in ("error", "skipped", "pool_busy"):
            self.fallback.labels(reason=reason)

    @property
    def shared(self) -> bool:
        """Whether buckets are shared through Redis."""
        return self._client is not None

    async def take(self, identity: str, buckets: list[Bucket]) -> Decision:
        """Admit or refuse one request of `identity` that draws from `buckets`."""
        decision = await self._take_shared(identity, buckets) if self._client is not None else None
        if decision is None:
            decision = self._local.take(identity, buckets)
        if not decision.allowed:
            self.limited.labels(bucket=decision.bucket).inc()
        return decision

    async def _take_shared(self, identity: str, buckets: list[Bucket]) -> Decision | None:
        if time.monotonic() < self._open_until:
            self.fallback.labels(reason="skipped").inc()
            return None
        # One hash slot for all of a client's buckets ({...}), so the script also runs on Redis Cluster.
        keys = [f"{self._prefix}:{{{identity}}}:{bucket.kind}" for bucket in buckets]
        args: list[float] = []
        for bucket in buckets:
            args += [bucket.rate, bucket.capacity, bucket.cost]
        try:
            async with self._gate.slot():
                reply = await asyncio.wait_for(self._script(keys=keys, args=args), timeout=self._timeout * 2)
        except PoolBusy:  # Redis is healthy, only busy: decide this one request in process, keep the breaker shut
            self.fallback.labels(reason="pool_busy").inc()
            return None
        except (RedisError, OSError, TimeoutError) as exc:
            self._open_until = time.monotonic() + self._cooldown
            self.fallback.labels(reason="error").inc()
            log.warning("rate limits per replica for %.1fs: redis unavailable: %s: %s", self._cooldown,
                        type(exc).__name__, str(exc)[:200])
            return None
        allowed, wait, *levels = (float(value) for value in reply)
        return decide(buckets, allowed == 1.0, wait, levels)

    async def close(self) -> None:
        """Release the Redis connections."""
        if self._client is not None:
            await self._client.aclose()
