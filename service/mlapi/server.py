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

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

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


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers.

    uvicorn closes a keep-alive connection after `timeout_keep_alive` once a response is done, but a connection that
    never sends a byte, or sends half a request line and stops, holds its socket (and a file descriptor) forever:
    enough of them and healthy clients are refused. Here a connection has `header_timeout` seconds from opening,
    and from the first byte of each later request, to finish its request's headers, or it is closed.
    """

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        waiting = self.conn.their_state is h11.IDLE  # before or inside a request's headers
        if waiting and self._header_deadline is None and not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        elif not waiting:
            self._stop_watching()

    def _stop_watching(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def bounded_protocol(header_timeout: float) -> type[BoundedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with this server's header deadline."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"header_timeout": header_timeout})


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
        # The HTTP edge is bounded: request headers by size and by time (h11; httptools has no size limit), and
        # connections by count (beyond it, new requests get 503 at once rather than file descriptors running out).
        http=bounded_protocol(settings.header_timeout_seconds),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.max_connections,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise, so any local process (or a sidecar
        # that does not set the header) could pick the client address the per-address limits count. Only the
        # proxies named in FORWARDED_ALLOW_IPS are trusted; none when it is unset.
        proxy_headers="FORWARDED_ALLOW_IPS" in os.environ,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", ""),
    )
    DrainingServer(config, app, settings.drain_seconds).run(sockets=[sock] if sock is not None else None)

