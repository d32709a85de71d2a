"""Typed domain errors and the one place that maps them to HTTP answers.

Every refusal the service makes has a status, a machine-readable `error_type` and a human message, in the same
`{"error", "error_type"}` body; nothing the client sends can produce a 500.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ServiceError(Exception):
    """A refusal with a status code; subclasses name the reason."""

    status_code = 400
    error_type = "bad_request"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


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


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_body(message: str, error_type: str, **extra: object) -> dict[str, object]:
    """The body every error answer shares."""
    return {"error": message, "error_type": error_type, **extra}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors and validation errors to their answers; 422s never echo the whole input back."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return JSONResponse(error_body(exc.message, exc.error_type), exc.status_code, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's body reader answers 400 for a body it cannot decode at all (e.g. bytes that are not UTF-8);
            # to a client that is invalid input like any other malformed JSON.
            reason = "body is not valid JSON text (UTF-8 expected)"
            detail = [{"field": "body", "reason": reason, "type": "json_invalid"}]
            return JSONResponse(error_body(f"body: {reason}", "validation", detail=detail), 422)
        error_type = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 413:
            message = f"request body exceeds MLAPI_MAX_BODY_BYTES ({app.state.settings.max_body_bytes} bytes)"
        return JSONResponse(error_body(message, error_type), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                position = err.get("loc", ("body", 0))[-1]
                reason = f"invalid JSON at position {position}: {err.get('ctx', {}).get('error', 'decode error')}"
                details.append({"field": "body", "reason": reason, "type": "json_invalid"})
                continue
            field = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
            detail = {"field": field, "reason": err.get("msg", "invalid"), "type": err.get("type", "")}
            if "input" in err and err.get("type") not in {"missing", "extra_forbidden"}:
                detail["input"] = _short(err["input"])
            details.append(detail)
        message = "; ".join(f"{d['field']}: {d['reason']}" for d in details) or "invalid request"
        return JSONResponse(error_body(message, "validation", detail=details), 422)
