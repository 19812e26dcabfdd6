"""The policy losses, TIS, the KL loss and the aggregations against the fsum reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import UpdateOptions, UpdateResult, compute_update
from tests.helpers.batches import random_batch
from tests.helpers.policy_batches import batches_with_options, pairs
from tests.helpers.reference import ReferenceOptionsUpdate, reference_options_update

EPS = np.finfo(np.float64).eps
RTOL = 1e-12
# The statistics that exist only with their feature, by where the core keeps them.
RATIO_STATS = (
    "ratio_mean",
    "ratio_min",
    "ratio_max",
    "clip_frac",
    "clip_frac_low",
    "clip_frac_high",
    "dual_clip_frac",
    "log_ratio_clamped_frac",
    "active_frac",
    "approx_kl_old",
)
TIS_STATS = (
    "tis_weight_mean",
    "tis_weight_min",
    "tis_weight_max",
    "tis_truncated_frac",
    "tis_masked_frac",
    "tis_ess",
)


# The statistics that count samples by the sign of their advantage.
SIGN_COUNTS = ("clip_frac", "clip_frac_low", "clip_frac_high", "dual_clip_frac", "active_frac")


def run(args: dict[str, Any], options: dict[str, Any]) -> UpdateResult:
    arrays = {k: v for k, v in args.items() if k not in ("beta", "lr")}
    return compute_update(
        **arrays, beta=args["beta"], lr=args["lr"], options=UpdateOptions(**options)
    )


def extra_stats(result: UpdateResult) -> dict[str, float]:
    """The feature-only statistics of a result, by their wire names, those present."""
    stats = result.stats
    found: dict[str, float] = {}
    for group, names in ((stats.ratio, RATIO_STATS), (stats.tis, TIS_STATS)):
        if group is not None:
            found.update(
                (name, value) for name in names if (value := getattr(group, name)) is not None
            )
    if stats.kl_loss_mean is not None:
        found["kl_loss_mean"] = stats.kl_loss_mean
    return found


def assert_matches(result: UpdateResult, ref: ReferenceOptionsUpdate, lr: float) -> None:
    """Weights within RTOL of the reference, relative to the terms they sum; stats too."""
    factor = 1.0
    if ref.clipped:
        unclipped = math.sqrt(math.fsum(x * x for x in ref.grad))
        factor = unclipped / ref.grad_norm if ref.grad_norm else 1.0
    for j, (got, want) in enumerate(zip(result.weights.tolist(), ref.weights, strict=True)):
        scale = abs(want) + lr * ref.abs_terms[j] * max(factor, 1.0)
        assert abs(got - want) <= RTOL * scale + 1e-300, (j, got, want)
    assert result.stats.clipped is ref.clipped
    # The norm's error, like the weights', is relative to the terms summed, and the inputs
    # are of order one: a gradient that cancels to 0 exactly (advantages that a baseline
    # makes 0) may come out as a rounding residue.
    terms = math.hypot(*ref.abs_terms) * max(factor, 1.0)
    assert math.isclose(
        result.stats.grad_norm, ref.grad_norm, rel_tol=RTOL, abs_tol=RTOL * max(terms, 1.0)
    )
    got_extra = extra_stats(result)
    assert got_extra.keys() == ref.extra_stats.keys()
    # Which samples have A = 0, A > 0 or A < 0 is a matter of rounding when an advantage is
    # 0 up to rounding (ties that clamps make, then whitened): then the counts may differ.
    largest = max(map(abs, ref.advantages))
    signs_exact = all(abs(a) > 1e-9 * largest for a in ref.advantages)
    for name, want in ref.extra_stats.items():
        if name in SIGN_COUNTS and not signs_exact:
            continue
        assert math.isclose(got_extra[name], want, rel_tol=RTOL, abs_tol=RTOL), name


@settings(max_examples=400, deadline=None)
@given(batches_with_options())
def test_every_option_and_combination_matches_the_reference(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    args, options = case
    result = run(args, options)
    ref = reference_options_update(**args, **options)
    assert_matches(result, ref, args["lr"])


def test_the_reference_cases_exercise_every_branch() -> None:
    # The random cases above would prove little if clipping, masking, dual clip and the
    # log-ratio clamp never happened in them.
    seen: dict[str, float] = {}
    for seed in range(60):
        args, options = _case(seed)
        stats = extra_stats(run(args, options))
        for name in ("clip_frac_high", "clip_frac_low", "dual_clip_frac", "tis_masked_frac"):
            seen[name] = max(seen.get(name, 0.0), stats.get(name, 0.0))
        seen["log_ratio_clamped_frac"] = max(
            seen.get("log_ratio_clamped_frac", 0.0), stats.get("log_ratio_clamped_frac", 0.0)
        )
    assert all(value > 0 for value in seen.values()), seen


def _case(seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fixed off-policy case with every clip in reach."""
    b = 16
    args = random_batch(seed, b, 3)
    rng = np.random.default_rng(seed)
    policy = np.asarray(args["policy_log_probs"])
    old = policy + 0.5 * rng.standard_normal(b)
    loss = ("ppo_clip", "gspo")[seed % 2]
    options: dict[str, Any] = {
        "policy_loss": loss,
        "old_log_probs": old.tolist(),
        "sequence_lengths": rng.integers(1, 3, b).tolist(),
        "dual_clip_c": 1.3,
        "log_ratio_clamp": 0.9,
        "baseline": "mean",
        "tis_mode": "mask",
        "behavior_log_probs": (old + rng.standard_normal(b)).tolist(),
    }
    return args, options


