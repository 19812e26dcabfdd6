"""HTTP routes: thin glue between the wire formats and the numeric core."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.errors import PROBLEM_MEDIA_TYPE, UnsupportedMediaTypeError
from app.json_codec import decode_update_request, encode_update_response
from app.schemas import REFERENCE_EXAMPLE, Problem, UpdateRequest, UpdateResponse

__all__ = ["router"]

router = APIRouter()

_JSON_MEDIA_TYPE = "application/json"


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}


_UPDATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            _JSON_MEDIA_TYPE: {
                "schema": UpdateRequest.model_json_schema(),
                "example": REFERENCE_EXAMPLE,
            }
        },
    }
}


@router.post(
    "/update",
    summary="Apply one RLHF policy-gradient update",
    response_model=UpdateResponse,
    responses={
        400: _problem("The body is empty or not well-formed JSON."),
        413: _problem("The body is larger than RLHF_MAX_BODY_SIZE."),
        415: _problem("The Content-Type is not application/json."),
        422: _problem("The payload breaks the contract, or the update overflows float64."),
    },
    openapi_extra=_UPDATE_OPENAPI,
)
async def update(request: Request) -> Response:
    """Return `weights + lr * grad` with grad the KL-penalised policy gradient, and stats."""
    # Reading the body first lets the body limit answer 413 before anything else.
    body = await request.body()
    _require_json(request.headers.get("content-type"))
    # Decoding and the math run in a worker thread, so the event loop keeps serving.
    answer = await run_in_threadpool(_answer_json, body)
    return Response(answer, media_type=_JSON_MEDIA_TYPE)


@router.get("/healthz", summary="Liveness probe")
async def healthz() -> dict[str, str]:
    """Answer 200 while the process serves requests."""
    return {"status": "ok"}


def _answer_json(body: bytes) -> bytes:
    return encode_update_response(decode_update_request(body).compute())


def _require_json(content_type: str | None) -> None:
    # A missing Content-Type is read as JSON, as FastAPI does for its own bodies.
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != _JSON_MEDIA_TYPE and not media_type.endswith("+json"):
        msg = (
            f"Content-Type {media_type or '(empty)'!r} is not supported; "
            f"send the body as {_JSON_MEDIA_TYPE}"
        )
        raise UnsupportedMediaTypeError(msg)
