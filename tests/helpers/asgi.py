"""Drive the app through the raw ASGI interface, to control exactly what the client sends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawExchange:
    """What one raw request produced: the messages the app sent, and how many it received."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status


def raw_post(
    app: Any,
    headers: Sequence[tuple[bytes, bytes]],
    messages: Sequence[dict[str, Any]],
    path: str = "/update",
    *,
    then_stall: bool = False,
) -> RawExchange:
    """POST `path`, answering the app's receive() calls with `messages`, one each, in order.

    With `then_stall`, a receive() past the last message never returns, as for a client
    that stopped sending and stays connected.
    """
    exchange = RawExchange()

    async def receive() -> dict[str, Any]:
        exchange.received += 1
        if then_stall and exchange.received > len(messages):
            await asyncio.Event().wait()
        return messages[exchange.received - 1]

    async def send(message: dict[str, Any]) -> None:
        exchange.sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))
    return exchange


def body_chunks(chunks: Sequence[bytes | bytearray]) -> list[dict[str, Any]]:
    """The http.request messages of a body sent in `chunks`."""
    last = len(chunks) - 1
    return [
        {"type": "http.request", "body": chunk, "more_body": i < last}
        for i, chunk in enumerate(chunks)
    ]
