"""The wire: request bytes to an `UpdatePayload`, an `UpdateResult` to answer bytes.

No HTTP framework here. Each format module offers the same two functions,
`decode_request` and `encode_response`; `media` says which format a Content-Type or an
Accept header asks for, and `CODECS` maps the format to its module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..core import UpdateResult
from . import json_codec, safetensors_codec
from .media import WireFormat
from .payload import UpdatePayload

__all__ = ["CODECS", "Codec"]


class Codec(Protocol):
    """What a wire format module offers."""

    def decode_request(self, body: bytearray, max_elements: int | None = ..., /) -> UpdatePayload:
        """Decode `body`; 413 when B*N + B + N exceeds `max_elements` (when given)."""
        ...

    def encode_response(self, result: UpdateResult, /) -> bytes: ...


CODECS: Mapping[WireFormat, Codec] = {"json": json_codec, "safetensors": safetensors_codec}
