"""Per-request cache results and server time, told to the client in response headers.

A client (the comparison page, a load test, curl -i) sees which of its texts came from the cache and how long the
server itself spent on the request, apart from the network, without scraping `/metrics`:

    X-Cache-Hits: 1            texts answered from the cache
    X-Cache-Misses: 2          texts computed for this request
    X-Cache-Texts: hit,miss,miss   the same, per text in request order (omitted past `MAX_LISTED` texts)
    Server-Timing: app;dur=4.2     milliseconds from the request reaching the app to its answer starting

The predictor records lookups into a context variable that this middleware sets for each request, so no route
or return type has to carry them.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A header line stays well under the 8 KiB most proxies accept: 256 "miss," entries are 1.3 KiB.
MAX_LISTED = 256


@dataclass
class RequestStats:
    """What one request's cache lookups found, in order (True for a hit)."""

    lookups: list[bool] = field(default_factory=list)


_current: ContextVar[RequestStats | None] = ContextVar("mlapi_request_stats", default=None)


def record_cache_lookups(hits: list[bool]) -> None:
    """Note the cache result of each text the current request looked up (no-op outside a request)."""
    stats = _current.get()
    if stats is not None:
        stats.lookups.extend(hits)


class RequestStatsMiddleware:
    """Add `Server-Timing` to every answer and the `X-Cache-*` headers to answers that looked texts up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stats = RequestStats()
        token = _current.set(stats)
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}")
                if stats.lookups and message["status"] < 400:
                    hits = sum(stats.lookups)
                    headers["X-Cache-Hits"] = str(hits)
                    headers["X-Cache-Misses"] = str(len(stats.lookups) - hits)
                    if len(stats.lookups) <= MAX_LISTED:
                        headers["X-Cache-Texts"] = ",".join("hit" if hit else "miss" for hit in stats.lookups)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _current.reset(token)


def _header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


# The 200 answer's headers of /predict and /query, for the OpenAPI document.
RESPONSE_HEADERS: dict[str, Any] = {
    "X-Cache-Hits": _header("Texts of this request answered from the cache", "integer"),
    "X-Cache-Misses": _header("Texts of this request computed by the model", "integer"),
    "X-Cache-Texts": _header(
        f"`hit` or `miss` per text in request order (/query: the sentence, then each label); "
        f"omitted above {MAX_LISTED} texts"
    ),
    "Server-Timing": _header("`app;dur=<ms>`: time the server spent on the request, network excluded"),
}
