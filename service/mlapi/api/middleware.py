"""ASGI middleware: JSON as the default body type, a request-body limit, and per-route request metrics.

The body limit is enforced from Content-Length and, for chunked bodies, from the bytes as they stream in, before
anything is parsed. Starlette's own `max_body_size` answers before reading the body, which most clients (urllib,
requests) report as a broken pipe instead of a 413, and in plain text; this one drains a bounded amount first and
answers in the service's error format.
"""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlapi.errors import error_body
from mlapi.metrics import Metrics


class JsonByDefaultMiddleware:
    """Read a body sent with no Content-Type, or with curl's default form type, as JSON.

    k6's `http.request` sends no Content-Type and `curl -d` sends `application/x-www-form-urlencoded`; neither
    client means a form, and this API takes nothing but JSON.
    """

    _FORM = b"application/x-www-form-urlencoded"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in {"POST", "PUT", "PATCH"}:
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type" or not v.startswith(self._FORM)]
            if not any(k == b"content-type" for k, _ in headers):
                # In place, not a copy: the router records the matched route in this same scope, where the
                # metrics middleware outside reads it.
                scope["headers"] = [*headers, (b"content-type", b"application/json")]
        await self.app(scope, receive, send)


class _TooLarge(HTTPException):
    """Raised from `receive`; an HTTPException so FastAPI's body reader passes it on instead of answering 400."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="Content Too Large")


class BodyLimitMiddleware:
    """Answer 413 to any request whose body exceeds `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._drain(receive)
            await self._reject(send)
            return
        seen = 0
        started = False
        complete = False

        async def limited_receive() -> Message:
            nonlocal seen, complete
            message = await receive()
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                if not complete:  # after the last chunk, receive() would wait for a disconnect
                    await self._drain(receive)
                await self._reject(send)

    async def _drain(self, receive: Receive) -> None:
        """Read (and drop) a bounded amount of the refused body, so the client can read the 413.

        A server that answers and closes while the client is still sending makes most clients report a reset
        connection instead of the answer.
        """
        budget = 8 * self.max_bytes
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _reject(self, send: Send) -> None:
        import orjson

        body = orjson.dumps(
            error_body(f"request body exceeds MLAPI_MAX_BODY_BYTES ({self.max_bytes} bytes)", "payload_too_large")
        )
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def route_template(scope: Scope) -> str:
    """The template of the route that answered (`/predict`, `/project/predict`), or `unmatched`.

    The router records the route in the scope it was given, so middleware between here and the router must
    change the scope in place, never run the app on a copy.
    """
    return str(getattr(scope.get("route"), "path", "unmatched"))


class MetricsMiddleware:
    """Count and time every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = route_template(scope)
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
