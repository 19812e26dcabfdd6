"""Read a request body once, into one buffer, within a time limit and a memory budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from ..errors import BodyTimeoutError, BodyTooLargeError, UploadBudgetError

__all__ = [
    "UPLOAD_BUDGET_BODIES",
    "UploadBudget",
    "body_timeout",
    "limited_chunks",
    "read_body",
    "read_chunks",
]

# The budget of a worker's bodies, in bodies of the largest size (RLHF_MAX_BODY_SIZE): room
# for a few of them at once, whoever sends them, and a bound on what they cost together.
UPLOAD_BUDGET_BODIES = 4


class UploadBudget:
    """The bytes of request bodies a worker holds, from their first byte to their answer.

    Counted as the bytes arrive, not from what a Content-Length declares, and capped at
    `limit`: a chunk that would pass the cap is refused rather than buffered.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        """Count `size` more bytes held.

        Raises
        ------
        UploadBudgetError
            When they would bring the total past `limit`; nothing is counted then.
        """
        if self.held + size > self.limit:
            msg = (
                f"the request bodies this worker holds would pass its budget of {self.limit} "
                f"bytes ({UPLOAD_BUDGET_BODIES} x RLHF_MAX_BODY_SIZE); "
                "retry after the delay in Retry-After"
            )
            raise UploadBudgetError(msg)
        self.held += size

    def give_back(self, size: int) -> None:
        """Count `size` bytes no longer held."""
        self.held -= size


async def read_body(request: Request, budget: UploadBudget, idle_timeout: float) -> bytearray:
    """`read_chunks` of the request's stream (within the body limit of the app, if any)."""
    return await read_chunks(request.stream(), budget, idle_timeout)


async def limited_chunks(
    receive: Receive, content_length: str | None, limit: int
) -> AsyncIterator[bytes | bytearray]:
    """The chunks of a body straight from ASGI `receive`, at most `limit` bytes in all.

    What `Request.stream()` yields under Starlette's body limit, without a Request: a
    Content-Length above `limit` is refused before anything is read, and so is a chunk
    that brings the bytes received past it.

    Raises
    ------
    BodyTooLargeError
        At once for a declared size above `limit`, or as the bytes pass it.
    ClientDisconnect
        When the client leaves before the end of the body.
    """
    declared = _declared_length(content_length)
    if declared is not None and declared > limit:
        raise BodyTooLargeError(limit)
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk: bytes | bytearray = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise BodyTooLargeError(limit)
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect


def _declared_length(value: str | None) -> int | None:
    # As Starlette's body limit reads the header: whatever int() does not take is no size.
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def read_chunks(
    chunks: AsyncIterator[bytes | bytearray], budget: UploadBudget, idle_timeout: float
) -> bytearray:
    """Return the whole body in one `bytearray`, each chunk appended in place.

    Each chunk is counted in `budget` before it is kept; the caller gives `len(body)` back
    once the request is answered (on an error here, this function gives back what it took).
    A body that brings no new byte for `idle_timeout` seconds ends with `BodyTimeoutError`.

    Starlette's `Request.body()` keeps every chunk and joins them at the end, which holds
    the body twice at its peak. Here each chunk is appended to one buffer as it arrives.
    CPython grows a bytearray with `realloc`, which for large blocks remaps pages instead
    of copying them, so the body is held once, plus at most an eighth of headroom. A buffer
    preallocated from the Content-Length would be no smaller, and slower: `bytearray(n)`
    writes n zeros first, a pass over the memory that costs as much as the copy itself.
    The body limit applies to `request.stream()` as it does to `body()`, and
    `limited_chunks` applies it to `receive`. A first chunk that comes as a bytearray (as
    `http_protocol` hands them over) becomes the buffer itself: a body that arrives in one
    chunk is not copied here at all.

    Raises
    ------
    BodyTimeoutError
        When no byte arrived for `idle_timeout` seconds.
    UploadBudgetError
        When the next chunk would pass the budget.
    """
    buffer = bytearray()
    watch = _IdleWatch(idle_timeout)
    try:
        async for chunk in chunks:
            budget.take(len(chunk))
            if buffer or type(chunk) is not bytearray:
                buffer += chunk
            else:  # the first chunk, in a buffer of its own: kept, not copied
                buffer = chunk
            watch.progressed()
    except asyncio.CancelledError:
        budget.give_back(len(buffer))
        if not watch.expired:
            raise
        watch.task.uncancel()
        raise body_timeout(idle_timeout, len(buffer)) from None
    except BaseException:
        budget.give_back(len(buffer))
        raise
    finally:
        watch.stop()
    return buffer


class _IdleWatch:
    """Cancel the current task once `timeout` seconds pass without `progressed()`.

    One timer per body, moved on only when it fires early: a chunk costs a clock read,
    not a new timer (which `asyncio.timeout` would reschedule for every chunk).
    """

    __slots__ = ("_handle", "_last", "_loop", "_timeout", "expired", "task")

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # read_body is awaited in the request's task
        self.task = task
        self.expired = False
        self._timeout = timeout
        self._last = self._loop.time()
        self._handle = self._loop.call_at(self._last + timeout, self._check)

    def progressed(self) -> None:
        self._last = self._loop.time()

    def stop(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        deadline = self._last + self._timeout
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._check)
            return
        self.expired = True
        self.task.cancel()


def body_timeout(idle_timeout: float, received: int) -> BodyTimeoutError:
    """The 408 of a body that brought no new byte for `idle_timeout` seconds."""
    msg = (
        f"no byte of the request body arrived for {idle_timeout:g} s "
        f"(RLHF_BODY_TIMEOUT_SECONDS) after {received} bytes; the connection is closed"
    )
    return BodyTimeoutError(msg)
