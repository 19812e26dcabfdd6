"""Whatever a request raises becomes one problem+json answer: plain statuses, 500s, hang-ups."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.wire.payload import UpdatePayload
from tests.helpers.asgi import raw_post
from tests.helpers.problems import assert_problem


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(client: TestClient, method: str) -> None:
    response = client.request(method, "/update")
    assert_problem(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "POST"


def test_unknown_path_is_404(client: TestClient) -> None:
    assert_problem(client.get("/nope"), 404, "/nope")


def test_unexpected_error_is_a_500_problem_without_a_traceback(
    settings: Settings, example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: UpdatePayload) -> None:
        msg = "secret internal state"
        raise RuntimeError(msg)

    monkeypatch.setattr(UpdatePayload, "compute", broken)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/update", json=example)
    problem = assert_problem(response, 500)
    assert problem["type"] == "urn:rlhf-update:problem:internal-error"
    assert "secret" not in response.text


def test_client_hang_up_is_not_a_server_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"weights": [1.0,', "more_body": True},
        {"type": "http.disconnect"},
    ]
    with caplog.at_level(logging.INFO, logger="app"):
        exchange = raw_post(create_app(settings), headers, messages)
    assert exchange.status == 400
    assert "client disconnected" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
