"""The client against the real app, in-process: Starlette's TestClient is an httpx2 client."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rlhf_client import (
    APIResponseError,
    APIStatusError,
    Client,
    ContentTooLargeError,
    UnprocessableEntityError,
)

from app.main import create_app
from app.settings import Settings
from tests.helpers.reference import EXAMPLE, reference_weights

NAMES = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


@pytest.fixture
def rlhf(settings: Settings) -> Iterator[Client]:
    with TestClient(create_app(settings)) as http, Client(http_client=http) as client:
        yield client


def random_batch(seed: int, b: int = 6, n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "weights": rng.standard_normal(n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": -rng.random(b) * 3,
        "ref_log_probs": -rng.random(b) * 3,
        "log_prob_grads": rng.standard_normal((b, n)),
    }


def test_reference_example(rlhf: Client) -> None:
    result = rlhf.update(*(EXAMPLE[name] for name in NAMES), beta=1.0, lr=0.1)
    assert result.weights.tolist() == pytest.approx([1.05, 0.95], abs=1e-15)
    assert result.weights.dtype == np.float64
    assert result.stats.kl_mean == 0.0
    assert result.stats.reward_mean == 1.0


def test_matches_the_independent_reference(rlhf: Client) -> None:
    batch = random_batch(1)
    result = rlhf.update(*batch.values(), beta=0.3, lr=0.05)
    expected = reference_weights(batch, 0.3, 0.05)
    np.testing.assert_allclose(result.weights, expected, rtol=1e-13, atol=1e-15)


def test_float32_weights_come_back_float32(rlhf: Client) -> None:
    batch = random_batch(2)
    wide = rlhf.update(*batch.values(), beta=0.1, lr=0.1)
    narrow_weights = batch["weights"].astype(np.float32)
    narrow = rlhf.update(narrow_weights, *list(batch.values())[1:], beta=0.1, lr=0.1)
    assert narrow.weights.dtype == np.float32
    expected = reference_weights({**batch, "weights": narrow_weights}, 0.1, 0.1)
    np.testing.assert_array_equal(narrow.weights, np.array(expected, dtype=np.float32))
    assert wide.weights.dtype == np.float64


def test_group_mean_baseline_option_is_passed_through(rlhf: Client) -> None:
    batch = random_batch(3, b=6)
    groups = np.array([0, 0, 0, 1, 1, 1])
    beta, lr = 0.2, 0.5
    result = rlhf.update(*batch.values(), beta=beta, lr=lr, baseline="mean", group_ids=groups)
    # A_i = a_i - mean of a over i's group, with a_i = r_i - beta * kl_i.
    adjusted = batch["rewards"] - beta * (batch["policy_log_probs"] - batch["ref_log_probs"])
    means = np.array([adjusted[groups == g].mean() for g in groups])
    advantage = adjusted - means
    expected = batch["weights"] + lr * advantage @ batch["log_prob_grads"] / len(advantage)
    np.testing.assert_allclose(result.weights, expected, rtol=1e-12, atol=1e-14)
    assert result.stats.advantage_mean == pytest.approx(0.0, abs=1e-15)
    without = rlhf.update(*batch.values(), beta=beta, lr=lr)
    assert not np.allclose(without.weights, result.weights)


def test_extended_stats_are_typed(rlhf: Client) -> None:
    result = rlhf.update(*random_batch(4).values(), beta=0.1, lr=0.1, max_grad_norm=1e-3)
    stats = result.stats
    assert stats.clipped is True
    assert stats.grad_norm > 1e-3
    assert stats.update_norm == pytest.approx(0.1 * 1e-3, rel=1e-4)
    assert stats.kl_estimates is not None
    assert set(stats.kl_estimates) == {"k1", "k2", "k3"}
    assert stats.kl_estimates["k1"] == pytest.approx(stats.kl_mean)
    assert stats.next_beta is None


def test_invalid_payload_raises_with_the_field(rlhf: Client) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        rlhf.update(*(EXAMPLE[name] for name in NAMES), beta=-1.0, lr=0.1)
    assert caught.value.errors[0]["loc"] == ["beta"]
    assert "beta" in caught.value.detail
    assert caught.value.problem["type"] == "urn:rlhf-update:problem:invalid-payload"


def test_unknown_option_value_is_rejected_by_the_server(rlhf: Client) -> None:
    with pytest.raises(UnprocessableEntityError, match="baseline"):
        rlhf.update(*(EXAMPLE[name] for name in NAMES), beta=1.0, lr=0.1, baseline="median")


def test_overflow_is_unprocessable(rlhf: Client) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        rlhf.update([1e308], [1e308], [0.0], [0.0], [[1e308]], beta=0.0, lr=1e10)
    assert caught.value.problem["type"] == "urn:rlhf-update:problem:update-overflow"


def test_body_too_large() -> None:
    settings = Settings(max_body_size=200)
    with (
        TestClient(create_app(settings)) as http,
        Client(http_client=http) as client,
        pytest.raises(ContentTooLargeError) as caught,
    ):
        client.update(*random_batch(5).values(), beta=0.1, lr=0.1)
    assert caught.value.status_code == 413
    assert "200 bytes" in caught.value.detail


def test_unknown_path_is_a_plain_status_error(settings: Settings) -> None:
    with (
        TestClient(create_app(settings)) as http,
        Client("http://testserver/v9", http_client=http) as client,
        pytest.raises(APIStatusError) as caught,
    ):
        client.update(*(EXAMPLE[name] for name in NAMES), beta=1.0, lr=0.1)
    assert caught.value.status_code == 404


def test_health(rlhf: Client) -> None:
    assert rlhf.health() == {"status": "ok"}


def test_an_overflowing_kl_estimate_comes_back_as_none(rlhf: Client) -> None:
    # k2 = d**2 / 2 of d = 1e160 overflows float64; the update itself uses k1 and is valid.
    result = rlhf.update([1.0], [0.0], [1e160], [0.0], [[0.0]], beta=0.0, lr=0.1)
    assert result.stats.kl_estimates is not None
    assert result.stats.kl_estimates["k2"] is None
    assert result.stats.kl_estimates["k1"] == 1e160


@pytest.mark.parametrize("transport", ["json", "safetensors"])
def test_float32_weights_that_overflow_are_refused_by_either_transport(
    settings: Settings, transport: str
) -> None:
    # 3e38 + 1.0 * 1e38 is a float64 but beyond float32's largest, about 3.4e38.
    weights = np.array([3e38], dtype=np.float32)
    with (
        TestClient(create_app(settings)) as http,
        Client(http_client=http, transport=transport) as client,  # type: ignore[arg-type]
        pytest.raises((APIResponseError, UnprocessableEntityError), match="overflows float32"),
    ):
        client.update(weights, [1.0], [0.0], [0.0], [[1e38]], beta=0.0, lr=1.0)
