"""POST /update: thin glue between the wire formats and the numeric core."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from ..ops.context import RequestContext, current_context, scope_header
from ..wire import CODECS
from ..wire.media import (
    JSON_MEDIA_TYPE,
    SAFETENSORS_MEDIA_TYPE,
    WireFormat,
    require_identity_encoding,
    response_format,
    wire_format,
)
from ..wire.payload import UpdatePayload
from ..wire.schemas import REFERENCE_EXAMPLE, UpdateRequest, UpdateResponse
from .body import read_body
from .gate import ConcurrencyGate
from .limits import check_element_count
from .problems import problem_doc

__all__ = ["install_update_route"]

# Where the work runs: small work on the event loop, the rest in a worker thread, where
# the loop keeps serving and updates run side by side on the cores. The hop to a thread
# costs more than parsing a small JSON body or computing a small update (the README's
# Performance section has the figures). A binary body's decoding is a header of bounded
# size (safetensors_codec.MAX_HEADER_BYTES) and views on the body, whatever its size; its
# cost is the arithmetic, which grows with the entries of its arrays (float32 ones count
# twice: they are converted to float64 first).
_INLINE_JSON_BYTES = 16 * 1024
_INLINE_ENTRIES = 2**20


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


class _UpdateRoute(APIRoute):
    """/update: documented by FastAPI, served by an endpoint that takes the raw Request.

    The endpoint reads the body and writes its answer itself, so FastAPI's per-request
    handler (solving parameters, reading a body model, serialising a return value) has
    nothing to do for it, yet costs more than a small update's whole computation. Without
    dependencies the endpoint is called directly; with some (the bearer token), FastAPI's
    handler runs them first, as for any route.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.dependant.dependencies:
            return super().get_route_handler()
        return update


def install_update_route(
    app: FastAPI, dependencies: Sequence[Depends], responses: dict[int | str, dict[str, Any]]
) -> None:
    """Add POST /update to `app`, with `dependencies` run before it and extra `responses`.

    The route goes on the app's own router: FastAPI matches the routes of an included
    router twice per request (once to choose the router, then within it).
    """
    app.router.add_api_route(
        "/update",
        update,
        methods=["POST"],
        route_class_override=_UpdateRoute,
        dependencies=dependencies,
        summary="Apply one RLHF policy-gradient update",
        response_model=UpdateResponse,
        responses={
            400: problem_doc("The body is empty, or not well-formed JSON or safetensors."),
            413: problem_doc(
                "The body is larger than RLHF_MAX_BODY_SIZE, or B*N + B + N is above "
                "RLHF_MAX_ELEMENTS."
            ),
            415: problem_doc(
                "The Content-Type is neither JSON nor application/x-safetensors, its charset "
                "is not UTF-8, or the body has a Content-Encoding other than identity."
            ),
            422: problem_doc("The payload breaks the contract, or the update overflows."),
            **responses,
        },
        openapi_extra=_UPDATE_OPENAPI,
    )


async def update(request: Request) -> Response:
    """Return `weights + lr * grad` with grad the KL-penalised policy gradient, and stats."""
    # The token, when one is set, was checked (a dependency) before a slot is taken here.
    gate: ConcurrencyGate = request.app.state.gate
    with gate:
        return await _update(request)


async def _update(request: Request) -> Response:
    # Reading the body first lets the body limit answer 413 before anything else.
    body = await read_body(request)
    request_format = wire_format(scope_header(request.scope, b"content-type"))
    require_identity_encoding(request.headers.getlist("content-encoding"))
    answer_format = response_format(scope_header(request.scope, b"accept"))
    max_elements: int = request.app.state.settings.max_elements
    context = current_context()
    if context is None:  # a wiring mistake, not a client's: create_app installs the middleware
        msg = "/update runs without a request context; wrap the app in RequestIdMiddleware"
        raise RuntimeError(msg)
    if request_format == "json" and len(body) > _INLINE_JSON_BYTES:
        answer = await run_in_threadpool(
            _answer, body, request_format, answer_format, max_elements, context
        )
    else:
        payload = _decoded(body, request_format, max_elements, context)
        if _small(payload):
            answer = _computed(payload, answer_format, context)
        else:
            answer = await run_in_threadpool(_computed, payload, answer_format, context)
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
    payload = _decoded(body, request_format, max_elements, context)
    return _computed(payload, answer_format, context)


def _small(payload: UpdatePayload) -> bool:
    """Whether the update's arithmetic is cheap enough for the event loop.

    Every array counts, not only the gradients: in a body whose shapes disagree another
    one may be the largest, and the core converts and checks each before it compares them.
    """
    arrays = (
        payload.weights,
        payload.rewards,
        payload.policy_log_probs,
        payload.ref_log_probs,
        payload.log_prob_grads,
    )
    entries = sum(array.size * (1 if array.dtype == np.float64 else 2) for array in arrays)
    if payload.options.group_ids is not None:
        entries += np.size(payload.options.group_ids)
    return entries <= _INLINE_ENTRIES


def _decoded(
    body: bytearray, request_format: WireFormat, max_elements: int, context: RequestContext
) -> UpdatePayload:
    """The payload of a body, once its size is known to be within RLHF_MAX_ELEMENTS."""
    with context.stage("decode"):
        payload = CODECS[request_format].decode_request(body)
    # `size`, not `shape[0]`: a binary body may carry arrays of the wrong rank or shapes
    # that disagree, which the core rejects with its own message once this check passed.
    batch_size, params = payload.rewards.size, payload.weights.size
    context.record_shape(batch_size, params)
    check_element_count(batch_size, params, payload.log_prob_grads.size, max_elements)
    return payload


def _computed(payload: UpdatePayload, answer_format: WireFormat, context: RequestContext) -> bytes:
    """The update, encoded in the answer's format."""
    with context.stage("compute"):
        result = payload.compute()
    context.kl_mean = result.stats.kl_mean
    with context.stage("encode"):
        return CODECS[answer_format].encode_response(result)
