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
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InternalError
from ..ops.context import RequestContext, current_context, scope_header
from ..settings import Settings
from ..wire import CODECS
from ..wire.media import JSON_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE, WireFormat
from ..wire.payload import UpdatePayload
from ..wire.safetensors_codec import describe_layout
from ..wire.schemas import REFERENCE_EXAMPLE, UpdateRequest, UpdateResponse
from .body import UploadBudget, limited_chunks, read_body, read_chunks
from .examples import ok_example, problem_examples
from .gate import ConcurrencyGate
from .negotiation import negotiated_formats
from .problems import (
    PROBLEM_MEDIA_TYPE,
    problem_doc,
    problem_examples_doc,
    problem_response,
    request_problem,
)

__all__ = ["DirectUpdate", "document_examples", "install_update_route"]

# Where the work runs: small work on the event loop, the rest in a worker thread, where
# the loop keeps serving and updates run side by side on the cores. The hop to a thread
# costs more than parsing a small JSON body or computing a small update (the README's
# Performance section has the figures). A binary body's decoding is a header of bounded
# size (safetensors_codec.MAX_HEADER_BYTES) and views on the body, whatever its size; its
# cost is the arithmetic, which grows with the entries of its arrays (float32 ones count
# twice: they are converted to float64 first). Up to this many entries the arithmetic
# takes 1 to 2 ms, the cost of one to a few hops: the loop is held that long, once.
_INLINE_JSON_BYTES = 16 * 1024
_INLINE_ENTRIES = 2**21


def _binary_schema(role: str, when: str) -> dict[str, Any]:
    """The schema of a safetensors body: its tensors and `__metadata__` keys, from the codec.

    `x-safetensors` carries them as data (shape, dtypes, required) for generated clients.
    """
    layout = describe_layout()[role]
    tensors = "; ".join(
        f"{name} {t['shape']} {'/'.join(t['dtypes'])}"
        + ("" if t.get("required", True) else " (optional)")
        for name, t in layout["tensors"].items()
    )
    metadata = ", ".join(layout["metadata"])
    return {
        "type": "string",
        "format": "binary",
        "contentMediaType": SAFETENSORS_MEDIA_TYPE,
        "description": f"A safetensors file{when}. Tensors: {tensors}. "
        f"__metadata__ (strings): {metadata}.",
        "x-safetensors": layout,
    }


def document_examples(operation: dict[str, Any], settings: Settings) -> None:
    """Fill /update's OpenAPI `operation` with real answers, computed now by the service.

    The 200 example is the answer to the request's example; each error response shows
    the problem documents the service sends for it under these limits. Done when the
    document is built, so a failure here fails /openapi.json, not the service.
    """
    responses = operation["responses"]
    responses["200"]["content"][JSON_MEDIA_TYPE]["example"] = ok_example()
    examples = problem_examples(settings)
    for status, doc in responses.items():
        media = doc.get("content", {}).get(PROBLEM_MEDIA_TYPE)
        if media is not None and status.isdigit() and int(status) in examples:
            media["examples"] = problem_examples_doc(examples[int(status)])


