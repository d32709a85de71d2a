"""Per-request cache results and server time, told to the client in response headers.

A client (the comparison page, a load test, curl -i) sees which of its texts came from the cache and how long the
server itself spent on the request, apart from the network, without scraping `/metrics`:

    X-Cache-Hits: 1            texts answered from the cache
    X-Cache-Misses: 2          texts computed for this request
    X-Cache-Texts: hit,miss,miss   the same, per text in request order (omitted past `MAX_LISTED` texts)
    Server-Timing: app;dur=4.2     milliseconds from the request reaching the app to its answer starting

The engine returns which texts the cache answered with each answer; the routes turn that into the `X-Cache-*`
headers (`cache_headers`), and `ServerTimingMiddleware` times every request.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A header line stays well under the 8 KiB most proxies accept: 256 "miss," entries are 1.3 KiB.
MAX_LISTED = 256


def cache_headers(cached: list[bool], enabled: bool) -> dict[str, str]:
    """The `X-Cache-*` headers for an answer whose texts the cache did (True) or did not answer, in order.

    With several tenants they would tell one client whether another sent a text (MLAPI_CACHE_HEADERS decides).
    """
    if not cached or not enabled:
        return {}
    hits = sum(cached)
    headers = {"X-Cache-Hits": str(hits), "X-Cache-Misses": str(len(cached) - hits)}
    if len(cached) <= MAX_LISTED:
        headers["X-Cache-Texts"] = ",".join("hit" if hit else "miss" for hit in cached)
    return headers


class ServerTimingMiddleware:
    """Add `Server-Timing: app;dur=<ms>` to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}")
            await send(message)

        await self.app(scope, receive, send_with_timing)


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
