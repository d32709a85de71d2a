"""Typed domain errors and the one place that maps them to HTTP answers.

Every refusal the service makes has a status, a machine-readable `error_type` and a human message, in one body
shape: FastAPI's own `detail` (the list of `{loc, msg, type}` on a 422, the message otherwise: "Not Found",
"Method Not Allowed") beside mlapi's `error` and `error_type`, so clients written against a plain FastAPI app and
clients of mlapi both read it. Nothing the client sends can produce a 500.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ServiceError(Exception):
    """A refusal with a status code; subclasses name the reason."""

    status_code = 400
    error_type = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int | None = None,
        loc: Sequence[str | int] = ("body",),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.loc = tuple(loc)  # where the fault is, for the `detail` list of a 422
        self.headers = dict(headers or {})

    def response_headers(self) -> dict[str, str]:
        """Headers the answer carries: `Retry-After` when set, plus the error's own (e.g. WWW-Authenticate)."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class PayloadTooLarge(ServiceError):
    """The request body is larger than `MLAPI_MAX_BODY_BYTES`."""

    status_code = 413
    error_type = "payload_too_large"


class UnsupportedTask(ServiceError):
    """The endpoint needs a kind of model this server is not running."""

    status_code = 400
    error_type = "unsupported_task"


class InvalidInput(ServiceError):
    """Input that passed the schema but not a rule that needs the model (e.g. an unknown backend)."""

    status_code = 422
    error_type = "validation"


class Overloaded(ServiceError):
    """More texts are waiting than `MLAPI_MAX_QUEUE`: shed load now rather than answer late."""

    status_code = 503
    error_type = "overloaded"


class InferenceFailed(ServiceError):
    """The model itself failed on a pass: a server fault, reported as such without leaking internals."""

    status_code = 500
    error_type = "inference_failed"


class NotReady(ServiceError):
    """The model is not loaded yet (or the server is shutting down)."""

    status_code = 503
    error_type = "unhealthy"


class RequestTimedOut(ServiceError):
    """The request ran past `MLAPI_REQUEST_TIMEOUT_SECONDS`: answered, not left to die with the connection."""

    status_code = 503
    error_type = "timeout"


class Unauthorized(ServiceError):
    """No API key was sent to a route that needs one."""

    status_code = 401
    error_type = "unauthorized"


class Forbidden(ServiceError):
    """The API key sent is unknown or revoked."""

    status_code = 403
    error_type = "forbidden"


class BodyTimeout(ServiceError):
    """The client did not finish sending its body within `MLAPI_BODY_READ_TIMEOUT_SECONDS` (a slow client)."""

    status_code = 408
    error_type = "body_timeout"


class RateLimited(ServiceError):
    """The key (or client address) used up its requests or texts per second; `Retry-After` says when to retry."""

    status_code = 429
    error_type = "rate_limited"


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_INPUT_ECHO_LIMIT = 80


def error_body(message: str, error_type: str, detail: object = None, **extra: object) -> dict[str, object]:
    """The body every error answer shares: FastAPI's `detail` (the message unless given) plus `error`, `error_type`."""
    return {"detail": message if detail is None else detail, "error": message, "error_type": error_type, **extra}


def validation_item(loc: list[str | int], msg: str, kind: str, **extra: object) -> dict[str, object]:
    """One entry of a 422 `detail` list, in FastAPI's (pydantic's) shape."""
    return {"type": kind, "loc": loc, "msg": msg, **extra}


def error_response(exc: ServiceError) -> JSONResponse:
    """The answer to a domain error; middleware that answers outside the app uses it too."""
    detail = None
    if exc.status_code == 422:
        detail = [validation_item(list(exc.loc), exc.message, exc.error_type)]
    return JSONResponse(
        error_body(exc.message, exc.error_type, detail), exc.status_code, headers=exc.response_headers() or None
    )


def _field(loc: tuple[str | int, ...] | list[str | int]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


def _short_input(value: object) -> tuple[bool, object]:
    """(True, value) when the offending input is small enough to echo back; long inputs and PII stay out."""
    try:  # as the answer will be written: strict UTF-8 JSON, so a NaN or a lone surrogate the parser let in stays out
        size = len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return False, None
    return size <= _INPUT_ECHO_LIMIT, value


def validation_details(errors: Sequence[Any]) -> list[dict[str, object]]:
    """pydantic/FastAPI errors as FastAPI lists them, minus any input too long to echo."""
    details = []
    for err in errors:
        item = validation_item(list(err.get("loc", ())), str(err.get("msg", "invalid")), str(err.get("type", "")))
        if "input" in err:
            small, value = _short_input(err["input"])
            if small:
                item["input"] = value
        if err.get("ctx"):
            item["ctx"] = jsonable_encoder(err["ctx"], custom_encoder={Exception: str})
        details.append(item)
    return details


def _message(details: list[dict[str, Any]]) -> str:
    return "; ".join(f"{_field(d['loc'])}: {d['msg']}" for d in details) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors and validation errors to their answers; 422s never echo the whole input back."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's body reader answers 400 for a body it cannot decode at all (e.g. bytes that are not UTF-8);
            # to a client that is invalid input like any other malformed JSON.
            details = [validation_item(["body"], "body is not valid JSON text (UTF-8 expected)", "json_invalid")]
            return JSONResponse(error_body(_message(details), "validation", details), 422)
        error_type = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 413:
            message = f"request body exceeds MLAPI_MAX_BODY_BYTES ({app.state.settings.max_body_bytes} bytes)"
        return JSONResponse(error_body(message, error_type), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(exc.errors())
        return JSONResponse(error_body(_message(details), "validation", details), 422)

    @app.exception_handler(Exception)
    async def _server_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception and re-raises it after this answer; the client gets JSON, not plain text.
        return JSONResponse(error_body("Internal Server Error", "internal"), 500)
