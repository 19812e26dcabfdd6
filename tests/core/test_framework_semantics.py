"""The options as the frameworks compute them: gradient clipping as torch, verl's
low_var_kl, an exact k3, reward clipping to [low, high], and the newer baselines."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from app.core import InvalidInputError, UpdateOptions, compute_update
from app.core.advantages import kl_estimate
from tests.helpers.reference import k3_exact

ONE_SAMPLE: dict[str, Any] = {
    "weights": [0.0],
    "rewards": [1.0],
    "policy_log_probs": [0.0],
    "ref_log_probs": [0.0],
    "log_prob_grads": [[1.0]],
}


def one_sample(options: UpdateOptions, **changes: Any) -> Any:
    return compute_update(**{**ONE_SAMPLE, **changes}, beta=1.0, lr=1.0, options=options)


def test_clipping_multiplies_as_torch_whenever_the_factor_is_below_one() -> None:
    # ||g|| = m = 1: torch scales by 1 / (1 + 1e-6) although the norm is not above m.
    result = one_sample(UpdateOptions(max_grad_norm=1.0), ref_log_probs=[0.0])
    assert result.weights.tolist() == [1.0 / (1.0 + 1e-6)]
    assert result.weights.tolist() == [0.9999990000010001]
    assert result.stats.clipped is True
    assert result.stats.grad_norm == 1.0


def test_clipping_leaves_the_gradient_alone_when_the_factor_reaches_one() -> None:
    # m / (||g|| + 1e-6) >= 1: torch multiplies by 1.0, which changes no bit.
    for m in (1.0 + 1e-6, 2.0):
        result = one_sample(UpdateOptions(max_grad_norm=m))
        assert result.weights.tolist() == [1.0]
        assert result.stats.clipped is False


def test_low_var_kl_is_clamped_to_ten_as_verl() -> None:
    # d = -5: k3 = e^5 - 1 - 5 = 142.41, verl clamps it to 10.
    changes = {"rewards": [0.0], "policy_log_probs": [-5.0]}
    verl = one_sample(UpdateOptions(kl_estimator="low_var_kl"), **changes)
    assert verl.weights.tolist() == [-10.0]
    assert verl.stats.kl_mean == 10.0
    schulman = one_sample(UpdateOptions(kl_estimator="k3"), **changes)
    assert schulman.weights.tolist() == pytest.approx([-(math.exp(5) - 6)], rel=1e-15)
    # verl's own "k3" clamps too: kl_clamp 10 reproduces it; a kl_clamp sent wins.
    clamped = one_sample(UpdateOptions(kl_estimator="k3", kl_clamp=10.0), **changes)
    assert clamped.weights.tobytes() == verl.weights.tobytes()
    wide = one_sample(UpdateOptions(kl_estimator="low_var_kl", kl_clamp=1e3), **changes)
    assert wide.weights.tobytes() == schulman.weights.tobytes()


def ulps(got: float, want: float) -> float:
    return abs(got - want) / math.ulp(want) if want else abs(got) / math.ulp(0.0)


def test_k3_is_within_two_ulp_everywhere() -> None:
    magnitudes = np.concatenate(
        [np.geomspace(1e-150, 20.0, 4000), np.linspace(0.9, 1.1, 2001), [0.5, 1.0, 2.0]]
    )
    d = np.concatenate([magnitudes, -magnitudes, [0.0]])
    got = kl_estimate(d, "k3")
    errors = [ulps(g, k3_exact(x)) for g, x in zip(got.tolist(), d.tolist(), strict=True)]
    assert max(errors) <= 2.0, max(errors)
    # The form it replaces: relative error about 2e-16 / |d| (2.9e-7 at |d| = 1e-9).
    naive = float(np.expm1(-1e-9) + 1e-9)
    assert abs(naive / k3_exact(1e-9) - 1) > 1e-7


def test_k3_of_a_small_batch_is_bit_for_bit_that_of_a_large_one() -> None:
    # A few samples take the series value by value, many of them as arrays: the same bits.
    rng = np.random.default_rng(19)
    edges = [0.0, -0.0, 1.0, -1.0, np.nextafter(1.0, 2.0), -np.nextafter(1.0, 2.0), 5e-324]
    values = np.concatenate(
        [
            edges,
            rng.standard_normal(2000),
            rng.uniform(-1, 1, 2000) * 10.0 ** -rng.integers(0, 200, 2000),
        ]
    )
    large = kl_estimate(values, "k3")
    assert values.size > 32
    for size in (1, 2, 7, 8, 31, 32):
        for start in range(0, values.size - size, 97):
            small = kl_estimate(values[start : start + size], "k3")
            np.testing.assert_array_equal(
                small.view(np.int64), large[start : start + size].view(np.int64)
            )
    # Within 2 ulp here too, so the two agree with the exact value, not only each other.
    errors = [ulps(g, k3_exact(x)) for g, x in zip(large[:7].tolist(), edges, strict=True)]
    assert max(errors) <= 2.0


def test_k3_beyond_the_bound_is_the_bound_s() -> None:
    got = kl_estimate(np.array([-30.0, 30.0]), "k3")
    assert got.tolist() == [k3_exact(-20.0), k3_exact(20.0)]


def test_reward_clip_takes_low_and_high() -> None:
    rewards = [-3.0, -0.5, 1.5, 4.0]
    args: dict[str, Any] = {
        "weights": [0.0] * 4,
        "rewards": rewards,
        "policy_log_probs": [0.0] * 4,
        "ref_log_probs": [0.0] * 4,
        "log_prob_grads": np.eye(4).tolist(),
    }
    result = compute_update(**args, beta=0, lr=4.0, options=UpdateOptions(reward_clip=(-1, 2)))
    assert result.weights.tolist() == [-1.0, -0.5, 1.5, 2.0]
    assert result.stats.reward_mean == 0.5
    symmetric = compute_update(**args, beta=0, lr=4.0, options=UpdateOptions(reward_clip=2.0))
    assert symmetric.weights.tolist() == [-2.0, -0.5, 1.5, 2.0]
    # Bounds whose difference overflows are bounds all the same.
    wide = compute_update(
        **args, beta=0, lr=4.0, options=UpdateOptions(reward_clip=(-1e308, 1e308))
    )
    assert wide.weights.tolist() == rewards


@pytest.mark.parametrize("pair", [(2.0, 1.0), (1.0, 1.0), (0.0, math.inf), (math.nan, 1.0)])
def test_reward_clip_needs_low_below_high(pair: tuple[float, float]) -> None:
    with pytest.raises(InvalidInputError, match=r"expected \[low, high\]") as info:
        one_sample(UpdateOptions(reward_clip=pair))
    assert info.value.problems[0].loc == ("reward_clip",)


EYE: dict[str, Any] = {
    "weights": [0.0] * 5,
    "policy_log_probs": [0.0] * 5,
    "ref_log_probs": [0.0] * 5,
    "log_prob_grads": np.eye(5).tolist(),
}


def advantages_of(rewards: list[float], **options: Any) -> list[float]:
    """A_i, read off an update with grads = I, lr = B (so that w'_i = A_i), beta 0."""
    result = compute_update(
        **EYE, rewards=rewards, beta=0.0, lr=5.0, options=UpdateOptions(**options)
    )
    return list(result.weights.tolist())


def test_reinforce_pp_centres_within_groups_then_whitens_over_the_batch() -> None:
    # Groups {1, 3} and {5, 5, 8}: centred -1, 1, -1, -1, 2 (mean 0, sample var 2).
    got = advantages_of(
        [1.0, 3.0, 5.0, 5.0, 8.0], baseline="reinforce_pp", group_ids=[0, 0, 1, 1, 1]
    )
    scale = math.sqrt(2.0 + 1e-8)
    assert got == pytest.approx(
        [-1 / scale, 1 / scale, -1 / scale, -1 / scale, 2 / scale], rel=1e-15
    )


def test_opo_subtracts_the_length_weighted_group_mean() -> None:
    # Group {1 (L=3), 3 (L=1)}: baseline (3 + 3) / 4 = 1.5; group {5, 5, 8}, L = 1, 2, 3:
    # (5 + 10 + 24) / 6 = 6.5. A single sample gets 0 (verl's OPO would leave it at a).
    got = advantages_of(
        [1.0, 3.0, 5.0, 5.0, 8.0],
        baseline="opo",
        group_ids=[0, 0, 1, 1, 1],
        sequence_lengths=[3, 1, 1, 2, 3],
    )
    assert got == pytest.approx([-0.5, 1.5, -1.5, -1.5, 1.5], rel=1e-15)
    single = advantages_of(
        [1.0, 3.0, 5.0, 5.0, 0.1],
        baseline="opo",
        group_ids=[0, 0, 1, 1, 2],
        sequence_lengths=[3, 1, 1, 2, 3],
    )
    assert single[4] == 0.0


def test_grpo_batch_scale_divides_by_the_whole_batch_std() -> None:
    rewards = [1.0, 3.0, 5.0, 5.0, 8.0]
    batch_std = float(np.std(rewards, ddof=1))
    got = advantages_of(rewards, baseline="grpo", grpo_scale="batch", group_ids=[0, 0, 1, 1, 1])
    want = [c / (batch_std + 1e-4) for c in (-1.0, 1.0, -1.0, -1.0, 2.0)]
    assert got == pytest.approx(want, rel=1e-15)


def test_old_log_probs_freeze_the_kl_in_the_reward() -> None:
    # The KL in the reward is old - ref (= 2), not policy - ref (= 1).
    options = UpdateOptions(old_log_probs=[2.0])
    result = one_sample(options, rewards=[0.0], policy_log_probs=[1.0])
    assert result.stats.kl_mean == 2.0
    assert result.weights.tolist() == [-2.0]
    assert result.stats.kl_estimates.k1 == 2.0