def _update_openapi() -> dict[str, Any]:
    """What FastAPI cannot derive: both media types of the body and of the 200 answer."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON_MEDIA_TYPE: {
                    "schema": UpdateRequest.model_json_schema(),
                    "example": REFERENCE_EXAMPLE,
                },
                SAFETENSORS_MEDIA_TYPE: {"schema": _binary_schema("request", "")},
            },
        },
        "responses": {
            "200": {
                "content": {
                    SAFETENSORS_MEDIA_TYPE: {
                        "schema": _binary_schema(
                            "response", ", sent when Accept lists application/x-safetensors"
                        )
                    },
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
        operation_id="update",
        response_model=UpdateResponse,
        responses={
            400: problem_doc("The body is empty, or not well-formed JSON or safetensors."),
            408: problem_doc(
                "No byte of the body arrived for RLHF_BODY_TIMEOUT_SECONDS; the connection "
                "is closed."
            ),
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
        openapi_extra=_update_openapi(),
    )


async def update(request: Request) -> Response:
    """Return `weights + lr * grad` with grad the KL-penalised policy gradient, and stats."""
    # The token, when one is set, was checked (a dependency) before the body is read.
    state = request.app.state
    settings: Settings = state.settings
    formats = negotiated_formats(request.scope)
    body = await read_body(request, state.uploads, settings.body_timeout_seconds)
    answer = await _answer_held(body, formats, state)
    return Response(answer, media_type=_MEDIA_TYPES[formats[1]])


class DirectUpdate:
    """POST /update as raw ASGI, ahead of FastAPI's stack; every other request goes to `app`.

    The same endpoint as `update`, documented by FastAPI all the same, without the
    layers a request passes through there (exception middlewares, the body limit's
    wrappers, routing, a Request and a Response object), which cost more than a small
    update's arithmetic. Errors are answered as FastAPI's handlers answer them
    (`problems.request_problem`); the body limit is applied to `receive` directly
    (`body.limited_chunks`).
    """

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        settings: Settings = state.settings
        self._max_body_size = settings.max_body_size
        self._body_timeout = settings.body_timeout_seconds
        self._uploads: UploadBudget = state.uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["path"] == "/update"
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            formats = negotiated_formats(scope)
            chunks = limited_chunks(
                receive, scope_header(scope, b"content-length"), self._max_body_size
            )
            body = await read_chunks(chunks, self._uploads, self._body_timeout)
            answer = await _answer_held(body, formats, self.state)
        except Exception as exc:
            problem = request_problem(exc, scope["method"], scope["path"])
            if problem is exc or not isinstance(problem, InternalError):
                await problem_response(problem)(scope, receive, send)
                return
            # As Starlette's ServerErrorMiddleware: the 500 when nothing was sent yet, and
            # the exception raised again for the server to log with its traceback.
            if not started:
                await problem_response(problem)(scope, receive, tracking_send)
            raise
        await tracking_send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    _CONTENT_TYPE_HEADERS[formats[1]],
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


async def _answer_held(
    body: bytearray, formats: tuple[WireFormat, WireFormat], state: State
) -> bytes:
    """The answer to a body that has arrived whole (and is held in the upload budget).

    Upload and compute are separate resources: the body is received within the upload
    budget and its own timeout, and only a body that has arrived whole waits for a
    compute slot, so a slow sender holds some bytes of the budget and no slot.
    """
    uploads: UploadBudget = state.uploads
    gate: ConcurrencyGate = state.gate
    settings: Settings = state.settings
    try:
        async with gate:
            return await _update(body, formats, settings.max_elements)
    finally:
        uploads.give_back(len(body))


async def _update(
    body: bytearray, formats: tuple[WireFormat, WireFormat], max_elements: int
) -> bytes:
    request_format, answer_format = formats
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
    return answer


_MEDIA_TYPES: dict[WireFormat, str] = {
    "json": JSON_MEDIA_TYPE,
    "safetensors": SAFETENSORS_MEDIA_TYPE,
}
_CONTENT_TYPE_HEADERS = {
    wire: (b"content-type", media_type.encode()) for wire, media_type in _MEDIA_TYPES.items()
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
    # The decoder checks RLHF_MAX_ELEMENTS as soon as it knows the shapes, before it
    # builds the arrays of a JSON body or lays views on a binary one.
    with context.stage("decode"):
        payload = CODECS[request_format].decode_request(body, max_elements)
    context.record_shape(payload.rewards.size, payload.weights.size)
    return payload


def _computed(payload: UpdatePayload, answer_format: WireFormat, context: RequestContext) -> bytes:
    """The update, encoded in the answer's format."""
    with context.stage("compute"):
        result = payload.compute()
    context.kl_mean = result.stats.kl_mean
    with context.stage("encode"):
        return CODECS[answer_format].encode_response(result)
