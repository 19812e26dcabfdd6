"""Rendering problems as application/problem+json, and the handlers that do it.

Whatever a request raises ends here as one problem document that carries the request's
id (the X-Request-ID of the response) as `request_id`; see `app.errors` for the types:

    app.errors.ProblemError       its own status and type
    core.InvalidInputError        422 invalid-payload: shapes or values the update cannot take
    core.UpdateOverflowError      422 update-overflow: the update overflows float64 (or float32)
    HTTPException                 404, 405, 413 (body limit), ... from Starlette
    ClientDisconnect              400 client-disconnected: the client left mid-body
    anything else                 500 internal-error, logged, no detail leaked to the client
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..core import MAX_LISTED_PROBLEMS, InputProblem, UpdateError, UpdateOverflowError
from ..errors import (
    BodyTooLargeError,
    ClientDisconnectedError,
    HttpStatusError,
    InternalError,
    InvalidPayloadError,
    ProblemError,
    UpdateOverflowProblem,
)
from ..ops.context import current_context
from ..wire.messages import shorten
from ..wire.schemas import Problem
from .request_id import new_request_id

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "as_problem",
    "install_error_handlers",
    "problem_body",
    "problem_doc",
    "problem_examples_doc",
    "problem_response",
    "request_problem",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"

logger = logging.getLogger("app.errors")

# A problem document stays a few KiB whatever the request: the detail, each message and
# each part of a location are cut short, and errors are listed while they fit (the detail
# still counts every problem).
_DETAIL_CHARACTERS = 500
_MESSAGE_CHARACTERS = 400
_ERRORS_CHARACTERS = 3000


def problem_response(problem: ProblemError) -> Response:
    """Render one problem as a problem+json response, and note it on the request's context.

    The context carries it to the request's log line and metrics.
    """
    context = current_context()
    if context is not None:
        context.problem = problem
    request_id = context.request_id if context is not None else new_request_id()
    return Response(
        orjson.dumps(problem_body(problem, request_id)),
        status_code=problem.status,
        headers=dict(problem.headers),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def problem_body(problem: ProblemError, request_id: str) -> dict[str, Any]:
    """The problem document of `problem`, as the answer to the request `request_id` holds it."""
    return {
        "type": problem.type_uri,
        "title": problem.title,
        "status": problem.status,
        "detail": shorten(problem.detail, _DETAIL_CHARACTERS),
        "errors": _listed(problem.problems),
        "request_id": request_id,
    }


def _listed(problems: Sequence[InputProblem]) -> list[dict[str, Any]]:
    """The `errors` of a document: the first problems, each cut short, while they fit."""
    listed: list[dict[str, Any]] = []
    size = 0
    for problem in problems[:MAX_LISTED_PROBLEMS]:
        loc = [shorten(part) if isinstance(part, str) else part for part in problem.loc]
        msg = shorten(problem.msg, _MESSAGE_CHARACTERS)
        size += len(msg) + sum(len(str(part)) for part in loc)
        if listed and size > _ERRORS_CHARACTERS:
            break
        listed.append({"loc": loc, "msg": msg})
    return listed


def problem_doc(description: str) -> dict[str, Any]:
    """The OpenAPI entry of an error response (problem+json)."""
    return {"description": description, "model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}


def problem_examples_doc(examples: Sequence[ProblemError]) -> dict[str, Any]:
    """OpenAPI examples, named by problem type: the documents the service sends for them."""
    request_id = new_request_id()
    return {
        problem.label: {"summary": problem.title, "value": problem_body(problem, request_id)}
        for problem in examples
    }


def as_problem(exc: UpdateError) -> ProblemError:
    """The problem type of an error of the numeric core: 422 update-overflow or invalid-payload."""
    kind = UpdateOverflowProblem if isinstance(exc, UpdateOverflowError) else InvalidPayloadError
    return kind(exc.problems)


def request_problem(exc: Exception, method: str, path: str) -> ProblemError:
    """The problem a request that raised `exc` is answered with, as the handlers answer it.

    For an endpoint served outside FastAPI's exception handlers (POST /update's raw ASGI
    path): a problem as itself, an error of the core as its problem, a client's hang-up
    as client-disconnected (logged as such), anything else as internal-error.
    """
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, UpdateError):
        return as_problem(exc)
    if isinstance(exc, ClientDisconnect):
        return _client_disconnected(method, path)
    return InternalError()


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc)


async def _on_update_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UpdateError)
    return problem_response(as_problem(exc))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == BodyTooLargeError.status:
        return problem_response(BodyTooLargeError(request.app.state.settings.max_body_size))
    problem = HttpStatusError(exc.status_code, exc.detail, exc.headers)
    if problem.detail == problem.title:
        problem.detail = f"{problem.title}: {request.method} {request.url.path}"
    return problem_response(problem)


async def _on_client_disconnect(request: Request, exc: Exception) -> Response:
    return problem_response(_client_disconnected(request.method, request.url.path))


def _client_disconnected(method: str, path: str) -> ClientDisconnectedError:
    # Nobody reads this answer; the point is not to log a client's hang-up as a server error.
    logger.info("client disconnected during %s %s", method, path)
    return ClientDisconnectedError("the client disconnected before sending the whole request body")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Not logged here: Starlette raises the exception again once this answer is sent, and
    # the server logs it with its traceback (uvicorn: "Exception in ASGI application").
    return problem_response(InternalError())


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can produce a problem+json response."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(UpdateError, _on_update_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(ClientDisconnect, _on_client_disconnect)
    app.add_exception_handler(Exception, _on_unexpected)
