"""Slow senders on raw sockets: POST /update heads whose bodies trickle in a byte at a time.

Used by `make load`'s slow-sender phase and by the real-socket tests: an HTTP client
library would buffer or time out where a slow or stalled client simply waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

__all__ = ["SlowSender", "status_of", "trickle", "update_head"]


def update_head(
    content_length: int, token: str | None = None, content_type: str = "application/json"
) -> bytes:
    """The request line and headers of a POST /update declaring `content_length` bytes."""
    lines = [
        "POST /update HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {content_length}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(answer: bytes) -> int | None:
    """The status code of the first response in `answer`, or None before its status line."""
    line, _, _ = answer.partition(b"\r\n")
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


@dataclass
class SlowSender:
    """What one slow connection sent and got back."""

    authenticated: bool
    sent: int = 0
    answer: bytes = b""
    closed_by_server: bool = False
    error: str | None = None

    @property
    def status(self) -> int | None:
        """The status of the server's answer, or None while it has not answered."""
        return status_of(self.answer)


async def trickle(
    host: str,
    port: int,
    sender: SlowSender,
    *,
    content_length: int,
    token: str | None,
    first: bytes = b"{",
    interval: float = 1.0,
    stop: asyncio.Event,
) -> None:
    """Send a head declaring `content_length` bytes, `first`, then one space per `interval`.

    Spaces keep a JSON body well-formed up to where it stops. Ends when `stop` is set, the
    body is complete, or the server closes the connection; reads whatever it answers.
    """
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        sender.error = f"connect: {exc}"
        return

    async def read_answer() -> None:
        while chunk := await reader.read(65536):
            sender.answer += chunk
        sender.closed_by_server = True

    reading = asyncio.create_task(read_answer())
    try:
        writer.write(update_head(content_length, token) + first)
        await writer.drain()
        sender.sent = len(first)
        while sender.sent < content_length and not reading.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            writer.write(b" ")
            await writer.drain()
            sender.sent += 1
    except OSError as exc:  # the server closed the connection while this one wrote
        sender.error = f"write: {type(exc).__name__}"
    finally:
        # Stop reading first: once this side closes, the reader would see its own EOF.
        if not reading.done():
            reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await reading
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
