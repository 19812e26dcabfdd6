"""The 413 of FastAPI's max_body_size: problem+json, and refused before the body is read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.helpers.asgi import body_chunks, raw_post

LIMIT = 1000


@pytest.fixture
def small_client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_body_size=LIMIT))) as client:
        yield client


def _assert_413(response: Any) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:rlhf-update:problem:body-too-large"
    assert problem["status"] == 413
    assert f"limit of {LIMIT} bytes" in problem["detail"]
    assert "RLHF_MAX_BODY_SIZE" in problem["detail"]


def test_body_above_the_limit_is_413(small_client: TestClient) -> None:
    body = b'{"weights": [' + b"1.0, " * 300 + b"1.0]}"
    _assert_413(
        small_client.post("/update", content=body, headers={"content-type": "application/json"})
    )


def test_chunked_body_above_the_limit_is_413(small_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 300

    _assert_413(
        small_client.post("/update", content=chunks(), headers={"content-type": "application/json"})
    )


def test_body_at_the_limit_is_read(small_client: TestClient, example: dict[str, Any]) -> None:
    body = json.dumps(example).encode()
    body += b" " * (LIMIT - len(body))
    assert len(body) == LIMIT
    assert small_client.post("/update", content=body).status_code == 200


def test_limit_comes_from_settings(example: dict[str, Any]) -> None:
    tiny = Settings(max_body_size=10)
    with TestClient(create_app(tiny)) as client:
        response = client.post("/update", json=example)
    assert response.status_code == 413
    assert "limit of 10 bytes" in response.json()["detail"]


def test_declared_oversize_body_is_refused_without_reading_it() -> None:
    app = create_app(Settings(max_body_size=LIMIT))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"500000000")]
    exchange = raw_post(app, headers, body_chunks([b" " * 100_000] * 5000))
    assert exchange.status == 413
    assert exchange.received == 0


def test_undeclared_oversize_body_is_refused_at_the_chunk_that_crosses_the_limit() -> None:
    app = create_app(Settings(max_body_size=LIMIT))
    headers = [(b"content-type", b"application/json")]
    exchange = raw_post(app, headers, body_chunks([b" " * 400] * 100))
    assert exchange.status == 413
    assert exchange.received == 3
