"""X-Request-ID on every response: the client's, when it is a sane token, or a fresh one."""

from __future__ import annotations

import random
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..ops.context import open_context, scope_header

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "new_request_id", "valid_request_id"]

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()  # as ASGI servers pass header names
# Letters, digits, dot, underscore, dash: safe in logs and headers, no room for injection.
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def new_request_id() -> str:
    """A fresh, unique request id: 128 random bits as 32 hex digits."""
    # As unique as a uuid4 (which keeps 122 of its bits random), without a UUID object or
    # a system call per request. An id needs to be unique, not secret: `random` is seeded
    # from the OS at start-up, and again in every forked worker.
    return f"{random.getrandbits(128):032x}"


def valid_request_id(candidate: str | None) -> str:
    """The client's id when it matches ``^[A-Za-z0-9._-]{1,128}$``, else a fresh one."""
    if candidate is not None and _VALID.fullmatch(candidate):
        return candidate
    return new_request_id()


class RequestIdMiddleware:
    """Outermost layer: opens the request's context and stamps its id on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = valid_request_id(scope_header(scope, _REQUEST_ID_KEY))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with open_context(request_id):
            await self.app(scope, receive, send_with_id)
