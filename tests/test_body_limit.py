"""The 413 of FastAPI's max_body_size: problem+json, and refused before the body is read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

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


def _raw_post(app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, int]:
    """POST through the raw ASGI interface; return the status and how many chunks were read."""
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        more = read < len(chunks)
        return {"type": "http.request", "body": chunks[read - 1], "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/update",
        "raw_path": b"/update",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], read


def test_declared_oversize_body_is_refused_without_reading_it() -> None:
    app = create_app(Settings(max_body_size=LIMIT))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"500000000")]
    status, read = _raw_post(app, headers, [b" " * 100_000] * 5000)
    assert status == 413
    assert read == 0


def test_undeclared_oversize_body_is_refused_at_the_chunk_that_crosses_the_limit() -> None:
    app = create_app(Settings(max_body_size=LIMIT))
    status, read = _raw_post(app, [(b"content-type", b"application/json")], [b" " * 400] * 100)
    assert status == 413
    assert read == 3
