"""GET /metrics: the names the operators scrape, and what each counts."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from safetensors.numpy import save

from app.main import create_app
from app.settings import Settings
from app.update_observer import rejection_reason
from tests.metrics_text import sample
from tests.test_safetensors_api import BINARY, example_tensors

NAMES = {
    "rlhf_update_requests": "counter",
    "rlhf_update_duration_seconds": "histogram",
    "rlhf_update_stage_duration_seconds": "histogram",
    "rlhf_update_request_bytes": "histogram",
    "rlhf_update_params": "histogram",
    "rlhf_update_batch_size": "histogram",
    "rlhf_update_in_flight": "gauge",
    "rlhf_update_rejected": "counter",
    "rlhf_update_kl_mean": "histogram",
}


def test_metric_names_and_types(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert families == NAMES
    assert "rlhf_update_requests_total" not in client.get("/openapi.json").text


def test_openmetrics_when_asked(client: TestClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_after_n_updates_the_200_count_is_n(client: TestClient, example: dict[str, Any]) -> None:
    n = 7
    for _ in range(n):
        assert client.post("/update", json=example).status_code == 200
    text = client.get("/metrics").text
    assert sample(text, "rlhf_update_requests_total", status="200", format="json") == n
    assert sample(text, "rlhf_update_duration_seconds_count") == n
    assert sample(text, "rlhf_update_params_count") == n
    assert sample(text, "rlhf_update_params_sum") == 2 * n  # N = 2
    assert sample(text, "rlhf_update_batch_size_sum") == 2 * n  # B = 2
    assert sample(text, "rlhf_update_kl_mean_count") == n
    assert sample(text, "rlhf_update_kl_mean_bucket", le="0.0") == n  # kl_mean = 0
    assert sample(text, "rlhf_update_stage_duration_seconds_count", stage="compute") == n
    body_size = len(client.post("/update", json=example).request.content)
    text = client.get("/metrics").text
    assert sample(text, "rlhf_update_request_bytes_sum") == (n + 1) * body_size


def test_binary_updates_are_counted_under_their_format(client: TestClient) -> None:
    n = 3
    body = save(example_tensors())
    for _ in range(n):
        assert client.post("/update", content=body, headers=BINARY).status_code == 200
    text = client.get("/metrics").text
    assert sample(text, "rlhf_update_requests_total", status="200", format="safetensors") == n
    assert sample(text, "rlhf_update_params_sum") == 2 * n  # N = 2
    assert sample(text, "rlhf_update_kl_mean_count") == n
    assert sample(text, "rlhf_update_request_bytes_sum") == n * len(body)


def test_probes_and_scrapes_are_not_counted(client: TestClient) -> None:
    for path in ["/healthz", "/readyz", "/metrics", "/docs"]:
        client.get(path)
    text = client.get("/metrics").text
    assert sample(text, "rlhf_update_duration_seconds_count") == 0


def test_rejections_are_counted_by_reason(example: dict[str, Any]) -> None:
    settings = Settings(api_token="t", max_body_size=400, max_elements=7)
    auth = {"Authorization": "Bearer t"}
    with TestClient(create_app(settings)) as client:
        client.post("/update", json=example)  # no token
        client.post("/update", json=example, headers=auth)  # 8 elements > 7
        client.post("/update", content=b" " * 500, headers=auth)  # body too large
        client.post("/update", content=b"{", headers=auth)  # malformed
        client.post("/update", content=b"x", headers=auth | {"content-type": "text/plain"})
        text = client.get("/metrics").text
    assert sample(text, "rlhf_update_rejected_total", reason="unauthorized") == 1
    assert sample(text, "rlhf_update_rejected_total", reason="too_large") == 2
    assert sample(text, "rlhf_update_rejected_total", reason="invalid") == 2
    assert sample(text, "rlhf_update_rejected_total", reason="saturated") == 0
    assert sample(text, "rlhf_update_requests_total", status="401", format="json") == 1
    assert sample(text, "rlhf_update_requests_total", status="415", format="other") == 1


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (200, None, None),
        (400, "malformed-json", "invalid"),
        (400, "client-disconnected", None),
        (401, "unauthorized", "unauthorized"),
        (413, "body-too-large", "too_large"),
        (413, "too-many-elements", "too_large"),
        (415, "unsupported-media-type", "invalid"),
        (422, "invalid-payload", "invalid"),
        (422, "update-overflow", "invalid"),
        (500, "internal-error", None),
        (503, "saturated", "saturated"),
    ],
)
def test_rejection_reasons(status: int, error: str | None, reason: str | None) -> None:
    assert rejection_reason(status, error) == reason