@pytest.mark.parametrize("loss", ["ppo_clip", "cispo"])
@pytest.mark.parametrize("old", ["omitted", "equal"])
def test_on_policy_ratio_losses_are_todays_update_bit_for_bit(loss: str, old: str) -> None:
    args = random_batch(21, 12, 5)
    options: dict[str, Any] = {"baseline": "grpo", "group_ids": pairs(12)}
    plain = run(args, options)
    if old == "equal":
        options["old_log_probs"] = list(args["policy_log_probs"])
    clipped = run(args, {**options, "policy_loss": loss, "dual_clip_c": None})
    assert clipped.weights.tobytes() == plain.weights.tobytes()
    ratio = clipped.stats.ratio
    assert ratio is not None
    assert (ratio.ratio_min, ratio.ratio_max, ratio.clip_frac) == (1.0, 1.0, 0.0)


def test_gspo_with_single_tokens_and_seq_mean_is_todays_update_bit_for_bit() -> None:
    args = random_batch(22, 10, 4)
    plain = run(args, {"baseline": "mean"})
    gspo = run(
        args,
        {
            "baseline": "mean",
            "policy_loss": "gspo",
            "sequence_lengths": [1] * 10,
            "loss_agg": "seq_mean",
            "dual_clip_c": 3.0,
        },
    )
    assert gspo.weights.tobytes() == plain.weights.tobytes()


