"""The client reads GET /info before a large upload: safetensors when only it fits, and a
refusal before anything is sent when nothing fits."""

from __future__ import annotations

import asyncio

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from rlhf_client import AsyncClient, Client, UpdateTooLargeError

from app.main import create_app
from app.settings import Settings
from tests.helpers.metrics_text import sample, sample_values
from tests.helpers.reference import reference_weights


def _batch(b: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "weights": rng.standard_normal(n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": rng.standard_normal(b),
        "ref_log_probs": rng.standard_normal(b),
        "log_prob_grads": rng.standard_normal((b, n)),
    }


def _updates_counted(http: TestClient) -> float:
    values = sample_values(http.get("/metrics").text)
    return sum(value for (name, _), value in values.items() if name == "rlhf_update_requests_total")


def test_a_json_body_too_large_for_the_service_goes_as_safetensors() -> None:
    arrays = _batch(32, 4096)  # about 2.6 MB as JSON, 1.05 MB as safetensors
    settings = Settings(max_body_size=2 * 1024 * 1024)
    with (
        TestClient(create_app(settings)) as http,
        Client(http_client=http, binary_threshold=10**9) as client,
    ):
        result = client.update(*arrays.values(), beta=0.1, lr=0.01)
        metrics = http.get("/metrics").text
    expected = reference_weights(arrays, 0.1, 0.01)
    np.testing.assert_allclose(result.weights, expected, rtol=1e-12)
    # One update, sent as safetensors at once: no JSON body was tried first.
    counted = {
        dict(labels)["format"]: value
        for (name, labels), value in sample_values(metrics).items()
        if name == "rlhf_update_requests_total"
    }
    assert counted == {"safetensors": 1.0}
    assert sample(metrics, "rlhf_update_requests_total", status="200", format="safetensors") == 1


def test_an_update_beyond_the_element_limit_is_refused_before_upload() -> None:
    arrays = _batch(32, 4096)
    settings = Settings(max_elements=10_000)
    with TestClient(create_app(settings)) as http, Client(http_client=http) as client:
        with pytest.raises(UpdateTooLargeError, match=r"at most 10000 \(RLHF_MAX_ELEMENTS\)"):
            client.update(*arrays.values(), beta=0.1, lr=0.01)
        assert _updates_counted(http) == 0


def test_a_body_that_fits_in_no_format_is_refused_before_upload() -> None:
    arrays = _batch(32, 4096)
    settings = Settings(max_body_size=1024 * 1024)  # even safetensors is 1.05 MB
    with TestClient(create_app(settings)) as http, Client(http_client=http) as client:
        with pytest.raises(UpdateTooLargeError, match=r"at most 1048576 \(RLHF_MAX_BODY_SIZE\)"):
            client.update(*arrays.values(), beta=0.1, lr=0.01)
        assert _updates_counted(http) == 0


def test_the_async_client_reads_the_limits_too() -> None:
    arrays = _batch(32, 4096)
    transport = httpx2.ASGITransport(app=create_app(Settings(max_elements=10_000)))

    async def scenario() -> None:
        async with (
            httpx2.AsyncClient(transport=transport, base_url="http://service") as http,
            AsyncClient(http_client=http) as client,
        ):
            info = await client.info()
            assert info is not None
            assert info["limits"]["max_elements"] == 10_000
            with pytest.raises(UpdateTooLargeError):
                await client.update(*arrays.values(), beta=0.1, lr=0.01)

    asyncio.run(scenario())


def test_small_updates_do_not_read_the_limits(client: TestClient) -> None:
    seen: list[str] = []
    arrays = _batch(2, 2)
    with Client(http_client=client) as rlhf:
        client.event_hooks["request"].append(lambda request: seen.append(request.url.path))
        rlhf.update(*arrays.values(), beta=0.1, lr=0.01)
    assert seen == ["/update"]
