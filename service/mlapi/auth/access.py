"""Who may call the model and how much: API keys, per-key rate limits and a body read timeout, as one middleware.

Everything that is not a safe method (GET, HEAD, OPTIONS) goes through it, on any path and under any prefix, so a
model route added later (an alias, a new endpoint) is covered without a per-route edit; the open pages (`/health`
for probes, `/metrics`, the docs, the schema, the page and its assets) are all GET. For each such request it:

1. reads the whole body within `MLAPI_BODY_READ_TIMEOUT_SECONDS` (408 to a client that sends too slowly; the
   event loop keeps serving everyone else meanwhile), inside the body-size limit;
2. checks the API key when keys are configured (401 without one, 403 for an unknown or revoked one);
3. spends one request and the request's texts from the key's (or the client address's) token buckets (429 with
   `Retry-After` and RateLimit-* headers when either is empty);
4. replays the body to the app, adding RateLimit-* headers to the answer.

The OpenAPI schema documents the same answers on every operation this applies to.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlapi.api.handlers import error_response
from mlapi.auth.keys import ApiKey, KeyStore, parse_keys
from mlapi.auth.ratelimit import Bucket, Decision, RateLimiter
from mlapi.errors import BodyTimeout, Forbidden, RateLimited, ServiceError, Unauthorized
from mlapi.settings import Settings

OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REALM = 'realm="mlapi"'


def tenant_of(request: Request) -> str:
    """Who the request is for: the identity this middleware set (`key:<name>` or `addr:<ip>`), else ""."""
    return str(getattr(request.state, "tenant", ""))


def key_name(tenant: str) -> str | None:
    """The API key's name in a tenant identity from `AccessControl.authenticate` (`key:<name>`), or None for a
    client known only by its address (no keys configured)."""
    return tenant[4:] if tenant.startswith("key:") else None


class ClientGone(Exception):
    """The client disconnected before it finished sending its body: there is nobody to answer."""


def count_texts(data: object) -> int:
    """How many texts a parsed JSON body asks about, whatever the route's field names.

    Each top-level list counts its items and each top-level string counts one: `{"text": [...]}` counts the
    texts, `{"sentence": s, "labels": [...]}` counts the sentence and the labels, `{"input": s}` counts one. A
    body that is not JSON counts one (it is refused by validation anyway).
    """
    if isinstance(data, dict):
        count = sum(len(v) if isinstance(v, list) else 1 if isinstance(v, str) else 0 for v in data.values())
    elif isinstance(data, list):
        count = len(data)
    else:
        count = 1
    return max(1, count)


def parse_body(body: bytes) -> object:
    """The body as validation will read it, so the texts charge counts exactly what will be computed.

    orjson first (fast, strict); a body it refuses is read with Python's json, as FastAPI's validation reads it,
    which also takes NaN, Infinity, 1e999, a UTF-8 byte order mark and UTF-16 or UTF-32 text: charging such a body
    one text while validation went on to compute a thousand let a key with texts=20 have 1,000-text requests
    answered again and again. A body neither reads (not JSON, or nested too deep) is None: validation refuses it.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`, or None when neither is sent."""
    for name, value in headers:
        if name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return None


class AccessControl:
    """The policy the middleware applies: key table, limits and limiter, built once per app from settings."""

    def __init__(self, settings: Settings, registry: Any) -> None:
        self.settings = settings
        self.keys: KeyStore | None = None
        if settings.api_keys_file is not None:
            self.keys = KeyStore.from_file(settings.api_keys_file, settings.api_keys_reload_seconds)
        elif settings.api_keys is not None:
            self.keys = KeyStore(parse_keys(settings.api_keys.get_secret_value(), "MLAPI_API_KEYS"))
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
        # Services sharing one Redis (e.g. /project and /lab) keep their own buckets for the same key name.
        self.limiter = RateLimiter(registry, redis_url, settings.redis_timeout_ms, settings.redis_cooldown_seconds,
                                   key_prefix=f"{settings.cache_prefix}:ratelimit{settings.path_prefix}")
        self.auth_failures = Counter(
            "mlapi_auth_failures_total", "Requests refused for a missing, unknown or revoked API key", ["reason"],
            registry=registry,
        )
        self.body_timeouts = Counter(
            "mlapi_body_timeouts_total", "Requests refused because the body arrived too slowly", registry=registry
        )
        for reason in ("missing", "unknown", "revoked"):
            self.auth_failures.labels(reason=reason)
        # A valid request's texts must always fit in the bucket, or it could never be admitted.
        self._min_texts_capacity = max(settings.max_batch, settings.max_labels + 1)

    def authenticate(self, scope: Scope) -> tuple[str, ApiKey | None]:
        """The identity whose buckets this request spends from, and its key; raises 401 / 403."""
        if self.keys is None:
            client = scope.get("client")
            return f"addr:{client[0] if client else 'unknown'}", None
        presented = presented_key(scope["headers"])
        if presented is None:
            self.auth_failures.labels(reason="missing").inc()
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": f"Bearer {_REALM}"},
            )
        key = self.keys.lookup(presented)
        if key is None or key.revoked:
            reason = "unknown" if key is None else "revoked"
            self.auth_failures.labels(reason=reason).inc()
            raise Forbidden(
                f"API key {'not recognised' if key is None else 'revoked'}",
                headers={"WWW-Authenticate": f'Bearer {_REALM}, error="invalid_token"'},
            )
        return f"key:{key.name}", key

    def buckets(self, key: ApiKey | None, texts: Callable[[], int]) -> list[Bucket]:
        """The buckets a request spends from; none when no limit applies."""
        s = self.settings
        requests = key.rate if key is not None and key.rate is not None else s.rate_limit_requests
        texts_rate = key.texts if key is not None and key.texts is not None else s.rate_limit_texts
        buckets: list[Bucket] = []
        if requests > 0:
            buckets.append(Bucket("requests", requests, max(1.0, requests * s.rate_limit_burst_seconds), 1.0))
        if texts_rate > 0:
            capacity = max(texts_rate * s.rate_limit_burst_seconds, float(self._min_texts_capacity))
            # A request with more texts than any valid one is charged a full bucket, then refused by validation.
            buckets.append(Bucket("texts", texts_rate, capacity, min(float(texts()), capacity)))
        return buckets


class AccessMiddleware:
    """Body read timeout, API keys and rate limits for every request that is not a safe method."""

    def __init__(self, app: ASGIApp, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in OPEN_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
            identity, key = self.access.authenticate(scope)
            # The batcher shares passes fairly between tenants: routes read this as `request.state.tenant`.
            scope.setdefault("state", {})["tenant"] = identity
            data = parse_body(body) if body else None
            buckets = self.access.buckets(key, lambda: count_texts(data))
            decision = await self.access.limiter.take(identity, buckets) if buckets else None
            if decision is not None and not decision.allowed:
                limit = decision.headers()
                raise RateLimited(
                    f"rate limit of {decision.bucket} per second reached for this "
                    f"{'API key' if key is not None else 'client'}; retry after {limit['Retry-After']} s",
                    headers=limit,
                )
        except ClientGone:
            return
        except ServiceError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), _with_headers(send, decision))

    async def _read_body(self, receive: Receive) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.access.settings.body_read_timeout_seconds
        chunks: list[bytes] = []
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                self.access.body_timeouts.inc()
                seconds = self.access.settings.body_read_timeout_seconds
                raise BodyTimeout(
                    f"request body not received within MLAPI_BODY_READ_TIMEOUT_SECONDS ({seconds:g} s)",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server's receive does

    return replay


def _with_headers(send: Send, decision: Decision | None) -> Send:
    if decision is None:
        return send
    extra = [(name.lower().encode(), value.encode()) for name, value in decision.headers().items()]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_headers


_RATE_HEADERS = {
    "Retry-After": "Seconds until the request can succeed",
    "RateLimit-Limit": "Capacity of the bucket that ran out (requests or texts)",
    "RateLimit-Remaining": "Tokens left in that bucket",
    "RateLimit-Reset": "Seconds until that bucket is full again",
}


def document_access(app: FastAPI, settings: Settings) -> None:
    """Declare 401/403/408/429 (and, with keys, the security schemes) on every operation the middleware guards."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {})
        ref = {"$ref": "#/components/schemas/ErrorResponse"}
        if "ErrorResponse" not in components.get("schemas", {}):
            from mlapi.api.schemas import ErrorResponse

            components.setdefault("schemas", {})["ErrorResponse"] = ErrorResponse.model_json_schema()
        answers: dict[str, dict[str, Any]] = {
            "408": {"description": "Body not received within MLAPI_BODY_READ_TIMEOUT_SECONDS"},
            "429": {
                "description": "Rate limit reached (requests or texts per second); see Retry-After",
                "headers": {name: {"description": text, "schema": {"type": "integer"}}
                            for name, text in _RATE_HEADERS.items()},
            },
        }
        if settings.auth_enabled:
            answers["401"] = {"description": "No API key: send Authorization: Bearer <key> or X-API-Key"}
            answers["403"] = {"description": "Unknown or revoked API key"}
            components.setdefault("securitySchemes", {}).update({
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            })
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method.upper() in OPEN_METHODS or not isinstance(operation, dict):
                    continue
                responses = operation.setdefault("responses", {})
                for status, answer in answers.items():
                    responses.setdefault(
                        status, {**answer, "content": {"application/json": {"schema": ref}}}
                    )
                if settings.auth_enabled:
                    operation.setdefault("security", [{"bearer": []}, {"apiKey": []}])
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
