"""A progress bar on large uploads: an httpx2 transport that sends the body in chunks.

The body is already in memory (the client encodes it whole); the transport hands it to
the connection in pieces of `CHUNK_BYTES` and moves a tqdm bar (the `[cli]` extra) on
stderr after each. Bodies under `min_bytes` go as they are.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx2

__all__ = ["CHUNK_BYTES", "ProgressTransport"]

CHUNK_BYTES = 1 << 20


class _ChunkedBody(httpx2.SyncByteStream):
    def __init__(self, body: bytes, label: str) -> None:
        self._body = body
        self._label = label

    def __iter__(self) -> Iterator[bytes]:
        from tqdm import tqdm

        view = memoryview(self._body)
        with tqdm(
            total=len(view),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=self._label,
            file=sys.stderr,
            leave=False,
        ) as bar:
            for start in range(0, len(view), CHUNK_BYTES):
                piece = bytes(view[start : start + CHUNK_BYTES])
                yield piece
                bar.update(len(piece))


class ProgressTransport(httpx2.BaseTransport):
    """Send through `inner`, with a progress bar for request bodies of `min_bytes` or more."""

    def __init__(self, inner: httpx2.BaseTransport, min_bytes: int) -> None:
        self._inner = inner
        self._min_bytes = min_bytes

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        length = int(request.headers.get("content-length", "0"))
        if length >= self._min_bytes:
            # The Content-Length stays: the body is the same bytes, only sent in pieces.
            request.stream = _ChunkedBody(request.read(), f"upload {request.url.path}")
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
