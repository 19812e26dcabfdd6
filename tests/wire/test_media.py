"""Which wire format a Content-Type asks for, and which one an Accept header prefers."""

from __future__ import annotations

import pytest

from app.errors import UnsupportedMediaTypeError
from app.wire.media import require_identity_encoding, response_format, wire_format


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
        ("application/*", "json"),
        ("text/html", "json"),
        ("application/x-safetensors", "safetensors"),
        ("APPLICATION/X-SAFETENSORS", "safetensors"),
        ("application/x-safetensors; q=0.0", "json"),
        # q-values decide, not the order of the list and not a mere mention.
        ("application/x-safetensors;q=0.1, application/json", "json"),
        ("application/json;q=0.1, application/x-safetensors", "safetensors"),
        ("application/x-safetensors, application/json;q=0.5", "safetensors"),
        ("application/json;q=0.5, application/x-safetensors;q=0.6", "safetensors"),
        # A tie goes to JSON; a media type beats a wildcard of the same q.
        ("application/x-safetensors, application/json", "json"),
        ("application/x-safetensors, */*", "safetensors"),
        # The most specific range sets a type's q: */* does not undo an explicit q=0.
        ("application/x-safetensors;q=0, */*", "json"),
        ("*/*;q=0.1, application/x-safetensors;q=0.2", "safetensors"),
        # An item with an invalid q is dropped (RFC 9110).
        ("application/x-safetensors; q=bogus", "json"),
        ("application/x-safetensors; q=1.5, application/json;q=0.1", "json"),
        # A quoted comma does not split an item, nor does a type inside quotes count.
        ('application/json;q=0.9, text/plain; note="x, application/x-safetensors"', "json"),
    ],
)
def test_response_format_is_negotiated_by_q_value(accept: str | None, expected: str) -> None:
    assert response_format(accept) == expected


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        'application/json; charset="iso-8859-1"',
        "application/x-safetensors; charset=ascii",
    ],
)
def test_a_charset_other_than_utf8_is_refused(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="UTF-8"):
        wire_format(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "application/json; charset=UTF8",
        'a/b+json; charset="UTF-8"',
    ],
)
def test_utf8_is_accepted_in_any_spelling(content_type: str) -> None:
    assert wire_format(content_type) == "json"


@pytest.mark.parametrize("encodings", [["gzip"], ["identity, br"], ["identity", "deflate"], ["x"]])
def test_a_content_coding_other_than_identity_is_refused(encodings: list[str]) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="Content-Encoding") as info:
        require_identity_encoding(encodings)
    assert info.value.headers == {"Accept-Encoding": "identity"}


@pytest.mark.parametrize("encodings", [[], ["identity"], ["IDENTITY"], ["identity, identity"]])
def test_identity_or_no_content_coding_is_accepted(encodings: list[str]) -> None:
    require_identity_encoding(encodings)
