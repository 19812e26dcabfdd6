"""Read a request body once, into one buffer sized from its Content-Length."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["read_body"]


async def read_body(request: Request) -> bytearray:
    """Return the whole body in one `bytearray`, filled in place chunk by chunk.

    Starlette's `Request.body()` keeps every chunk and joins them at the end, which holds
    the body twice at its peak. Here the buffer is allocated once from the Content-Length
    and each chunk is copied into place; without a Content-Length the buffer grows as
    chunks arrive. The body limit applies to `request.stream()` as it does to `body()`.
    """
    declared = _content_length(request.headers.get("content-length"))
    buffer: bytearray | None = None
    filled = 0
    async for chunk in request.stream():
        if buffer is None:
            # Allocated when the first chunk arrives: by then the body limit has refused
            # a declared size above it, so a client cannot make us allocate that size.
            buffer = bytearray(declared or 0)
        end = filled + len(chunk)
        # Equal-length slice assignment copies in place; past the end it grows the buffer.
        buffer[filled:end] = chunk
        filled = end
    if buffer is None:
        return bytearray()
    # Fewer bytes than declared: keep what arrived (shrinking a bytearray does not copy).
    del buffer[filled:]
    return buffer


def _content_length(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None
