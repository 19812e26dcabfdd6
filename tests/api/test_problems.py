"""Whatever a request raises becomes one problem+json answer: plain statuses, 500s, hang-ups."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.problems import problem_response
from app.core import InputProblem
from app.errors import InvalidPayloadError
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


def test_a_problem_document_is_a_few_kib_whatever_the_problems_hold() -> None:
    huge = "h" * 100_000
    problems = [InputProblem((huge, i, huge), f"{huge} is wrong") for i in range(1000)]
    response = problem_response(InvalidPayloadError(problems, unlisted=10**6))
    document = json.loads(bytes(response.body))
    assert len(response.body) < 4096
    assert len(document["detail"]) <= 500
    assert 1 <= len(document["errors"]) <= 20
    assert all(len(str(part)) <= 40 for error in document["errors"] for part in error["loc"])
    assert document["errors"][0]["loc"][1] == 0


def test_errors_are_listed_while_they_fit_and_the_detail_counts_them_all() -> None:
    problems = [InputProblem(("rewards", i), f"rewards[{i}] {'is wrong ' * 40}") for i in range(30)]
    response = problem_response(InvalidPayloadError(problems, unlisted=5))
    document = json.loads(bytes(response.body))
    assert len(response.body) < 4096
    assert 1 < len(document["errors"]) < 20  # cut by size before the count of 20
    assert [error["loc"] for error in document["errors"]] == [
        ["rewards", i] for i in range(len(document["errors"]))
    ]
    assert document["detail"].endswith("(and 34 more problems)")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/update/"),
        ("GET", "/healthz/"),
        ("GET", "/readyz/"),
        ("GET", "/metrics/"),
        ("GET", "/docs/"),
        ("GET", "/docs-assets"),
    ],
)
def test_a_trailing_slash_is_404_never_a_redirect_built_from_the_host_header(
    client: TestClient, method: str, path: str
) -> None:
    host = "attacker.invalid"
    response = client.request(method, path, headers={"host": host}, follow_redirects=False)
    assert_problem(response, 404)
    assert "location" not in response.headers
    assert host not in response.text
    assert not [value for value in response.headers.values() if host in value]
