"""HTTP routes: thin glue between the wire formats and the numeric core."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.body import read_body
from app.errors import PROBLEM_MEDIA_TYPE
from app.gate import ConcurrencyGate
from app.json_codec import decode_update_request, encode_update_response
from app.limits import check_element_count
from app.media import (
    JSON_MEDIA_TYPE,
    SAFETENSORS_MEDIA_TYPE,
    WireFormat,
    response_format,
    wire_format,
)
from app.payload import UpdatePayload
from app.request_context import RequestContext, current_context
from app.safetensors_codec import decode_safetensors, encode_safetensors
from app.schemas import REFERENCE_EXAMPLE, Problem, UpdateRequest, UpdateResponse

__all__ = ["problem_doc", "router"]

router = APIRouter()

# Work about as cheap as the hop to a worker thread (0.2 to 0.7 ms on 2 busy cores) is
# done on the event loop. JSON's cost is parsing, about 5 ns a byte: 16 KiB take 0.1 ms.
# A binary body is decoded in place, so its cost is the arithmetic: 1 MiB takes 0.5 ms as
# float64 and 0.8 ms as float32 (converted to float64 first); 16 MiB would hold the loop
# for 4 and 15 ms, and larger updates could not run side by side on the cores.
_INLINE_BODY_BYTES: dict[WireFormat, int] = {"json": 16 * 1024, "safetensors": 1024 * 1024}


def problem_doc(description: str) -> dict[str, Any]:
    """The OpenAPI entry of an error response (problem+json)."""
    return {"description": description, "model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}


_UPDATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON_MEDIA_TYPE: {
                "schema": UpdateRequest.model_json_schema(),
                "example": REFERENCE_EXAMPLE,
            },
            SAFETENSORS_MEDIA_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "A safetensors file with tensors weights, rewards, "
                    "policy_log_probs, ref_log_probs, log_prob_grads (F32 or F64) and "
                    "scalar tensors beta and lr.",
                }
            },
        },
    },
    "responses": {
        "200": {
            "content": {
                SAFETENSORS_MEDIA_TYPE: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "Sent when Accept lists application/x-safetensors: "
                        "tensor weights, and the stats as JSON in __metadata__['stats'].",
                    }
                }
            }
        }
    },
}


@router.post(
    "/update",
    summary="Apply one RLHF policy-gradient update",
    response_model=UpdateResponse,
    responses={
        400: problem_doc("The body is empty, or not well-formed JSON or safetensors."),
        413: problem_doc(
            "The body is larger than RLHF_MAX_BODY_SIZE, or B*N + B + N is above RLHF_MAX_ELEMENTS."
        ),
        415: problem_doc("The Content-Type is neither JSON nor application/x-safetensors."),
        422: problem_doc("The payload breaks the contract, or the update overflows."),
    },
    openapi_extra=_UPDATE_OPENAPI,
)
async def update(request: Request) -> Response:
    """Return `weights + lr * grad` with grad the KL-penalised policy gradient, and stats."""
    # The token, when one is set, was checked (a dependency) before a slot is taken here.
    gate: ConcurrencyGate = request.app.state.gate
    with gate.slot():
        return await _update(request)


async def _update(request: Request) -> Response:
    # Reading the body first lets the body limit answer 413 before anything else.
    body = await read_body(request)
    request_format = wire_format(request.headers.get("content-type"))
    answer_format = response_format(request.headers.get("accept"))
    max_elements: int = request.app.state.settings.max_elements
    context = current_context()
    if context is None:  # a wiring mistake, not a client's: create_app installs the middleware
        msg = "/update runs without a request context; wrap the app in RequestIdMiddleware"
        raise RuntimeError(msg)
    work = (body, request_format, answer_format, max_elements, context)
    if len(body) <= _INLINE_BODY_BYTES[request_format]:
        answer = _answer(*work)
    else:
        # Decoding, the math and encoding run in a worker thread, so the loop keeps serving.
        answer = await run_in_threadpool(_answer, *work)
    return Response(answer, media_type=_MEDIA_TYPES[answer_format])


_MEDIA_TYPES: dict[WireFormat, str] = {
    "json": JSON_MEDIA_TYPE,
    "safetensors": SAFETENSORS_MEDIA_TYPE,
}


def _answer(
    body: bytearray,
    request_format: WireFormat,
    answer_format: WireFormat,
    max_elements: int,
    context: RequestContext,
) -> bytes:
    """Decode, check the size, compute and encode one update, timing each stage."""
    with context.stage("decode"):
        payload: UpdatePayload = (
            decode_update_request(body) if request_format == "json" else decode_safetensors(body)
        )
    # `size`, not `shape[0]`: a binary body may carry arrays of the wrong rank or shapes
    # that disagree, which the core rejects with its own message once this check passed.
    batch_size, params = payload.rewards.size, payload.weights.size
    context.record_shape(batch_size, params)
    check_element_count(batch_size, params, max_elements, grads_size=payload.log_prob_grads.size)
    with context.stage("compute"):
        result = payload.compute()
    context.kl_mean = result.stats.kl_mean
    with context.stage("encode"):
        if answer_format == "json":
            return encode_update_response(result)
        return encode_safetensors(result)
