"""Give the 413 of FastAPI's body limit the problem+json format of every other error.

FastAPI's `max_body_size` answers 413 from Starlette's `RequestBodyLimitMiddleware`, which
sits outside every exception handler and writes plain text. This wrapper, just outside
FastAPI's own stack, rewrites exactly that response; everything else passes through.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BodyTooLargeError
from .problems import problem_response

__all__ = ["ProblemBodyLimit"]


class ProblemBodyLimit:
    """ASGI wrapper turning the body limiter's plain-text 413 into problem+json."""

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replacing = False

        async def send_problem_on_413(message: Message) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and _is_plain_413(message):
                replacing = True
                return
            if replacing:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    await problem_response(BodyTooLargeError(self.max_body_size))(
                        scope, receive, send
                    )
                return
            await send(message)

        await self.app(scope, receive, send_problem_on_413)


def _is_plain_413(message: Message) -> bool:
    if message["status"] != BodyTooLargeError.status:
        return False
    headers = dict(message.get("headers", []))
    content_type: bytes = headers.get(b"content-type", b"")
    return content_type.startswith(b"text/plain")
