"""The one place that maps domain errors, validation errors and Starlette's HTTP errors to JSON answers.

Nothing the client sends can produce a 500: every refusal leaves here in the shape `mlapi.errors` defines, and a 422
never echoes a long input back.
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

from mlapi.errors import ServiceError, error_body, validation_item

_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_INPUT_ECHO_LIMIT = 80


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
