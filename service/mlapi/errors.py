"""Typed domain errors: every refusal the service makes, with its status, `error_type` and message.

One body shape for all of them: FastAPI's own `detail` (the list of `{loc, msg, type}` on a 422, the message
otherwise: "Not Found", "Method Not Allowed") beside mlapi's `error` and `error_type`, so clients written against a
plain FastAPI app and clients of mlapi both read it. The classes carry their status but import no web framework, so
the engine can raise them; `mlapi.api.handlers` maps them to HTTP answers.
"""

from __future__ import annotations

from collections.abc import Sequence


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


def error_body(message: str, error_type: str, detail: object = None, **extra: object) -> dict[str, object]:
    """The body every error answer shares: FastAPI's `detail` (the message unless given) plus `error`, `error_type`."""
    return {"detail": message if detail is None else detail, "error": message, "error_type": error_type, **extra}


def validation_item(loc: list[str | int], msg: str, kind: str, **extra: object) -> dict[str, object]:
    """One entry of a 422 `detail` list, in FastAPI's (pydantic's) shape."""
    return {"type": kind, "loc": loc, "msg": msg, **extra}
