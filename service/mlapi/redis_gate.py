"""At most as many Redis calls in flight as the connection pool holds, so a busy pool is a short wait, not an error.

redis-py's asyncio pool raises MaxConnectionsError the moment its connections are all in use; counted as a Redis
failure, a burst of concurrent requests against a healthy Redis tripped the circuit breakers (the cache went dark
and the rate limiter failed open). Every call takes a slot here first; a call that cannot get one within
`POOL_WAIT_SECONDS` raises `PoolBusy`, which callers treat as "not this time", never as an outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

POOL_CONNECTIONS = 64
POOL_WAIT_SECONDS = 1.0


class PoolBusy(Exception):
    """No Redis connection came free within the wait: the pool is busy, Redis is not down."""


class RedisGate:
    """A semaphore the size of the connection pool, taken around every call."""

    def __init__(self, size: int = POOL_CONNECTIONS, wait_seconds: float = POOL_WAIT_SECONDS) -> None:
        self.size = size
        self._slots = asyncio.Semaphore(size)
        self._wait = wait_seconds

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the pool's connections for the duration of a call; `PoolBusy` if none frees in time."""
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self._wait)
        except TimeoutError:
            raise PoolBusy from None
        try:
            yield
        finally:
            self._slots.release()
