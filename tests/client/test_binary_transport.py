"""The client's binary path against the real app: safetensors and JSON give the same answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
