"""The optional bearer token: off by default, 401 problem+json when set and not given."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

TOKEN = "s3cret-T0ken"


@pytest.fixture
def guarded() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(api_token=TOKEN))) as client:
        yield client


def test_without_a_token_update_is_open_and_no_scheme_is_declared(
    client: TestClient, example: dict[str, Any]
) -> None:
    assert client.post("/update", json=example).status_code == 200
    document = client.get("/openapi.json").json()
    assert "securitySchemes" not in document.get("components", {})
    assert "security" not in document["paths"]["/update"]["post"]
    assert "401" not in document["paths"]["/update"]["post"]["responses"]


def test_the_right_token_is_let_through(guarded: TestClient, example: dict[str, Any]) -> None:
    response = guarded.post("/update", json=example, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    lower_scheme = {"Authorization": f"bearer {TOKEN}"}
    assert guarded.post("/update", json=example, headers=lower_scheme).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Bearer", id="no-token"),
        pytest.param(f"Basic {TOKEN}", id="wrong-scheme"),
        pytest.param(TOKEN, id="no-scheme"),
        pytest.param(f"Bearer {TOKEN}x", id="longer"),
        pytest.param(f"Bearer {TOKEN[:-1]}", id="prefix"),
        pytest.param("Bearer wrong", id="wrong"),
    ],
)
def test_a_missing_malformed_or_wrong_token_is_401(
    guarded: TestClient, example: dict[str, Any], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.post("/update", json=example, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:rlhf-update:problem:unauthorized"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert TOKEN not in response.text


def test_the_token_is_checked_before_the_body_is_parsed(guarded: TestClient) -> None:
    response = guarded.post("/update", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 401


def test_probes_metrics_and_docs_stay_open(guarded: TestClient) -> None:
    for path in ["/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"]:
        assert guarded.get(path).status_code == 200, path


def test_openapi_shows_the_bearer_scheme_on_update_only(guarded: TestClient) -> None:
    document = guarded.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The token set in RLHF_API_TOKEN.",
        }
    }
    operation = document["paths"]["/update"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "application/problem+json" in operation["responses"]["401"]["content"]
    assert "security" not in document


def test_token_from_a_file(tmp_path: Path, example: dict[str, Any]) -> None:
    secret = tmp_path / "token"
    secret.write_text(f"{TOKEN}\n")  # mounted secrets often end with a newline
    with TestClient(create_app(Settings(api_token_file=secret))) as client:
        assert client.post("/update", json=example).status_code == 401
        ok = client.post("/update", json=example, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([f"Bearer {TOKEN}", "Bearer wrong"], id="right-then-wrong"),
        pytest.param(["Bearer wrong", f"Bearer {TOKEN}"], id="wrong-then-right"),
        pytest.param([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], id="right-twice"),
    ],
)
def test_several_authorization_headers_are_401(
    guarded: TestClient, example: dict[str, Any], values: list[str]
) -> None:
    headers = [("authorization", value) for value in values]
    response = guarded.post("/update", json=example, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "several Authorization headers" in response.json()["detail"]
