"""One update by the numeric core: the formula, its statistics, and overflow named."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from app.core import UpdateOverflowError, compute_update, rlhf_weight_update
from tests.helpers.reference import EXAMPLE, reference_update


def test_reference_example() -> None:
    new = rlhf_weight_update(**EXAMPLE)
    # 1 + 0.1 * 0.5 and 1 - 0.1 * 0.5, each rounded once.
    assert new.tolist() == [1.0 + 0.1 * 0.5, 1.0 - 0.1 * 0.5]
    assert new.tolist() == pytest.approx([1.05, 0.95], abs=1e-15)
    assert new.dtype == np.float64
    assert new.shape == (2,)


def test_hand_computed_case() -> None:
    # kl = [0.5, 0]; adjusted = [1 - 0.5 * 0.5, -2] = [0.75, -2]
    # grad = ([0.75, 0, 1.5] + [-1, -2, 2]) / 2 = [-0.125, -1, 1.75]
    # new = [0.5, -1, 2] + 0.5 * grad = [0.4375, -1.5, 2.875]   (all exact in binary)
    result = compute_update(
        [0.5, -1.0, 2.0],
        [1.0, -2.0],
        [-1.0, -0.5],
        [-1.5, -0.5],
        [[1.0, 0.0, 2.0], [0.5, 1.0, -1.0]],
        beta=0.5,
        lr=0.5,
    )
    assert result.weights.tolist() == [0.4375, -1.5, 2.875]
    assert result.stats.kl_mean == 0.25
    assert result.stats.reward_mean == -0.5
    assert result.stats.adjusted_reward_mean == -0.625
    assert result.stats.grad_norm == pytest.approx(math.sqrt(0.125**2 + 1 + 1.75**2), rel=1e-15)
    assert result.stats.update_norm == pytest.approx(0.5 * result.stats.grad_norm, rel=1e-15)


def test_single_sample() -> None:
    # B = 1: grad is adjusted_0 * grads[0] = (2 - 1 * 0.5) * [1, -2] = [1.5, -3].
    new = rlhf_weight_update([0.0, 0.0], [2.0], [0.0], [-0.5], [[1.0, -2.0]], beta=1.0, lr=1.0)
    assert new.tolist() == [1.5, -3.0]


def test_single_weight() -> None:
    # N = 1: grad = mean([1 * 2, 3 * -1]) = -0.5.
    new = rlhf_weight_update([1.0], [1.0, 3.0], [0.0, 0.0], [0.0, 0.0], [[2.0], [-1.0]], 0.0, 2.0)
    assert new.tolist() == [0.0]


def test_beta_zero_ignores_the_kl() -> None:
    args = dict(EXAMPLE, policy_log_probs=[0.0, -3.0], ref_log_probs=[-7.0, 4.0], beta=0.0)
    without_kl = dict(args, policy_log_probs=[0.0, 0.0], ref_log_probs=[0.0, 0.0])
    assert rlhf_weight_update(**args).tolist() == rlhf_weight_update(**without_kl).tolist()


def test_lr_zero_returns_the_weights_bit_for_bit() -> None:
    weights = np.array([5e-324, -0.0, 1.7976931348623157e308, -2.2250738585072014e-308, 0.1])
    new = rlhf_weight_update(weights, [1.0], [0.0], [0.0], [[1.0, 2.0, 3.0, 4.0, 5.0]], 1.0, 0.0)
    assert new.view(np.int64).tolist() == weights.view(np.int64).tolist()
    assert new is not weights


def test_kl_penalty_pulls_against_a_policy_above_the_reference() -> None:
    # Zero reward, policy log-prob 1 above the reference: kl = 1, adjusted = -beta,
    # so the step goes against the sample's gradient, and more so for larger beta.
    def step(beta: float) -> float:
        new = rlhf_weight_update([0.0], [0.0], [-1.0], [-2.0], [[1.0]], beta=beta, lr=1.0)
        return float(new[0])

    assert step(0.0) == 0.0
    assert step(1.0) == -1.0
    assert step(2.0) == -2.0


def test_kl_penalty_rewards_a_policy_below_the_reference() -> None:
    new = rlhf_weight_update([0.0], [0.0], [-2.0], [-1.0], [[1.0]], beta=0.5, lr=1.0)
    assert new.tolist() == [0.5]


def test_inputs_are_not_mutated() -> None:
    arrays = {
        "weights": np.array([1.0, -1.0]),
        "rewards": np.array([1.0, 2.0]),
        "policy_log_probs": np.array([-1.0, -2.0]),
        "ref_log_probs": np.array([-1.5, -1.0]),
        "log_prob_grads": np.array([[0.5, -0.5], [0.25, 1.0]]),
    }
    copies = {name: array.copy() for name, array in arrays.items()}
    new = rlhf_weight_update(**arrays, beta=0.3, lr=0.7)
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, copies[name], err_msg=name)
    assert not np.shares_memory(new, arrays["weights"])


def test_read_only_and_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(0)
    grads_t = rng.standard_normal((5, 3))
    arrays = {
        "weights": rng.standard_normal(10)[::2],
        "rewards": rng.standard_normal(3),
        "policy_log_probs": rng.standard_normal(3),
        "ref_log_probs": rng.standard_normal(3),
        "log_prob_grads": grads_t.T,  # Fortran-ordered (3, 5)
    }
    for array in arrays.values():
        array.flags.writeable = False
    got = rlhf_weight_update(**arrays, beta=0.1, lr=0.01)
    contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    np.testing.assert_allclose(got, rlhf_weight_update(**contiguous, beta=0.1, lr=0.01), rtol=1e-14)


def test_float32_and_integer_inputs_are_computed_in_float64() -> None:
    f32 = rlhf_weight_update(
        np.array([1, 1], dtype=np.float32),
        np.array([1, 1], dtype=np.float32),
        np.array([-1.5, -1.5], dtype=np.float32),
        np.array([-1.5, -1.5], dtype=np.float32),
        np.array([[0.5, -0.5], [0.5, -0.5]], dtype=np.float32),
        1.0,
        0.1,
    )
    ints = rlhf_weight_update([1, 1], [1, 1], [-1.5, -1.5], [-1.5, -1.5], [[0.5, -0.5]] * 2, 1, 0.1)
    reference = rlhf_weight_update(**EXAMPLE)
    assert f32.dtype == np.float64
    assert f32.tolist() == reference.tolist() == ints.tolist()


def test_stats_match_the_reference() -> None:
    rng = np.random.default_rng(7)
    b, n = 6, 4
    args: dict[str, Any] = {
        "weights": rng.standard_normal(n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": rng.standard_normal(b) - 2,
        "ref_log_probs": rng.standard_normal(b) - 2,
        "log_prob_grads": rng.standard_normal((b, n)),
    }
    result = compute_update(**args, beta=0.2, lr=0.05)
    ref = reference_update(**{k: v.tolist() for k, v in args.items()}, beta=0.2, lr=0.05)
    assert result.stats.kl_mean == pytest.approx(math.fsum(ref.kl) / b, rel=1e-14)
    assert result.stats.reward_mean == pytest.approx(math.fsum(args["rewards"]) / b, rel=1e-14)
    assert result.stats.adjusted_reward_mean == pytest.approx(
        math.fsum(ref.adjusted) / b, rel=1e-14
    )
    assert result.stats.grad_norm == pytest.approx(math.hypot(*ref.grad), rel=1e-13)
    assert result.stats.update_norm == pytest.approx(0.05 * math.hypot(*ref.grad), rel=1e-13)


def test_stats_of_huge_and_tiny_values_do_not_overflow_or_vanish() -> None:
    big = 1.5e308
    result = compute_update(
        [0.0, 0.0], [big, big], [0.0, 0.0], [0.0, 0.0], [[0.0, 0.0]] * 2, beta=0, lr=1
    )
    assert result.stats.reward_mean == big
    tiny = compute_update([0.0, 0.0], [1.0], [0.0], [0.0], [[3e-200, 4e-200]], beta=0, lr=1)
    assert tiny.stats.grad_norm == pytest.approx(5e-200, rel=1e-15)
    huge = compute_update([0.0, 0.0], [1.0], [0.0], [0.0], [[3e200, 4e200]], beta=0, lr=1e-100)
    assert huge.stats.grad_norm == pytest.approx(5e200, rel=1e-15)


OK_ARGS: dict[str, Any] = dict(EXAMPLE)


@pytest.mark.parametrize(
    ("changes", "loc", "match"),
    [
        pytest.param(
            {"policy_log_probs": [1e308, 0.0], "ref_log_probs": [-1e308, 0.0]},
            ("kl", 0),
            r"KL estimate policy_log_probs\[0\] - ref_log_probs\[0\] overflows",
            id="kl",
        ),
        pytest.param(
            {"policy_log_probs": [1e308, 0.0], "ref_log_probs": [-1e308, 0.0], "beta": 0.0},
            ("kl", 0),
            r"KL estimate policy_log_probs\[0\] - ref_log_probs\[0\] overflows",
            id="kl-with-beta-0",
        ),
        pytest.param(
            {
                "rewards": [1.7e308, 1.0],
                "policy_log_probs": [-1e308, 0.0],
                "ref_log_probs": [0.0] * 2,
            },
            ("adjusted", 0),
            r"adjusted reward .* overflows",
            id="adjusted",
        ),
        pytest.param(
            {"log_prob_grads": [[1e308, 1.0], [1e308, 1.0]], "rewards": [1e10, 1e10]},
            ("grad", 0),
            r"policy gradient grad\[0\] overflows",
            id="grad",
        ),
        pytest.param(
            {"weights": [1.7e308, 1.0], "lr": 1e308},
            ("new_weights", 0),
            r"updated weight weights\[0\] \+ lr \* grad\[0\] overflows",
            id="weights",
        ),
        pytest.param(
            {"log_prob_grads": [[1.7e308, 1.7e308], [1.7e308, 1.7e308]], "weights": [0.0, 0.0]},
            ("stats", "grad_norm"),
            r"stats.grad_norm overflows",
            id="norm",
        ),
    ],
)
def test_overflow_is_reported(changes: dict[str, Any], loc: tuple[Any, ...], match: str) -> None:
    args = {**OK_ARGS, "lr": 1.0, **changes}
    with pytest.raises(UpdateOverflowError, match=match) as info:
        compute_update(**args)
    assert isinstance(info.value, ValueError)
    assert info.value.problems[0].loc == loc


def test_gradient_whose_column_sum_overflows_but_mean_does_not() -> None:
    big = 1.7e308
    new = rlhf_weight_update([0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [[big], [big]], 0, 0.5)
    assert new.tolist() == [0.5 * big]
