"""The request context's reading of a header straight off the ASGI scope."""

from __future__ import annotations

from typing import Any

from app.ops.context import scope_header


def test_scope_header_reads_the_first_value_of_a_header() -> None:
    raw = [
        (b"content-type", b"application/json"),
        (b"x-request-id", b"first"),
        (b"x-request-id", b"second"),
        (b"x-note", "caf\u00e9".encode("latin-1")),
    ]
    scope: dict[str, Any] = {"type": "http", "headers": raw}
    assert scope_header(scope, b"x-request-id") == "first"
    assert scope_header(scope, b"content-type") == "application/json"
    # Header bytes are latin-1, as HTTP/1.1 defines them.
    assert scope_header(scope, b"x-note") == "caf\u00e9"
    assert scope_header(scope, b"accept") is None
