"""The client's binary path against the real app: safetensors and JSON give the same answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from rlhf_client import Client

from app.main import create_app
from app.settings import Settings
from tests.helpers.metrics_text import sample_values


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def batch(seed: int, b: int = 16, n: int = 12) -> tuple[NDArray[np.float64], ...]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(n),
        rng.standard_normal(b),
        -rng.random(b) * 3,
        -rng.random(b) * 3,
        rng.standard_normal((b, n)),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_safetensors_and_json_agree_bit_for_bit(
    http: TestClient, dtype: type[np.floating[Any]]
) -> None:
    weights, *rest = batch(1)
    arrays: tuple[NDArray[Any], ...] = (weights.astype(dtype), *(a.astype(dtype) for a in rest))
    with Client(http_client=http, transport="json") as as_json:
        by_json = as_json.update(*arrays, beta=0.1, lr=0.3)
    with Client(http_client=http, transport="safetensors") as as_binary:
        by_binary = as_binary.update(*arrays, beta=0.1, lr=0.3)
    assert by_binary.weights.dtype == by_json.weights.dtype == dtype
    np.testing.assert_array_equal(by_binary.weights, by_json.weights)
    assert by_binary.stats == by_json.stats
    assert formats_served(http) == {"json": 1, "safetensors": 1}


def test_auto_uses_safetensors_from_the_threshold_on(http: TestClient) -> None:
    arrays = batch(2)  # B * N = 16 * 12
    with Client(http_client=http, binary_threshold=16 * 12 + 1) as below:
        by_json = below.update(*arrays, beta=0.1, lr=0.3)
    assert formats_served(http) == {"json": 1, "safetensors": 0}
    with Client(http_client=http, binary_threshold=16 * 12) as at:
        by_binary = at.update(*arrays, beta=0.1, lr=0.3)
    assert formats_served(http) == {"json": 1, "safetensors": 1}
    np.testing.assert_array_equal(by_binary.weights, by_json.weights)


def formats_served(http: TestClient) -> dict[str, int]:
    """How many updates the app has answered with 200, by the format of their body."""
    text = http.get("/metrics").text
    counts = sample_values(text)
    return {
        wire: int(counts.get(("rlhf_update_requests_total", key), 0))
        for wire in ("json", "safetensors")
        for key in (frozenset({("status", "200"), ("format", wire)}),)
    }


def test_options_travel_in_safetensors(http: TestClient) -> None:
    arrays = batch(3, b=8)
    options: dict[str, Any] = {
        "baseline": "mean",
        "group_ids": np.repeat([0, 1], 4),
        "max_grad_norm": 0.1,
    }
    with Client(http_client=http, transport="json") as as_json:
        by_json = as_json.update(*arrays, beta=0.1, lr=0.3, **options)
    with Client(http_client=http, transport="safetensors") as as_binary:
        by_binary = as_binary.update(*arrays, beta=0.1, lr=0.3, **options)
    np.testing.assert_array_equal(by_binary.weights, by_json.weights)
    assert by_binary.stats.grad_norm > 0.1  # so the clipping acts
    assert by_binary.stats.clipped is True
    assert by_binary.stats == by_json.stats
    assert formats_served(http) == {"json": 1, "safetensors": 1}


def test_policy_loss_options_give_the_same_answer_over_both_transports(http: TestClient) -> None:
    weights, rewards, policy, ref, grads = batch(4, b=8)
    rng = np.random.default_rng(4)
    old = policy + 0.3 * rng.standard_normal(8)
    options: dict[str, Any] = {
        "policy_loss": "ppo_clip",
        "old_log_probs": old,
        "behavior_log_probs": old - 0.4 * rng.random(8),
        "tis_mode": "mask",
        "sequence_lengths": rng.integers(1, 30, 8),
        "loss_agg": "token_mean",
        "dual_clip_c": 2.0,
        "kl_loss_coef": 0.1,
        "baseline": "reinforce_pp",
        "group_ids": np.repeat([0, 1], 4),
        "reward_clip": [-0.5, 1.0],
    }
    with Client(http_client=http, transport="json") as as_json:
        by_json = as_json.update(weights, rewards, policy, ref, grads, beta=0.1, lr=0.3, **options)
    with Client(http_client=http, transport="safetensors") as as_binary:
        by_binary = as_binary.update(
            weights, rewards, policy, ref, grads, beta=0.1, lr=0.3, **options
        )
    np.testing.assert_array_equal(by_binary.weights, by_json.weights)
    assert by_binary.stats == by_json.stats
    stats = by_json.stats
    assert stats.ratio_mean is not None
    assert stats.active_frac is not None
    assert stats.dual_clip_frac is not None
    assert stats.kl_loss_mean is not None
    assert stats.tis_ess is not None
    assert stats.extra == {}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_sent_when_asked_and_comes_back_in_it(
    http: TestClient, dtype: str
) -> None:
    arrays = batch(4)
    wire = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float16)
    with Client(http_client=http) as client:  # "auto" would send this small batch as JSON
        result = client.update(*arrays, beta=0.1, lr=0.3, dtype=dtype)  # type: ignore[arg-type]
    assert formats_served(http) == {"json": 0, "safetensors": 1}
    assert result.weights.dtype == wire
    # The server's answer to the rounded arrays, as float64, rounded once to the dtype.
    rounded = [a.astype(wire).astype(np.float64) for a in arrays]
    with Client(http_client=http, transport="json") as as_json:
        expected = as_json.update(*rounded, beta=0.1, lr=0.3)
    assert result.weights.tobytes() == expected.weights.astype(wire).tobytes()
    assert result.stats == expected.stats


def test_a_value_beyond_the_half_range_is_refused_before_sending(http: TestClient) -> None:
    weights, *rest = batch(5)
    weights[3] = 1e5  # float16 ends at 65504
    with Client(http_client=http) as client, pytest.raises(ValueError, match=r"weights\[3\]"):
        client.update(weights, *rest, beta=0.1, lr=0.3, dtype="float16")
    assert formats_served(http) == {"json": 0, "safetensors": 0}


def test_half_precision_has_no_json_form(http: TestClient) -> None:
    with (
        Client(http_client=http, transport="json") as client,
        pytest.raises(ValueError, match="safetensors"),
    ):
        client.update(*batch(6), beta=0.1, lr=0.3, dtype="bfloat16")
