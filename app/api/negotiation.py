"""What a request's headers say of its body and of its answer, read before the body is."""

from __future__ import annotations

from starlette.types import Scope

from ..ops.context import scope_header, scope_header_values
from ..wire.media import WireFormat, require_identity_encoding, response_format, wire_format

__all__ = ["negotiated_formats"]


def negotiated_formats(scope: Scope) -> tuple[WireFormat, WireFormat]:
    """The body's wire format and the answer's, from Content-Type, Content-Encoding, Accept.

    Called before the body is read: a request these headers refuse (a 415) is answered
    without a byte of its body read or held, however large it is. Accept refuses nothing:
    an answer it does not name is JSON.
    """
    request_format = wire_format(scope_header(scope, b"content-type"))
    require_identity_encoding(scope_header_values(scope, b"content-encoding"))
    answer_format = response_format(scope_header(scope, b"accept"))
    return request_format, answer_format
