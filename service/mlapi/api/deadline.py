"""A deadline on every request (`MLAPI_REQUEST_TIMEOUT_SECONDS`): past it the client gets a 503 it can retry.

Without one, a request that outlives uvicorn's graceful-shutdown time is cancelled mid-flight and the client gets
a bare plain-text 500. The server's graceful-shutdown time is longer than this deadline (see `server.py`), so every
request ends with an answer: its own, or this one. Work already shared with other requests (a pass of the
batcher) keeps running and fills the cache; only the late request's wait ends.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlapi.api.handlers import error_response
from mlapi.errors import RequestTimedOut
from mlapi.metrics import Metrics


class DeadlineMiddleware:
    """Answer 503 `timeout` with Retry-After to any request still unanswered after `seconds`."""

    def __init__(self, app: ASGIApp, seconds: float, metrics: Metrics) -> None:
        self.app = app
        self.seconds = seconds
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.timeout(self.seconds)

        async def answering_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                deadline.reschedule(None)  # the answer is on its way: the deadline was met
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, answering_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # a fault inside the app, not this deadline: answered as the server error it is
            self.metrics.rejected.labels(reason="timeout").inc()
            error = RequestTimedOut(
                f"no answer within MLAPI_REQUEST_TIMEOUT_SECONDS ({self.seconds:g} s); retry later", retry_after=1
            )
            await error_response(error)(scope, receive, send)
