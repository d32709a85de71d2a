"""Per-text answer cache: Redis behind an in-process LRU when `MLAPI_REDIS_URL` is set, the LRU alone otherwise.

Keys are `<prefix>::<model key>:<text digest>`, one per text, so a batch that repeats known texts computes only
the new ones, and a new model (or another backend) never serves an old model's answers. Texts the process has not
seen cost one round trip each way (MGET, then a pipelined SET EX); those it has are answered from memory.

Redis is an accelerator, never a dependency: every call has a short timeout and no retries, failures are counted,
and after a failure the cache is skipped for `cooldown` seconds (a circuit breaker), so "Redis down" costs one
timeout per cooldown instead of seconds per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from mlapi.metrics import Metrics
from mlapi.redis_gate import POOL_CONNECTIONS, PoolBusy, RedisGate

log = logging.getLogger(__name__)
T = TypeVar("T")


def cache_key(prefix: str, model_key: str, op: str, text: str) -> str:
    """The Redis key for one text's answer to one operation of one model."""
    digest = hashlib.blake2b(op.encode() + b"\0" + text.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()
    return f"{prefix}::{model_key}:{digest}"


# Whether a value read back from a shared store is one this server could have produced (key, value).
Check = Callable[[str, bytes], bool]


class Cache(Protocol):
    """What the predictor needs from a cache; values are opaque bytes."""

    async def get_many(self, keys: list[str], check: Check | None = None) -> list[bytes | None]:
        """One value (or None) per key, in order; never raises.

        `check` vets values that come from outside this process (Redis): one that fails it is a miss. Values this
        process stored itself, or already checked on their way in, are not checked again.
        """
        ...

    async def set_many(self, items: dict[str, bytes]) -> None:
        """Store values with the configured TTL; never raises."""
        ...

    def status(self) -> dict[str, object]:
        """What /health shows; `healthy` False makes the server report `degraded`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class NullCache:
    """Caching turned off (`MLAPI_CACHE_ENABLED=false`): every text is computed."""

    async def get_many(self, keys: list[str], check: Check | None = None) -> list[bytes | None]:
        return [None] * len(keys)

    async def set_many(self, items: dict[str, bytes]) -> None:
        return None

    def status(self) -> dict[str, object]:
        return {"backend": "none", "healthy": True}

    async def close(self) -> None:
        return None


class MemoryCache:
    """An LRU with TTL inside the process: the default when no Redis URL is set."""

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_seconds

    async def get_many(self, keys: list[str], check: Check | None = None) -> list[bytes | None]:
        now = time.monotonic()
        found: list[bytes | None] = []
        for key in keys:
            item = self._items.get(key)
            if item is None or item[0] < now:
                if item is not None:
                    del self._items[key]
                found.append(None)
            else:
                self._items.move_to_end(key)
                found.append(item[1])
        return found

    async def set_many(self, items: dict[str, bytes]) -> None:
        expires = time.monotonic() + self._ttl
        for key, value in items.items():
            self._items[key] = (expires, value)
            self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def status(self) -> dict[str, object]:
        return {"backend": "memory", "healthy": True, "entries": len(self._items)}

    async def close(self) -> None:
        self._items.clear()


class RedisCache:
    """Redis with bounded timeouts and a circuit breaker."""

    def __init__(self, url: str, metrics: Metrics, ttl_seconds: int, timeout_ms: int, cooldown_seconds: float
                 ) -> None:
        timeout = timeout_ms / 1000.0
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=None,
            retry_on_timeout=False,
            health_check_interval=0,
            max_connections=POOL_CONNECTIONS,
        )
        self._gate = RedisGate()
        self._metrics = metrics
        self._ttl = ttl_seconds
        self._timeout = timeout
        self._cooldown = cooldown_seconds
        self._open_until = 0.0
        self._last_error = ""
        metrics.cache_circuit_open.set_function(self._circuit_open)

    def _circuit_open(self) -> float:
        return 1.0 if time.monotonic() < self._open_until else 0.0

    def _available(self) -> bool:
        if time.monotonic() < self._open_until:
            self._metrics.cache_errors.labels(kind="skipped").inc()
            return False
        return True

    def _failed(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + self._cooldown
        # /health is public: it names the kind of failure only; the address and message go to the log.
        self._last_error = type(exc).__name__
        self._metrics.cache_errors.labels(kind=type(exc).__name__).inc()
        log.warning("redis unavailable for %.1fs: %s", self._cooldown, f"{type(exc).__name__}: {exc}"[:300])

    def _ok(self) -> None:
        self._open_until = 0.0
        self._last_error = ""

    async def get_many(self, keys: list[str], check: Check | None = None) -> list[bytes | None]:
        if not keys or not self._available():
            return [None] * len(keys)
        try:
            async with self._gate.slot():
                values = await self._bounded(self._client.mget(keys))
        except PoolBusy:
            self._metrics.cache_errors.labels(kind="pool_busy").inc()
            return [None] * len(keys)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return [None] * len(keys)
        self._ok()
        # decode_responses is off, so values are bytes (or None for a miss).
        found = [value if value is None or isinstance(value, bytes) else value.encode() for value in values]
        if check is None:
            return found
        pairs = zip(keys, found, strict=True)
        return [value if value is not None and check(key, value) else None for key, value in pairs]

    async def set_many(self, items: dict[str, bytes]) -> None:
        if not items or not self._available():
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, value, ex=self._ttl)
            async with self._gate.slot():
                await self._bounded(pipe.execute())
        except PoolBusy:
            self._metrics.cache_errors.labels(kind="pool_busy").inc()
            return
        except (RedisError, OSError, TimeoutError) as exc:  # e.g. OOM when Redis is full: answers still go out
            self._failed(exc)
            return
        self._ok()

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        # The socket timeout bounds each read; this bounds the whole call (connect + write + read).
        return await asyncio.wait_for(awaitable, timeout=self._timeout * 2)

    def status(self) -> dict[str, object]:
        healthy = time.monotonic() >= self._open_until
        status: dict[str, object] = {"backend": "redis", "healthy": healthy}
        if not healthy:
            status["error"] = self._last_error
        return status

    async def close(self) -> None:
        await self._client.aclose()


class TieredCache:
    """The in-process LRU in front of Redis: a hot text's answer is served without a round trip.

    An answer never changes for a key (the key names the model, its backend and the text), so a copy kept in the
    process is never stale; Redis shares answers between replicas and survives restarts. Hits in the LRU skip
    Redis, misses go to Redis once and fill the LRU, new answers go to both.
    """

    def __init__(self, near: MemoryCache, far: Cache) -> None:
        self._near = near
        self._far = far

    async def get_many(self, keys: list[str], check: Check | None = None) -> list[bytes | None]:
        found = await self._near.get_many(keys)
        missing = [key for key, value in zip(keys, found, strict=True) if value is None]
        if not missing:
            return found
        # Only Redis's values are checked: the LRU holds what this process computed or already checked.
        fetched = dict(zip(missing, await self._far.get_many(missing, check), strict=True))
        await self._near.set_many({key: value for key, value in fetched.items() if value is not None})
        return [value if value is not None else fetched[key] for key, value in zip(keys, found, strict=True)]

    async def set_many(self, items: dict[str, bytes]) -> None:
        await self._near.set_many(items)
        await self._far.set_many(items)

    def status(self) -> dict[str, object]:
        return self._far.status()

    async def close(self) -> None:
        await self._near.close()
        await self._far.close()

