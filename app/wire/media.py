"""Content negotiation for /update: which codec reads the body, which one writes the answer.

Headers are parsed by Werkzeug (`parse_options_header`, `parse_accept_header` with
`MIMEAccept`), the Pallets project's implementation of RFC 9110: quoted parameters, q-values
(an invalid one drops its item) and the precedence of the more specific media range. The
standard library has a parser for parameters (`email.message`) but none for Accept.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from ..errors import UnsupportedMediaTypeError

__all__ = [
    "JSON_MEDIA_TYPE",
    "SAFETENSORS_MEDIA_TYPE",
    "BodyFormat",
    "WireFormat",
    "body_format",
    "require_identity_encoding",
    "response_format",
    "wire_format",
]

JSON_MEDIA_TYPE = "application/json"
SAFETENSORS_MEDIA_TYPE = "application/x-safetensors"
_BINARY_MEDIA_TYPES = frozenset({SAFETENSORS_MEDIA_TYPE, "application/octet-stream"})
# What the answer can be, in the service's order of preference when Accept ranks them
# equally (as */* does): JSON first.
_ANSWER_MEDIA_TYPES = (JSON_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE)
_IDENTITY = "identity"
# UTF-8 by its IANA name and the alias clients write (not codecs.lookup, which caches
# every name it is asked about, a cache any client could fill).
_UTF8 = frozenset({"utf-8", "utf8"})

WireFormat = Literal["json", "safetensors"]
# "other" is a Content-Type we do not read (answered 415); it keeps metric labels bounded.
BodyFormat = Literal["json", "safetensors", "other"]


def body_format(content_type: str | None) -> BodyFormat:
    """Which format a body with this Content-Type is in.

    A missing Content-Type is read as JSON, as FastAPI does for its own bodies.

    >>> body_format("application/json; charset=utf-8"), body_format(None)
    ('json', 'json')
    >>> body_format("application/vnd.api+json"), body_format("application/octet-stream")
    ('json', 'safetensors')
    >>> body_format("text/plain")
    'other'
    """
    if content_type is None:
        return "json"
    media_type = _media_type(content_type)
    if media_type == JSON_MEDIA_TYPE or media_type.endswith("+json"):
        return "json"
    if media_type in _BINARY_MEDIA_TYPES:
        return "safetensors"
    return "other"


def wire_format(content_type: str | None) -> WireFormat:
    """The format of a request body with this Content-Type.

    Raises
    ------
    UnsupportedMediaTypeError
        415 for a media type we do not read, or a charset other than UTF-8.
    """
    kind = body_format(content_type)
    if kind == "other":
        media_type = _media_type(content_type or "")
        msg = (
            f"Content-Type {media_type or '(empty)'!r} is not supported; send the body as "
            f"{JSON_MEDIA_TYPE} or {SAFETENSORS_MEDIA_TYPE}"
        )
        raise UnsupportedMediaTypeError(msg)
    charset = parse_options_header(content_type)[1].get("charset")
    if charset is not None and charset.lower() not in _UTF8:
        msg = f"charset {charset[:40]!r} is not supported; send the body in UTF-8"
        raise UnsupportedMediaTypeError(msg)
    return kind


def require_identity_encoding(content_encodings: Sequence[str]) -> None:
    """Refuse a body sent with a content coding (gzip, br, ...): only identity is read.

    `content_encodings` are the values of every Content-Encoding header, each a list.

    Raises
    ------
    UnsupportedMediaTypeError
        415 naming the coding, with ``Accept-Encoding: identity`` (RFC 9110, 15.5.16).
    """
    codings = [
        coding.strip().lower()
        for value in content_encodings
        for coding in value.split(",")
        if coding.strip()
    ]
    refused = [coding for coding in codings if coding != _IDENTITY]
    if refused:
        msg = (
            f"Content-Encoding {refused[0][:40]!r} is not supported; send the body "
            "uncompressed (Content-Encoding: identity, or none)"
        )
        error = UnsupportedMediaTypeError(msg)
        error.headers = {"Accept-Encoding": _IDENTITY}
        raise error


def response_format(accept: str | None) -> WireFormat:
    """The answer's format by the Accept header's q-values: JSON on a tie, or without one.

    >>> response_format("application/x-safetensors, application/json;q=0.5")
    'safetensors'
    >>> response_format("*/*"), response_format("application/x-safetensors;q=0, */*")
    ('json', 'json')
    """
    if accept is None:
        return "json"
    return _negotiated(accept)


# Clients send the same few Accept headers over and over; parsing one costs microseconds.
@functools.lru_cache(maxsize=64)
def _negotiated(accept: str) -> WireFormat:
    best = parse_accept_header(accept, MIMEAccept).best_match(
        _ANSWER_MEDIA_TYPES, default=JSON_MEDIA_TYPE
    )
    return "safetensors" if best == SAFETENSORS_MEDIA_TYPE else "json"


def _media_type(content_type: str) -> str:
    return parse_options_header(content_type)[0].lower()
