"""Algorithm options of the core, each against the pure-Python reference of the README's steps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import InvalidInputError, UpdateOptions, UpdateOverflowError, compute_update
from app.core.options import KlEstimator, option_problems
from tests.helpers.batches import GROUPS_OF_3, random_batch
from tests.helpers.reference import EXAMPLE, reference_options_update

UNEVEN_GROUPS = [1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 9, 9]  # group 4 has one sample

CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"kl_estimator": "k2"}, id="k2"),
    pytest.param({"kl_estimator": "k3"}, id="k3"),
    pytest.param({"kl_estimator": "abs"}, id="abs"),
    pytest.param({"kl_estimator": "low_var_kl", "kl_clamp": 0.4}, id="k3-clamped"),
    pytest.param({"kl_clamp": 0.5}, id="k1-clamped"),
    pytest.param({"reward_clip": 0.5}, id="reward-clip"),
    pytest.param({"baseline": "mean"}, id="mean-batch"),
    pytest.param({"baseline": "mean", "group_ids": UNEVEN_GROUPS}, id="mean-groups"),
    pytest.param({"baseline": "rloo"}, id="rloo-batch"),
    pytest.param({"baseline": "rloo", "group_ids": GROUPS_OF_3}, id="rloo-groups"),
    pytest.param({"baseline": "grpo"}, id="grpo-batch"),
    pytest.param({"baseline": "grpo", "group_ids": UNEVEN_GROUPS}, id="grpo-groups"),
    pytest.param(
        {"baseline": "grpo", "grpo_scale": "none", "group_ids": GROUPS_OF_3}, id="dr-grpo"
    ),
    pytest.param({"normalize_advantages": True}, id="normalize"),
    pytest.param({"max_grad_norm": 0.05}, id="clip-active"),
    pytest.param({"max_grad_norm": 1e6}, id="clip-inactive"),
    pytest.param({"target_kl": 0.1, "kl_horizon": 1000}, id="adaptive-kl"),
    pytest.param({"target_kl": 100.0, "kl_horizon": 50}, id="adaptive-kl-low"),
    pytest.param(
        {
            "baseline": "grpo",
            "group_ids": GROUPS_OF_3,
            "normalize_advantages": True,
            "max_grad_norm": 0.05,
        },
        id="grpo-groups-normalize-clip",
    ),
    pytest.param(
        {
            "kl_estimator": "k3",
            "kl_clamp": 1.0,
            "reward_clip": 1.0,
            "baseline": "rloo",
            "group_ids": GROUPS_OF_3,
            "normalize_advantages": True,
            "max_grad_norm": 0.1,
            "target_kl": 0.05,
            "kl_horizon": 10000,
        },
        id="everything",
    ),
]


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-12)


def assert_matches_reference(args: dict[str, Any], options: dict[str, Any]) -> None:
    result = compute_update(
        **{k: v for k, v in args.items() if k not in ("beta", "lr")},
        beta=args["beta"],
        lr=args["lr"],
        options=UpdateOptions(**options),
    )
    ref = reference_options_update(**args, **options)
    assert all(map(close, result.weights.tolist(), ref.weights)), (result.weights, ref.weights)
    stats = result.stats
    b = len(args["rewards"])
    mean = math.fsum
    assert close(stats.kl_mean, mean(ref.kl) / b)
    assert close(stats.kl_max, max(ref.kl))
    assert close(stats.reward_mean, mean(ref.rewards) / b)
    assert close(stats.reward_std, _stdev(ref.rewards))
    assert close(stats.adjusted_reward_mean, mean(ref.adjusted) / b)
    assert close(stats.advantage_mean, mean(ref.advantages) / b)
    assert close(stats.advantage_std, _stdev(ref.advantages))
    assert close(stats.grad_norm, ref.grad_norm)
    assert stats.clipped is ref.clipped
    assert close(stats.update_norm, args["lr"] * math.hypot(*ref.grad))
    if ref.next_beta is None:
        assert stats.next_beta is None
    else:
        assert stats.next_beta is not None
        assert close(stats.next_beta, ref.next_beta)
    for name, want in ref.kl_estimates.items():
        got = getattr(stats.kl_estimates, name)
        assert got is not None
        assert close(got, want), name


def _stdev(values: list[float]) -> float:
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.mark.parametrize("options", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_option_matches_reference(options: dict[str, Any], seed: int) -> None:
    assert_matches_reference(random_batch(seed), options)


def test_clipping_is_active_in_its_case() -> None:
    # The clip cases above would prove little if the threshold never bit.
    result = compute_update(
        **_arrays(random_batch(0)), beta=0.3, lr=0.1, options=UpdateOptions(max_grad_norm=0.05)
    )
    assert result.stats.clipped
    assert result.stats.grad_norm > 0.05
    assert result.stats.update_norm == pytest.approx(
        0.1 * 0.05 * result.stats.grad_norm / (result.stats.grad_norm + 1e-6), rel=1e-12
    )


def _arrays(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in ("beta", "lr")}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    b=st.integers(2, 9),
    n=st.integers(1, 4),
    estimator=st.sampled_from(["k1", "k2", "k3", "abs", "kl", "mse", "low_var_kl"]),
    baseline=st.sampled_from(["none", "mean", "rloo", "grpo"]),
    grpo_scale=st.sampled_from(["std", "none"]),
    normalize=st.booleans(),
    clip=st.sampled_from([None, 0.01, 1.0]),
    grouped=st.booleans(),
)
def test_random_option_combinations_match_reference(
    seed: int,
    b: int,
    n: int,
    estimator: str,
    baseline: str,
    grpo_scale: str,
    normalize: bool,
    clip: float | None,
    grouped: bool,
) -> None:
    args = random_batch(seed, b, n)
    options: dict[str, Any] = {
        "kl_estimator": estimator,
        "baseline": baseline,
        "grpo_scale": grpo_scale,
        "normalize_advantages": normalize,
        "max_grad_norm": clip,
    }
    if grouped:
        # Pairs of samples, so "rloo" always has groups of at least two.
        options["group_ids"] = [i // 2 for i in range(b - b % 2)] + [0] * (b % 2)
    assert_matches_reference(args, options)


def test_defaults_reproduce_the_plain_update_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    b, n = 33, 17
    w, r = rng.standard_normal(n), rng.standard_normal(b)
    p, q = rng.standard_normal(b), rng.standard_normal(b)
    grads = rng.standard_normal((b, n))
    beta, lr = 0.37, 0.013
    seed_formula = w + lr * ((r - beta * (p - q)) @ grads / b)
    explicit = UpdateOptions(
        kl_estimator="k1", baseline="none", grpo_scale="std", normalize_advantages=False
    )
    for options in (UpdateOptions(), explicit):
        new = compute_update(w, r, p, q, grads, beta=beta, lr=lr, options=options).weights
        assert new.tobytes() == seed_formula.tobytes()


def test_aliases_are_the_same_estimators() -> None:
    # verl's low_var_kl is k3 clamped to +-10, unless kl_clamp says otherwise.
    args = _arrays(random_batch(5))
    pairs: tuple[tuple[KlEstimator, KlEstimator, float | None], ...] = (
        ("kl", "k1", None),
        ("mse", "k2", None),
        ("low_var_kl", "k3", 10.0),
    )
    for alias, name, clamp in pairs:
        got = compute_update(**args, beta=1.0, lr=1.0, options=UpdateOptions(kl_estimator=alias))
        options = UpdateOptions(kl_estimator=name, kl_clamp=clamp)
        want = compute_update(**args, beta=1.0, lr=1.0, options=options)
        assert got.weights.tobytes() == want.weights.tobytes()
        assert got.stats == want.stats


def test_k3_bounds_the_log_ratio_and_never_overflows() -> None:
    # d = -1000: an unbounded exp(1000) is inf; bounded, k3 = exp(20) - 1 - 20.
    result = compute_update(
        [0.0],
        [0.0],
        [-1000.0],
        [0.0],
        [[1.0]],
        beta=1.0,
        lr=1.0,
        options=UpdateOptions(kl_estimator="k3"),
    )
    assert result.stats.kl_mean == pytest.approx(math.exp(20) - 21, rel=1e-15)
    assert result.weights.tolist() == pytest.approx([-(math.exp(20) - 21)], rel=1e-15)


def test_k3_keeps_precision_for_tiny_log_ratios() -> None:
    # exp(-d) - 1 + d loses all but 7 digits at d = 1e-9; the true value is d^2/2 - d^3/6.
    d = 1e-9
    result = compute_update(
        [0.0],
        [0.0],
        [d],
        [0.0],
        [[1.0]],
        beta=1.0,
        lr=1.0,
        options=UpdateOptions(kl_estimator="k3"),
    )
    assert result.stats.kl_mean == pytest.approx(d * d / 2 - d**3 / 6, rel=1e-15)


def test_k2_estimate_that_overflows_is_reported_only_when_used() -> None:
    args: dict[str, Any] = {
        "weights": [0.0],
        "rewards": [0.0, 0.0],
        "policy_log_probs": [1e160, 0.0],
        "ref_log_probs": [0.0, 0.0],
        "log_prob_grads": [[0.0], [1.0]],
    }
    plain = compute_update(**args, beta=0.0, lr=1.0)
    assert plain.stats.kl_estimates.k2 is None  # (1e160)^2 / 2 overflows float64
    assert plain.stats.kl_estimates.k1 == 5e159
    with pytest.raises(UpdateOverflowError, match="k2 KL estimate of sample 0") as info:
        compute_update(**args, beta=0.0, lr=1.0, options=UpdateOptions(kl_estimator="k2"))
    assert info.value.problems[0].loc == ("kl", 0)


def test_groups_of_one_sample_get_zero_advantage_under_mean_and_grpo() -> None:
    args = _arrays(random_batch(2, b=4, n=2))
    for baseline in ("mean", "grpo"):
        options = UpdateOptions(baseline=baseline, group_ids=[1, 2, 3, 4])
        result = compute_update(**args, beta=0.5, lr=1.0, options=options)
        assert result.weights.tolist() == args["weights"]
        assert result.stats.advantage_std == 0.0


def test_hand_computed_rloo_and_grpo() -> None:
    # a = rewards (beta 0); groups {1, 3} and {5, 5, 8}; grads pick A out one by one.
    args: dict[str, Any] = {
        "weights": [0.0] * 5,
        "rewards": [1.0, 3.0, 5.0, 5.0, 8.0],
        "policy_log_probs": [0.0] * 5,
        "ref_log_probs": [0.0] * 5,
        "log_prob_grads": np.eye(5).tolist(),
    }
    groups = [0, 0, 1, 1, 1]
    rloo = compute_update(
        **args, beta=0.0, lr=5.0, options=UpdateOptions(baseline="rloo", group_ids=groups)
    )
    # 1 - 3, 3 - 1, 5 - (5 + 8)/2, 5 - 6.5, 8 - 5
    assert rloo.weights.tolist() == pytest.approx([-2, 2, -1.5, -1.5, 3], rel=1e-15)
    grpo = compute_update(
        **args, beta=0.0, lr=5.0, options=UpdateOptions(baseline="grpo", group_ids=groups)
    )
    std0, std1 = math.sqrt(2), math.sqrt(3)  # sample stds of {1, 3} and {5, 5, 8}
    want = [-1 / (std0 + 1e-4), 1 / (std0 + 1e-4), -1 / (std1 + 1e-4), -1 / (std1 + 1e-4)]
    want.append(2 / (std1 + 1e-4))
    assert grpo.weights.tolist() == pytest.approx(want, rel=1e-14)


def test_adaptive_kl_leaves_the_update_alone() -> None:
    args = _arrays(random_batch(4))
    plain = compute_update(**args, beta=0.3, lr=0.1)
    adaptive = compute_update(
        **args, beta=0.3, lr=0.1, options=UpdateOptions(target_kl=0.01, kl_horizon=100)
    )
    assert adaptive.weights.tobytes() == plain.weights.tobytes()
    # kl_mean is far from 0.01, so the proportional error saturates at +-0.2.
    error = 0.2 if plain.stats.kl_mean > 0.01 else -0.2
    assert adaptive.stats.next_beta == pytest.approx(0.3 * (1 + error * 12 / 100), rel=1e-15)
    assert plain.stats.next_beta is None


@pytest.mark.parametrize(
    ("options", "loc", "match"),
    [
        pytest.param(
            {"kl_estimator": "k4"}, ("kl_estimator",), r"expected one of 'k1', 'k2'", id="est"
        ),
        pytest.param(
            {"baseline": "ppo"}, ("baseline",), r"expected one of 'none', 'mean'", id="baseline"
        ),
        pytest.param({"grpo_scale": "mad"}, ("grpo_scale",), r"one of 'std', 'none'", id="scale"),
        pytest.param({"max_grad_norm": 0.0}, ("max_grad_norm",), r"finite number > 0", id="zero"),
        pytest.param({"kl_clamp": -1.0}, ("kl_clamp",), r"finite number > 0", id="neg-clamp"),
        pytest.param({"reward_clip": math.inf}, ("reward_clip",), r"> 0", id="inf-clip"),
        pytest.param({"target_kl": math.nan, "kl_horizon": 1.0}, ("target_kl",), r"> 0", id="nan"),
        pytest.param({"kl_horizon": 100.0}, ("target_kl",), r"needs both", id="half-adaptive"),
        pytest.param(
            {"normalize_advantages": "yes"}, ("normalize_advantages",), r"true or false", id="bool"
        ),
        pytest.param({"group_ids": [1]}, ("group_ids",), r"has 1 entries; expected 2", id="len"),
        pytest.param({"group_ids": [1.0, 2.0]}, ("group_ids",), r"float64 values", id="floats"),
        pytest.param(
            {"group_ids": []},
            ("group_ids",),
            r"group_ids is empty; expected 2 integers",
            id="empty",
        ),
        pytest.param({"group_ids": [10**30, 1]}, ("group_ids",), r"beyond int64", id="huge"),
        pytest.param(
            {"baseline": "rloo", "group_ids": [3, 4]},
            ("group_ids", 0),
            r"group 3 \(group_ids\[0\]\) has 1 sample",
            id="rloo-single",
        ),
    ],
)
def test_invalid_options_are_named(
    options: dict[str, Any], loc: tuple[Any, ...], match: str
) -> None:
    args = _arrays(EXAMPLE)
    with pytest.raises(InvalidInputError, match=match) as info:
        compute_update(**args, beta=1.0, lr=0.1, options=UpdateOptions(**options))
    assert info.value.problems[0].loc == loc


def test_the_defaults_are_valid_options() -> None:
    assert option_problems(UpdateOptions()) == []


def test_rloo_on_a_batch_of_one_sample_without_groups() -> None:
    with pytest.raises(InvalidInputError, match="batch is one group") as info:
        compute_update(
            [1.0],
            [1.0],
            [0.0],
            [0.0],
            [[1.0]],
            beta=0,
            lr=1,
            options=UpdateOptions(baseline="rloo"),
        )
    assert info.value.problems[0].loc == ("baseline",)
