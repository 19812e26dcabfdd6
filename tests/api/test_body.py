"""Reading the request body: once, into one buffer."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest
from starlette.requests import Request

from app.api.body import read_body
from tests.helpers.asgi import body_chunks

MiB = 1024 * 1024


def _request(chunks: Sequence[bytes], content_length: int | None) -> Request:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    messages = iter(body_chunks(chunks))

    async def receive() -> dict[str, Any]:
        return next(messages)

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def _read(chunks: Sequence[bytes], content_length: int | None) -> bytearray:
    return asyncio.run(read_body(_request(chunks, content_length)))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_arrives_whole(declared: bool) -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    body = b"".join(chunks)
    result = _read(chunks, len(body) if declared else None)
    assert isinstance(result, bytearray)
    assert result == body


def test_fewer_bytes_than_declared_keeps_what_arrived() -> None:
    assert _read([b"abc", b"de"], 100) == b"abcde"


def test_more_bytes_than_declared_are_kept() -> None:
    assert _read([b"abc", b"defgh"], 4) == b"abcdefgh"


def test_empty_body() -> None:
    assert _read([b""], 0) == b""
    assert _read([b""], None) == b""


def test_the_body_is_held_once_not_chunks_and_a_join() -> None:
    # 16 MiB in 64 KiB chunks, as uvicorn delivers them: appending to one buffer peaks at
    # the body's size plus bytearray's headroom (an eighth); keeping the chunks and joining
    # them would peak at twice the body.
    chunks = [bytes([i % 256]) * (64 * 1024) for i in range(256)]
    size = 256 * 64 * 1024

    async def read_traced() -> tuple[bytearray, int]:
        # Traced inside the loop: asyncio.run's own start and teardown are not the reader's.
        tracemalloc.start()
        try:
            body = await read_body(_request(chunks, size))
            return body, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    body, peak = asyncio.run(read_traced())
    assert len(body) == size
    assert body[-1] == 255
    assert size <= peak <= size * 9 // 8 + MiB