@settings(max_examples=100, deadline=None)
@given(batches_with_options())
def test_tis_with_behavior_equal_to_old_is_a_no_op(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    args, options = case
    options = {k: v for k, v in options.items() if not k.startswith("tis_")}
    options.pop("behavior_log_probs", None)
    without = run(args, options)
    old = options.get("old_log_probs", args["policy_log_probs"])
    for normalize in (False, True):
        with_tis = run(
            args,
            {
                **options,
                "tis_mode": "truncate",
                "behavior_log_probs": list(old),
                "tis_batch_normalize": normalize,
            },
        )
        assert with_tis.weights.tobytes() == without.weights.tobytes()
        assert with_tis.stats.tis is not None
        assert with_tis.stats.tis.tis_ess == 1.0


@settings(max_examples=100, deadline=None)
@given(batches_with_options())
def test_kl_loss_coef_zero_never_changes_a_bit(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    args, options = case
    options = {**options, "kl_loss_coef": 0.0}
    base = {k: v for k, v in options.items() if not k.startswith("kl_loss")}
    got, want = run(args, options), run(args, base)
    assert got.weights.tobytes() == want.weights.tobytes()
    assert got.stats == want.stats
    assert got.stats.kl_loss_mean is None


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    b=st.integers(1, 16),
    loss=st.sampled_from(["ppo_clip", "gspo"]),
    dual=st.sampled_from([None, 1.2, 3.0]),
    bound=st.sampled_from([20.0, 1.0, 0.3]),
    spread=st.sampled_from([0.1, 0.5, 2.0]),
)
def test_the_zero_gradient_set_is_the_clip_statistics_set(
    seed: int, b: int, loss: str, dual: float | None, bound: float, spread: float
) -> None:
    # log_prob_grads = I: grad_i = c_i * coef_i, one sample per weight.
    rng = np.random.default_rng(seed)
    policy = rng.standard_normal(b) - 3
    old = policy + spread * rng.standard_normal(b)
    # With beta 0 and no baseline A = rewards exactly, A = 0 included.
    rewards = np.round(rng.standard_normal(b))
    lengths = rng.integers(1, 4, b)
    options = UpdateOptions(
        policy_loss=loss,  # type: ignore[arg-type]
        old_log_probs=old,
        sequence_lengths=lengths,
        dual_clip_c=dual,
        log_ratio_clamp=bound,
    )
    result = compute_update(
        np.zeros(b), rewards, policy, policy - 1, np.eye(b), beta=0.0, lr=1.0, options=options
    )
    zero = result.weights == 0
    ratio = result.stats.ratio
    assert ratio is not None
    # The same set, recomputed from the statistics' definitions.
    log_ratio = (policy - old) / (lengths if loss == "gspo" else 1)
    rho = np.exp(np.clip(log_ratio, -bound, bound))
    advantage = rewards
    high = (advantage > 0) & (rho > 1.2)
    low = (advantage < 0) & (rho < 0.8)
    dual_set = (advantage < 0) & (rho > dual) if dual is not None else np.zeros(b, bool)
    clamped = np.abs(log_ratio) > bound
    inactive = (advantage == 0) | high | low | dual_set | clamped
    np.testing.assert_array_equal(zero, inactive)
    assert ratio.active_frac == (b - np.count_nonzero(zero)) / b
    assert ratio.clip_frac_high == np.count_nonzero(high) / b
    assert ratio.clip_frac_low == np.count_nonzero(low) / b
    assert ratio.log_ratio_clamped_frac == np.count_nonzero(clamped) / b
    if dual is not None:
        assert ratio.dual_clip_frac == np.count_nonzero(dual_set) / b


def test_cispo_keeps_the_gradient_of_a_clipped_or_clamped_sample() -> None:
    # rho = e^3 is far above 1.2 and the log-ratio 3 is beyond the clamp 1: the coefficient
    # is still clip(e^1, 0.8, 1.2) * A = 1.2 * A.
    result = compute_update(
        [0.0],
        [2.0],
        [0.0],
        [0.0],
        [[1.0]],
        beta=0.0,
        lr=1.0,
        options=UpdateOptions(policy_loss="cispo", old_log_probs=[-3.0], log_ratio_clamp=1.0),
    )
    assert result.weights.tolist() == [2.0 * 1.2]
    ratio = result.stats.ratio
    assert ratio is not None
    assert (ratio.clip_frac, ratio.log_ratio_clamped_frac, ratio.active_frac) == (1.0, 1.0, 1.0)
    assert ratio.ratio_max == math.exp(1.0)


def test_ppo_clip_drops_a_sample_beyond_the_log_ratio_clamp() -> None:
    # A < 0 and rho = e^25 (clamped to e^20): without dual clip the surrogate -rho * A
    # would be taken, but the clamp passes no gradient.
    options = UpdateOptions(policy_loss="ppo_clip", old_log_probs=[-25.0])
    result = compute_update([0.0], [-1.0], [0.0], [0.0], [[1.0]], beta=0, lr=1, options=options)
    assert result.weights.tolist() == [0.0]
    ratio = result.stats.ratio
    assert ratio is not None
    assert ratio.ratio_max == math.exp(20.0)
    assert ratio.active_frac == 0.0
    assert ratio.approx_kl_old == -25.0


def test_stats_present_only_with_their_feature() -> None:
    args = random_batch(30, 6, 2)
    plain = run(args, {})
    assert (plain.stats.ratio, plain.stats.tis, plain.stats.kl_loss_mean) == (None, None, None)
    ppo = run(args, {"policy_loss": "ppo_clip"})
    assert ppo.stats.ratio is not None
    assert ppo.stats.ratio.dual_clip_frac is None
    dual = run(args, {"policy_loss": "ppo_clip", "dual_clip_c": 3.0})
    assert dual.stats.ratio is not None
    assert dual.stats.ratio.dual_clip_frac == 0.0
    tis = run(args, {"tis_mode": "mask", "behavior_log_probs": args["policy_log_probs"]})
    assert (tis.stats.ratio, tis.stats.kl_loss_mean) == (None, None)
    assert tis.stats.tis is not None
