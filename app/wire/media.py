"""Content negotiation for /update: which codec reads the body, which one writes the answer."""

from __future__ import annotations

from typing import Literal

from ..errors import UnsupportedMediaTypeError

__all__ = [
    "JSON_MEDIA_TYPE",
    "SAFETENSORS_MEDIA_TYPE",
    "BodyFormat",
    "WireFormat",
    "body_format",
    "response_format",
    "wire_format",
]

JSON_MEDIA_TYPE = "application/json"
SAFETENSORS_MEDIA_TYPE = "application/x-safetensors"
_BINARY_MEDIA_TYPES = frozenset({SAFETENSORS_MEDIA_TYPE, "application/octet-stream"})

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
    """The format of a request body with this Content-Type; 415 for one we do not read."""
    kind = body_format(content_type)
    if kind != "other":
        return kind
    media_type = _media_type(content_type or "")
    msg = (
        f"Content-Type {media_type or '(empty)'!r} is not supported; send the body as "
        f"{JSON_MEDIA_TYPE} or {SAFETENSORS_MEDIA_TYPE}"
    )
    raise UnsupportedMediaTypeError(msg)


def response_format(accept: str | None) -> WireFormat:
    """Safetensors when the Accept header lists application/x-safetensors, JSON otherwise."""
    if accept is None:
        return "json"
    for item in accept.split(","):
        media_type, _, params = item.partition(";")
        if media_type.strip().lower() == SAFETENSORS_MEDIA_TYPE and not _refused(params):
            return "safetensors"
    return "json"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _refused(params: str) -> bool:
    """Whether the media range's parameters carry q=0, the client's way of saying "not this"."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value) == 0
            except ValueError:
                return False
    return False
