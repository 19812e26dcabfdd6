"""Which wire format a Content-Type asks for, and which one an Accept header prefers."""

from __future__ import annotations

import pytest

from app.errors import UnsupportedMediaTypeError
from app.wire.media import response_format, wire_format


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, "json"),
        ("application/json", "json"),
        ("application/problem+json; charset=utf-8", "json"),
        ("application/x-safetensors", "safetensors"),
        ("Application/Octet-Stream", "safetensors"),
    ],
)
def test_wire_format(content_type: str | None, expected: str) -> None:
    assert wire_format(content_type) == expected


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-numpy"])
def test_wire_format_refuses_other_media_types(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="application/x-safetensors"):
        wire_format(content_type)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("application/x-safetensors;q=0.1, application/json", "safetensors"),
        ("application/x-safetensors; q=0.0", "json"),
        ("application/x-safetensors; q=bogus", "safetensors"),
    ],
)
def test_response_format(accept: str | None, expected: str) -> None:
    assert response_format(accept) == expected
