"""uvicorn, run so that stopping the server never cuts a request off.

On SIGTERM the app is marked draining (`/health` answers 503, so readiness drops), the listener stays open for
`MLAPI_DRAIN_SECONDS` (load balancers that still route here during deregistration get answers, not refusals), then
uvicorn's graceful shutdown waits for requests in flight. That wait is `MLAPI_REQUEST_TIMEOUT_SECONDS` plus a
margin, so every request has answered (or timed out with a JSON 503) before uvicorn would cancel it.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlapi.settings import Settings

SHUTDOWN_MARGIN_SECONDS = 10


def graceful_shutdown_seconds(settings: Settings) -> int:
    """How long uvicorn waits for requests in flight after it stops listening: the request deadline plus a margin."""
    return math.ceil(settings.request_timeout_seconds) + SHUTDOWN_MARGIN_SECONDS


class DrainingServer(uvicorn.Server):
    """A uvicorn server that marks the app draining on the first SIGTERM/SIGINT and stops after the drain."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_seconds: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_seconds = drain_seconds
        self._drain: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain, then shut down gracefully. A second signal skips what is left of the drain."""
        self.app.state.draining = True
        if self.drain_seconds <= 0 or self.should_exit:
            super().handle_exit(sig, frame)
            return
        if self._drain is not None:
            self._drain.cancel()
            super().handle_exit(sig, frame)
            return
        # uvicorn's loop polls `should_exit`; a timer thread setting it later is all a delayed stop needs.
        self._drain = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        self._drain.daemon = True
        self._drain.start()


class HeadersTooLarge(Exception):
    """A request's line and headers are over the server's limit."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (its C parser, the fastest it has) with bounds on each request's headers.

    httptools reads headers of any size, and uvicorn closes a keep-alive connection only once a response is done: a
    connection that never sends a byte, or sends half a request line and stops, holds its socket (and a file
    descriptor) forever, and one that sends endless headers holds memory. Here a request's line and headers may take
    `max_header_bytes` bytes, or it gets a 400 and the connection is closed, and a connection has `header_timeout`
    seconds from opening, and from the first byte of each later request, to finish its request's headers, or it is
    closed.
    """

    header_timeout = 10.0
    max_header_bytes = 16_384

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = True  # before or inside a request's headers
        self._header_bytes = 0  # raw bytes received since the request began, while its headers are incomplete
        self._parsed_bytes = 0  # the request line's target and the headers parsed so far
        self._too_large = False
        self._header_deadline: asyncio.TimerHandle | None = None
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        was_in_headers = self._in_headers
        super().data_received(data)
        if was_in_headers or self._in_headers:
            self._header_bytes += len(data)
        if self.transport.is_closing():
            return
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._stop_watching()
            self._too_large = True
            self.send_400_response("Request headers too large.")
        elif self._between_requests():  # bytes that start no request yet must not hold the socket either
            self._watch_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = self._parsed_bytes = 0
        self._watch_headers()

    # Headers that arrive whole in one read are counted as they are parsed; raising from a parser callback makes
    # httptools fail the request, which uvicorn answers with a 400 and a closed connection.
    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_parsed(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_parsed(len(name) + len(value) + 4)

    def _count_parsed(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            self._too_large = True
            raise HeadersTooLarge(f"request headers over {self.max_header_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        super().send_400_response("Request headers too large." if self._too_large else msg)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_watching()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        if self._header_deadline is None and not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_watching(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if (self._in_headers or self._between_requests()) and not self.transport.is_closing():
            self.transport.close()


def bounded_protocol(header_timeout: float, max_header_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with this server's header deadline and size cap."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,),
                {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes})


class AddressUnavailable(OSError):
    """The server cannot listen where it was told to; `in_use` when another process holds the port."""

    def __init__(self, message: str, in_use: bool) -> None:
        super().__init__(message)
        self.in_use = in_use


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, bound before anything slow starts (uvicorn binds after the lifespan)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses TIME_WAIT ports
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise AddressUnavailable(f"{where} is already in use by another process", in_use=True) from exc
        raise AddressUnavailable(f"cannot listen on {where}: {exc.strerror}", in_use=False) from exc
    sock.set_inheritable(True)
    return sock


def serve(app: FastAPI, settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve `app` until SIGTERM/SIGINT, then drain and stop cleanly (on `sock` when given, from `bind`)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=graceful_shutdown_seconds(settings),
        access_log=False,
        # The HTTP edge is bounded: request headers by size and by time, and connections by count (beyond it, new
        # requests get 503 at once rather than file descriptors running out).
        http=bounded_protocol(settings.header_timeout_seconds, settings.max_header_bytes),
        limit_concurrency=settings.max_connections,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise, so any local process (or a sidecar
        # that does not set the header) could pick the client address the per-address limits count. Only the
        # proxies named in FORWARDED_ALLOW_IPS are trusted; none when it is unset.
        proxy_headers="FORWARDED_ALLOW_IPS" in os.environ,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", ""),
    )
    DrainingServer(config, app, settings.drain_seconds).run(sockets=[sock] if sock is not None else None)

