"""How one block of a sharded update reaches a server: a POST, its answer.

`ShardedClient` speaks only this protocol, so the same fan-out runs over HTTP (one
`BlockTransport` per base URL) or over a Ray Serve `DeploymentHandle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BlockAnswer:
    """A server's answer to one POST: status, headers (lower-case names), body."""

    status: int
    headers: Mapping[str, str]
    content: bytes


class BlockTransport(Protocol):
    """Posts one request body to one path of the service and returns its answer."""

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
        """POST `content` to `path` (for example ``"/update/grad"``) with `headers`."""
        ...

    async def aclose(self) -> None:
        """Release what the transport holds (connections, handles)."""
        ...
