"""GET /metrics: the names the operators scrape, and what each counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from safetensors.numpy import save

from app.main import create_app
from app.settings import Settings
from app.wire.payload import UpdatePayload
from tests.helpers.asgi import raw_post
from tests.helpers.metrics_text import sample
from tests.helpers.tensors import BINARY, example_tensors

NAMES = {
    "rlhf_update_requests": "counter",
    "rlhf_update_duration_seconds": "histogram",
    "rlhf_update_stage_duration_seconds": "histogram",
    "rlhf_update_request_bytes": "histogram",
    "rlhf_update_params": "histogram",
    "rlhf_update_batch_size": "histogram",
    "rlhf_update_in_flight": "gauge",
    "rlhf_update_queued": "gauge",
    "rlhf_update_rejected": "counter",
    "rlhf_update_kl_mean": "histogram",
    "rlhf_update_block_requests": "counter",
    "rlhf_update_block_duration_seconds": "histogram",
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


REASONS = ("invalid", "saturated", "timeout", "too_large", "unauthorized")
JSON = {"content-type": "application/json"}
# One request to a fresh app: its status and its problem type (None for a success).
Send = Callable[[TestClient, dict[str, Any], pytest.MonkeyPatch], tuple[int, str | None]]


def _answer(response: Any) -> tuple[int, str | None]:
    problem_type = response.json()["type"] if response.status_code >= 400 else None
    return response.status_code, problem_type


def _updated(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    return _answer(client.post("/update", json=example))


def _malformed(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    return _answer(client.post("/update", content=b"{", headers=JSON))


def _hung_up(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"weights": [1.0,', "more_body": True},
        {"type": "http.disconnect"},
    ]
    exchange = raw_post(client.app, headers, messages)
    body = orjson.loads(b"".join(m.get("body", b"") for m in exchange.sent[1:]))
    return exchange.status, body["type"]


def _oversized(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    return _answer(client.post("/update", content=b" " * 2000, headers=JSON))


def _text(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    return _answer(client.post("/update", content=b"x", headers={"content-type": "text/plain"}))


def _negative_lr(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    return _answer(client.post("/update", json=example | {"lr": -1}))


def _overflowing(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    return _answer(client.post("/update", json=example | {"weights": [1.7e308, 1.0], "lr": 1e308}))


def _failing(client: TestClient, example: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    def broken(self: UpdatePayload) -> None:
        msg = "a bug of the server's own"
        raise RuntimeError(msg)

    monkeypatch.setattr(UpdatePayload, "compute", broken)
    return _answer(client.post("/update", json=example))


def _while_full(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    gate = client.app.state.gate  # type: ignore[attr-defined]
    assert gate.try_enter()  # RLHF_MAX_IN_FLIGHT = 1, held; no queue
    try:
        return _answer(client.post("/update", json=example))
    finally:
        gate.leave()


def _stalled(client: TestClient, example: dict[str, Any], _: pytest.MonkeyPatch) -> Any:
    # A first chunk, then nothing: the next receive() never returns.
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    first = {"type": "http.request", "body": b'{"weights": [1.0,', "more_body": True}
    exchange = raw_post(client.app, headers, [first], then_stall=True)
    body = orjson.loads(b"".join(m.get("body", b"") for m in exchange.sent[1:]))
    return exchange.status, body["type"]


@pytest.mark.parametrize(
    ("settings_changes", "send", "status", "slug", "reason"),
    [
        pytest.param({}, _updated, 200, None, None, id="ok"),
        pytest.param({}, _malformed, 400, "malformed-json", "invalid", id="malformed-json"),
        pytest.param({}, _hung_up, 400, "client-disconnected", None, id="client-disconnected"),
        pytest.param(
            {"api_token": "t"}, _updated, 401, "unauthorized", "unauthorized", id="unauthorized"
        ),
        pytest.param(
            {"max_body_size": 1000},
            _oversized,
            413,
            "body-too-large",
            "too_large",
            id="body-too-large",
        ),
        pytest.param(
            {"max_elements": 7},
            _updated,
            413,
            "too-many-elements",
            "too_large",
            id="too-many-elements",
        ),
        pytest.param(
            {}, _text, 415, "unsupported-media-type", "invalid", id="unsupported-media-type"
        ),
        pytest.param({}, _negative_lr, 422, "invalid-payload", "invalid", id="invalid-payload"),
        pytest.param({}, _overflowing, 422, "update-overflow", "invalid", id="update-overflow"),
        pytest.param({}, _failing, 500, "internal-error", None, id="internal-error"),
        pytest.param(
            {"body_timeout_seconds": 0.05},
            _stalled,
            408,
            "body-timeout",
            "timeout",
            id="body-timeout",
        ),
        pytest.param(
            {"max_in_flight": 1, "max_queue": 0},
            _while_full,
            503,
            "saturated",
            "saturated",
            id="saturated",
        ),
    ],
)
def test_each_answer_counts_under_its_rejection_reason(
    example: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    settings_changes: dict[str, Any],
    send: Send,
    status: int,
    slug: str | None,
    reason: str | None,
) -> None:
    app = create_app(Settings(**settings_changes))
    with TestClient(app, raise_server_exceptions=False) as client:
        answered = send(client, example, monkeypatch)
        text = client.get("/metrics").text
    assert answered == (status, None if slug is None else f"urn:rlhf-update:problem:{slug}")
    counted = {name: sample(text, "rlhf_update_rejected_total", reason=name) for name in REASONS}
    assert counted == {name: float(name == reason) for name in REASONS}
    assert sample(text, "rlhf_update_duration_seconds_count") == 1
