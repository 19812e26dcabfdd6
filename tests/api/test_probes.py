"""Liveness and readiness: open, outside the gate, the metrics and the OpenAPI document."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ops.lifecycle import Phase
from app.settings import Settings

LIVE = ["/healthz", "/livez", "/v2/health/live"]
READY = ["/readyz", "/v2/health/ready"]


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", LIVE)
def test_liveness_answers_ok(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head(path).status_code == 200


@pytest.mark.parametrize("path", READY)
def test_readiness_is_200_after_startup(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


@pytest.mark.parametrize("path", READY)
def test_readiness_is_503_before_startup(settings: Settings, path: str) -> None:
    # Without `with`, the test client does not run the lifespan: startup never happened.
    response = TestClient(create_app(settings)).get(path)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert "starting" in response.json()["detail"]


@pytest.mark.parametrize("path", READY)
def test_readiness_is_503_once_stopping(client: TestClient, path: str) -> None:
    client.app.state.lifecycle.phase = Phase.STOPPING  # type: ignore[attr-defined]
    response = client.get(path)
    assert response.status_code == 503
    assert "shutting down" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200  # alive while it drains


def test_probes_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/update", "/update/grad", "/update/apply", "/info"}


def test_probes_need_no_token() -> None:
    with TestClient(create_app(Settings(api_token="secret"))) as client:
        for path in [*LIVE, *READY, "/metrics"]:
            assert client.get(path).status_code == 200, path
