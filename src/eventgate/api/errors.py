"""Every config API error as `{"errors":[{"message": ...}]}`, FastAPI's and Starlette's included.

Validation problems are 400s (not FastAPI's 422) with messages that name the field, unknown routes
are 404s, wrong methods 405s, `EventgateError`s keep their own status (503 for StoreUnavailable),
and anything unexpected is a 500 that still says what happened.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from eventgate.errors import EventgateError, error_body


class ErrorMessage(BaseModel):
    message: str


class Errors(BaseModel):
    """The body of every error response."""

    errors: list[ErrorMessage]


# For OpenAPI (and so that FastAPI documents no 422, which this API never sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Errors, "description": "Refused; the message says why"},
    "5XX": {"model": Errors, "description": "Failed (503: the config store is unavailable)"},
}


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(message), status, headers, media_type="application/json")


def describe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """One message from pydantic errors: `functionId: String should match pattern '...'`.

    A message that already starts with its field's name (as the model's own checks do, e.g.
    `provider.url 'x' must be an http:// or https:// URL`) is not prefixed again.
    """
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(message if not where or message.startswith(where) else f"{where}: {message}")
    return "; ".join(parts)


async def _eventgate_error(request: Request, exc: EventgateError) -> Response:
    return error_response(exc.status, exc.message)


async def _request_validation_error(request: Request, exc: RequestValidationError) -> Response:
    # Drop the leading "path"/"query"/"body" from each location: the field name is what helps.
    errors = [{**error, "loc": tuple(error["loc"])[1:]} for error in exc.errors()]
    return error_response(400, describe_validation_errors(errors))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"No such endpoint: {where}."
    elif exc.status_code == 405:
        message = f"Method not allowed: {where}."
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    return error_response(500, f"Internal error: {type(exc).__name__}: {exc}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EventgateError, _eventgate_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
