"""X-Request-ID on every response, and `request_id` in every problem body."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.request_id import valid_request_id
from app.main import create_app
from app.settings import Settings
from app.wire.payload import UpdatePayload
from tests.helpers.asgi import body_chunks, raw_post

FRESH = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("abc", id="word"),
        pytest.param("A.b_c-9", id="punctuation"),
        pytest.param("x" * 128, id="longest"),
        pytest.param("7", id="one-char"),
    ],
)
def test_a_sane_client_id_comes_back_unchanged(
    client: TestClient, example: dict[str, Any], client_id: str
) -> None:
    response = client.post("/update", json=example, headers={"X-Request-ID": client_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == client_id


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("x" * 129, id="too-long"),
        pytest.param("a b", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param("id\u00e9".encode("latin-1"), id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param("a;rm -rf", id="shell"),
    ],
)
def test_any_other_client_id_is_replaced(client: TestClient, client_id: str | bytes) -> None:
    raw_id = client_id.encode() if isinstance(client_id, str) else client_id
    response = client.get("/healthz", headers={b"X-Request-ID": raw_id})
    assert FRESH.fullmatch(response.headers["x-request-id"])


def test_fresh_ids_are_unique(client: TestClient) -> None:
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(50)}
    assert len(ids) == 50
    assert all(FRESH.fullmatch(i) for i in ids)


def test_validation_rule() -> None:
    assert valid_request_id("ok-1.2_3") == "ok-1.2_3"
    assert valid_request_id(None) != valid_request_id(None)


def _error_responses(client: TestClient, example: dict[str, Any]) -> dict[str, Any]:
    json_headers = {"content-type": "application/json", "X-Request-ID": "req-1"}
    return {
        "400": client.post("/update", content=b"{", headers=json_headers),
        "404": client.get("/nowhere", headers={"X-Request-ID": "req-1"}),
        "405": client.get("/update", headers={"X-Request-ID": "req-1"}),
        "413": client.post("/update", content=b" " * 2000, headers=json_headers),
        "415": client.post(
            "/update", content=b"x", headers={"content-type": "text/plain", "X-Request-ID": "req-1"}
        ),
        "422": client.post("/update", json=example | {"lr": -1}, headers={"X-Request-ID": "req-1"}),
    }


def test_every_error_carries_the_id_in_header_and_body(example: dict[str, Any]) -> None:
    with TestClient(create_app(Settings(max_body_size=1000))) as client:
        responses = _error_responses(client, example)
    for status, response in responses.items():
        assert str(response.status_code) == status
        assert response.headers["x-request-id"] == "req-1", status
        assert response.headers["content-type"] == "application/problem+json", status
        assert response.json()["request_id"] == "req-1", status


def test_413_of_the_outer_body_limit_carries_the_id() -> None:
    # A declared Content-Length over the limit is refused before the app reads anything.
    app = create_app(Settings(max_body_size=1000))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"5000000"),
        (b"x-request-id", b"big-1"),
    ]
    exchange = raw_post(app, headers, body_chunks([b" " * 100_000] * 50))
    assert exchange.status == 413
    assert exchange.received == 0
    start_headers = dict(exchange.sent[0]["headers"])
    assert start_headers[b"x-request-id"] == b"big-1"
    body = b"".join(m.get("body", b"") for m in exchange.sent[1:])
    assert b'"request_id":"big-1"' in body


def test_500_carries_the_id(
    client: TestClient, example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: object) -> None:
        msg = "boom"
        raise RuntimeError(msg)

    monkeypatch.setattr(UpdatePayload, "compute", explode)
    no_raise = TestClient(client.app, raise_server_exceptions=False)
    response = no_raise.post("/update", json=example, headers={"X-Request-ID": "oops-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "oops-1"
    assert response.json()["request_id"] == "oops-1"
