"""The one error format: RFC 9457 problem details (application/problem+json).

Exceptions raised anywhere in a request become a problem body here; every body carries the
request's id (the X-Request-ID of the response) as `request_id`:

    ProblemError                  raised by the web layer and the decoders
    ├── MalformedBodyError        400: the body is not parseable JSON
    ├── MalformedSafetensorsError 400: the body is not a well-formed safetensors file
    ├── UnauthorizedError         401: a bearer token is required and was not given
    ├── TooManyElementsError      413: B*N + B + N is above RLHF_MAX_ELEMENTS
    ├── UnsupportedMediaTypeError 415: the Content-Type is not one we read
    ├── InvalidPayloadError       422: parseable, but the payload breaks the contract
    └── SaturatedError            503: RLHF_MAX_IN_FLIGHT updates are already running
    core.InvalidInputError        422: shapes or values the update cannot take
    core.UpdateOverflowError      422: the update overflows float64 (or float32 weights)
    HTTPException                 404, 405, 413 (body limit), ... from Starlette
    ClientDisconnect              400: the client left before sending the whole body
    anything else                 500, logged, with no detail leaked to the client
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.core import InputProblem, InvalidInputError, UpdateError, UpdateOverflowError
from app.request_context import current_context
from app.request_id import new_request_id

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "InvalidPayloadError",
    "MalformedBodyError",
    "MalformedSafetensorsError",
    "ProblemError",
    "SaturatedError",
    "TooManyElementsError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "body_too_large_response",
    "install_error_handlers",
    "problem_response",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
# More problems than this in one request are summarised, not listed.
MAX_LISTED_PROBLEMS = 20

logger = logging.getLogger(__name__)


class ProblemError(Exception):
    """A request failure with a status and a documented problem type."""

    status = 400
    slug = "bad-request"
    title = "Bad request"
    headers: ClassVar[Mapping[str, str] | None] = None

    def __init__(self, detail: str, problems: Sequence[InputProblem] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = tuple(problems)


class MalformedBodyError(ProblemError):
    """The body is not well-formed JSON."""

    status = 400
    slug = "malformed-json"
    title = "Malformed JSON"


class MalformedSafetensorsError(ProblemError):
    """The body is not a well-formed safetensors file."""

    status = 400
    slug = "malformed-safetensors"
    title = "Malformed safetensors"


class UnauthorizedError(ProblemError):
    """The bearer token is missing, malformed or wrong."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"
    headers = MappingProxyType({"WWW-Authenticate": "Bearer"})


class TooManyElementsError(ProblemError):
    """The update is larger than RLHF_MAX_ELEMENTS allows."""

    status = 413
    slug = "too-many-elements"
    title = "Content too large"


class SaturatedError(ProblemError):
    """The worker already runs as many updates as it may; the client should retry soon."""

    status = 503
    slug = "saturated"
    title = "Service saturated"
    headers = MappingProxyType({"Retry-After": "1"})


class UnsupportedMediaTypeError(ProblemError):
    """The body's Content-Type is not one the endpoint reads."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidPayloadError(ProblemError):
    """The body parsed, but its fields break the request contract."""

    status = 422
    slug = "invalid-payload"
    title = "Invalid payload"

    def __init__(self, problems: Sequence[InputProblem]) -> None:
        super().__init__(_summary(problems), problems)


def problem_type(slug: str) -> str:
    return f"urn:rlhf-update:problem:{slug}"


def problem_response(
    status: int,
    *,
    slug: str | None,
    title: str,
    detail: str,
    problems: Sequence[InputProblem] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Render one problem+json response; `slug=None` means a plain HTTP status (about:blank).

    The problem is also noted on the request's context, for its log line and metrics.
    """
    listed = problems[:MAX_LISTED_PROBLEMS]
    context = current_context()
    if context is not None:
        context.error = slug or title
    body = {
        "type": problem_type(slug) if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [{"loc": list(p.loc), "msg": p.msg} for p in listed],
        "request_id": context.request_id if context is not None else new_request_id(),
    }
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def _summary(problems: Sequence[InputProblem]) -> str:
    first = problems[0].msg
    more = len(problems) - 1
    return f"{first} (and {more} more problem{'s' if more > 1 else ''})" if more else first


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        problems=exc.problems,
        headers=exc.headers,
    )


async def _on_update_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UpdateError)
    if isinstance(exc, UpdateOverflowError):
        slug, title = "update-overflow", "Update overflows"
    else:
        assert isinstance(exc, InvalidInputError)
        slug, title = InvalidPayloadError.slug, InvalidPayloadError.title
    return problem_response(
        422, slug=slug, title=title, detail=_summary(exc.problems), problems=exc.problems
    )


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:
        return body_too_large_response(request.app.state.settings.max_body_size)
    title = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if exc.detail != title else f"{title}: {request.method} {request.url.path}"
    return problem_response(
        exc.status_code, slug=None, title=title, detail=detail, headers=exc.headers
    )


def body_too_large_response(limit: int) -> Response:
    """The 413 for a body above `limit` bytes, however the limit was noticed."""
    return problem_response(
        413,
        slug="body-too-large",
        title="Content too large",
        detail=f"request body exceeds the limit of {limit} bytes (RLHF_MAX_BODY_SIZE)",
    )


async def _on_client_disconnect(request: Request, exc: Exception) -> Response:
    # Nobody reads this answer; the point is not to log a client's hang-up as a server error.
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    return problem_response(
        400,
        slug="client-disconnected",
        title="Client disconnected",
        detail="the client disconnected before sending the whole request body",
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Not logged here: Starlette raises the exception again once this answer is sent, and
    # the server logs it with its traceback (uvicorn: "Exception in ASGI application").
    return problem_response(
        500,
        slug="internal-error",
        title="Internal server error",
        detail="the server failed to process this request; it has been logged",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can produce a problem+json response."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(UpdateError, _on_update_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(ClientDisconnect, _on_client_disconnect)
    app.add_exception_handler(Exception, _on_unexpected)
