"""The optional bearer token of /update (RLHF_API_TOKEN or RLHF_API_TOKEN_FILE)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import UnauthorizedError

__all__ = ["bearer_token_check", "verify_bearer_token"]

# Declares the scheme in OpenAPI and parses the header; the 401 is ours (problem+json).
_bearer = HTTPBearer(auto_error=False, description="The token set in RLHF_API_TOKEN.")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def bearer_token_check(token: str) -> Callable[[Request, Credentials], Awaitable[None]]:
    """A dependency that lets a request through only with `Authorization: Bearer <token>`."""
    expected = token.encode()

    async def require_bearer_token(request: Request, credentials: Credentials) -> None:
        # HTTPBearer reads the first Authorization header; a second one must not be
        # ignored (a proxy's and a client's, say), so the request is refused outright.
        if len(request.headers.getlist("authorization")) > 1:
            msg = "several Authorization headers; send exactly one"
            raise UnauthorizedError(msg)
        verify_bearer_token(credentials, expected)

    return require_bearer_token


def verify_bearer_token(credentials: HTTPAuthorizationCredentials | None, expected: bytes) -> None:
    """Raise `UnauthorizedError` (401) unless `credentials` carry the token `expected`."""
    if credentials is None:
        msg = "this endpoint needs an 'Authorization: Bearer <token>' header"
        raise UnauthorizedError(msg)
    # Constant time, so the comparison does not reveal how much of a guess was right.
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        msg = "the bearer token is not valid"
        raise UnauthorizedError(msg)
