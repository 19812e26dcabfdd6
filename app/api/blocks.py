"""POST /update/grad and /update/apply: the two phases of one block of a sharded update.

A sharded update cuts the columns into blocks, each starting at a multiple of
`CHUNK_COLUMNS`. `/update/grad` takes an ordinary update body for one block (the (B,)
arrays whole, the block's weights and columns of `log_prob_grads`, `column_offset`) and
answers the block's gradient before clipping, its norm partials and the batch's stats.
The client combines the partials of every block into the whole gradient's norm
(`math.fsum`, `app.core.norms.norm_of_partials`) and sends each block's weights, gradient
and optimizer state to `/update/apply` with that norm, which clips and steps exactly as a
single update would. Without `max_grad_norm` a block is one POST /update with
`column_offset`. The servers keep nothing between calls: a block can be retried anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..core import UpdateOptions
from ..core.norms import CHUNK_COLUMNS
from ..errors import UnsupportedMediaTypeError
from ..ops.context import RequestContext, current_context
from ..wire import CODECS, json_codec, safetensors_codec
from ..wire.media import JSON_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE, WireFormat
from ..wire.payload import StepPayload
from ..wire.schemas import REFERENCE_EXAMPLE, UpdateRequest
from .body import UploadBudget, read_body
from .gate import ConcurrencyGate
from .negotiation import negotiated_formats
from .problems import problem_doc

__all__ = ["APPLY_PATH", "GRAD_PATH", "install_block_routes"]

GRAD_PATH = "/update/grad"
APPLY_PATH = "/update/apply"

_Work = Callable[[bytearray, WireFormat, WireFormat, int, RequestContext], bytes]
_MEDIA_TYPES: Mapping[WireFormat, str] = {
    "json": JSON_MEDIA_TYPE,
    "safetensors": SAFETENSORS_MEDIA_TYPE,
}


def _gradient_answer(
    body: bytearray,
    request_format: WireFormat,
    answer_format: WireFormat,
    max_elements: int,
    context: RequestContext,
) -> bytes:
    with context.stage("decode"):
        payload = CODECS[request_format].decode_request(body, max_elements)
    context.record_shape(payload.rewards.size, payload.weights.size)
    with context.stage("compute"):
        result = payload.compute_gradient()
    context.kl_mean = result.stats.kl_mean
    with context.stage("encode"):
        if answer_format == "json":
            return json_codec.encode_gradient(result)
        return safetensors_codec.encode_gradient(result)


def _applied_answer(
    body: bytearray,
    request_format: WireFormat,
    answer_format: WireFormat,
    max_elements: int,
    context: RequestContext,
) -> bytes:
    with context.stage("decode"):
        payload = safetensors_codec.decode_apply_request(body, max_elements)
    with context.stage("compute"):
        result = payload.compute()
    with context.stage("encode"):
        if answer_format == "json":
            return json_codec.encode_applied(result)
        return safetensors_codec.encode_applied(result)


async def _serve(request: Request, work: _Work, formats: tuple[WireFormat, WireFormat]) -> Response:
    """Read the body within the upload budget, then compute in a worker thread, in a slot.

    `formats` are the body's and the answer's, from the headers (`negotiated_formats`).
    """
    state = request.app.state
    uploads: UploadBudget = state.uploads
    gate: ConcurrencyGate = state.gate
    request_format, answer_format = formats
    body = await read_body(request, uploads, state.settings.body_timeout_seconds)
    try:
        async with gate:
            context = current_context()
            if context is None:  # a wiring mistake: create_app installs the middleware
                msg = "a block runs without a request context; wrap the app in RequestIdMiddleware"
                raise RuntimeError(msg)
            max_elements: int = state.settings.max_elements
            # A block is large by design: its work leaves the event loop.
            answer = await run_in_threadpool(
                work, body, request_format, answer_format, max_elements, context
            )
    finally:
        uploads.give_back(len(body))
    return Response(answer, media_type=_MEDIA_TYPES[answer_format])


async def update_grad(request: Request) -> Response:
    """One block's gradient before clipping, its norm partials and the batch's stats."""
    return await _serve(request, _gradient_answer, negotiated_formats(request.scope))


async def update_apply(request: Request) -> Response:
    """One block's clipped step: new weights and state, and the partials of its norms."""
    formats = negotiated_formats(request.scope)
    # Refused before the body is read, as every answer the headers decide.
    if formats[0] != "safetensors":
        msg = (
            f"{APPLY_PATH} takes a safetensors body only (Content-Type: "
            f"{SAFETENSORS_MEDIA_TYPE}): a block's weights and gradient are binary data"
        )
        raise UnsupportedMediaTypeError(msg)
    return await _serve(request, _applied_answer, formats)


def _binary(description: str) -> dict[str, Any]:
    return {
        "schema": {
            "type": "string",
            "format": "binary",
            "contentMediaType": SAFETENSORS_MEDIA_TYPE,
            "description": description,
        }
    }


