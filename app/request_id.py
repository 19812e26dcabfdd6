"""X-Request-ID on every response: the client's, when it is a sane token, or a fresh one."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.request_context import open_context

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "new_request_id", "valid_request_id"]

REQUEST_ID_HEADER = "X-Request-ID"
# Letters, digits, dot, underscore, dash: safe in logs and headers, no room for injection.
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def new_request_id() -> str:
    """A fresh, unique request id (32 hex digits)."""
    return uuid.uuid4().hex


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
        request_id = valid_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with open_context(request_id):
            await self.app(scope, receive, send_with_id)
