"""Read a request body once, into one buffer."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["read_body"]


async def read_body(request: Request) -> bytearray:
    """Return the whole body in one `bytearray`, each chunk appended in place.

    Starlette's `Request.body()` keeps every chunk and joins them at the end, which holds
    the body twice at its peak. Here each chunk is appended to one buffer as it arrives.
    CPython grows a bytearray with `realloc`, which for large blocks remaps pages instead
    of copying them, so the body is held once, plus at most an eighth of headroom. A buffer
    preallocated from the Content-Length would be no smaller, and slower: `bytearray(n)`
    writes n zeros first, a pass over the memory that costs as much as the copy itself.
    The body limit applies to `request.stream()` as it does to `body()`.
    """
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
    return buffer