_PARTIALS = (
    f"F64 tensors of shape (k, 2), one (s, q) row per chunk of {CHUNK_COLUMNS} columns from "
    "column_offset, the chunk's sum of squares being s**2 * q; combine every block's rows "
    "with math.fsum as app/core/norms.py's norm_of_partials does"
)
_GRAD_EXAMPLE = REFERENCE_EXAMPLE | {"column_offset": 0}


def _grad_example() -> Any:
    """The real answer to the request's example, computed by the service."""
    payload = json_codec.decode_request(bytearray(orjson.dumps(_GRAD_EXAMPLE)))
    return orjson.loads(json_codec.encode_gradient(payload.compute_gradient()))


def _apply_example() -> Any:
    """The real answer of /update/apply to the example's gradient, clipped to norm 0.5."""
    gradient = json_codec.decode_request(bytearray(orjson.dumps(_GRAD_EXAMPLE)))
    result = gradient.compute_gradient()
    step = StepPayload(
        weights=gradient.weights,
        grad=result.grad,
        lr=gradient.lr,
        grad_norm=result.stats.grad_norm,
        options=UpdateOptions(max_grad_norm=0.5, column_offset=0),
    )
    return orjson.loads(json_codec.encode_applied(step.compute()))


def _grad_openapi() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON_MEDIA_TYPE: {
                    "schema": UpdateRequest.model_json_schema(),
                    "example": _GRAD_EXAMPLE,
                },
                SAFETENSORS_MEDIA_TYPE: _binary(
                    "The safetensors body of POST /update for the block's columns, with "
                    "__metadata__ column_offset."
                ),
            },
        },
        "responses": {
            "200": {
                "description": "The block's gradient before clipping (grad), its partials "
                f"(grad_norm_partials: {_PARTIALS}) and the batch's statistics (stats, "
                "without grad_norm, clipped, update_norm, optimizer_step).",
                "content": {
                    JSON_MEDIA_TYPE: {"example": _grad_example()},
                    SAFETENSORS_MEDIA_TYPE: _binary(
                        "Tensors grad (F64) and grad_norm_partials; __metadata__ stats as "
                        "JSON text."
                    ),
                },
            }
        },
    }


def _apply_openapi() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                SAFETENSORS_MEDIA_TYPE: _binary(
                    "Tensors weights (n,) and grad (n,) (the block's, grad as /update/grad "
                    "answered it), lr and grad_norm (the whole gradient's norm) as scalars, "
                    "and the block of the optimizer state's vectors (exp_avg, exp_avg_sq, "
                    "max_exp_avg_sq, momentum_buffer); __metadata__ optimizer (JSON text), "
                    "optimizer_state.step, max_grad_norm, column_offset."
                )
            },
        },
        "responses": {
            "200": {
                "description": "The block's new weights (the dtype of its weights) and "
                "state (F64), whether the gradient was clipped, and the partials "
                f"step_norm_partials (when clipped) and update_norm_partials (with an "
                f"optimizer other than the plain step): {_PARTIALS}.",
                "content": {
                    SAFETENSORS_MEDIA_TYPE: _binary(
                        "Tensors weights, the state's vectors, the partials; __metadata__ "
                        'clipped ("true" or "false") and optimizer_state.step.'
                    ),
                    JSON_MEDIA_TYPE: {"example": _apply_example()},
                },
            }
        },
    }


def install_block_routes(
    app: FastAPI, dependencies: Sequence[Depends], responses: dict[int | str, dict[str, Any]]
) -> None:
    """Add POST /update/grad and /update/apply, guarded and answered as /update is."""
    errors: dict[int | str, dict[str, Any]] = {
        400: problem_doc("The body is empty, or not well-formed JSON or safetensors."),
        413: problem_doc(
            "The body is larger than RLHF_MAX_BODY_SIZE, or its arrays hold more than "
            "RLHF_MAX_ELEMENTS entries."
        ),
        415: problem_doc("The Content-Type is not one the route takes."),
        422: problem_doc(
            "The block breaks the contract (a column named by its index in the whole "
            "vector), column_offset is not a multiple of the chunk, or the step overflows."
        ),
        **responses,
    }
    app.router.add_api_route(
        GRAD_PATH,
        update_grad,
        methods=["POST"],
        dependencies=dependencies,
        summary="A sharded update's block: its gradient and norm partials",
        operation_id="update_grad",
        responses=errors,
        openapi_extra=_grad_openapi(),
    )
    app.router.add_api_route(
        APPLY_PATH,
        update_apply,
        methods=["POST"],
        dependencies=dependencies,
        summary="A sharded update's block: clip by the whole's norm, then step",
        operation_id="update_apply",
        responses=errors,
        openapi_extra=_apply_openapi(),
    )
