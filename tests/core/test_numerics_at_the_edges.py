"""Products beyond float64 whose results are not: exact answers, checked with fractions.

A 422 update-overflow is right only when a result itself (a weight, the gradient, a
statistic) cannot be represented; a product on the way there that overflows is the
service's problem, not the caller's.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from app.core import UpdateOptions, UpdateOverflowError, compute_update
from app.core.kernel import weighted_row_sum
from app.core.stable import add_product, mean_product

MAX = np.finfo(np.float64).max


def _exact_grad(advantage: list[float], grads: list[list[float]]) -> list[Fraction]:
    b = len(advantage)
    columns = zip(*grads, strict=True)
    return [
        sum((Fraction(a) * Fraction(g) for a, g in zip(advantage, col, strict=True)), Fraction(0))
        / b
        for col in columns
    ]


def test_opposite_rewards_on_huge_gradients_give_the_exact_zero_gradient() -> None:
    # The case: 1e10 * 1e300 overflows, the two products cancel exactly.
    result = compute_update(
        [0.25, -3.0], [1e10, -1e10], [0.0, 0.0], [0.0, 0.0], [[1e300, 1e300]] * 2, beta=0, lr=0.5
    )
    assert _exact_grad([1e10, -1e10], [[1e300, 1e300]] * 2) == [0, 0]
    assert result.weights.tolist() == [0.25, -3.0]
    assert result.stats.grad_norm == 0.0
    assert result.stats.update_norm == 0.0


def test_gradient_whose_products_overflow_is_exact() -> None:
    # Powers of two and small integers: every partial sum is exact in any order, so the
    # float64 answer must equal the exact one. Column 0 cancels, column 1 is 2**1021 from
    # products of 3 * 2**1023 and 2**1024, column 2 holds only small values.
    rewards = [2.0**40, -(2.0**40), 3.0, 5.0]
    grads = [
        [2.0**1000, 3 * 2.0**983, 0.0],
        [2.0**1000, 2.0**984, 0.0],
        [0.0, 0.0, 7.0],
        [0.0, 0.0, 11.0],
    ]
    weights, lr = [1.0, -(2.0**990), 4.0], 2.0**-30
    result = compute_update(weights, rewards, [0.0] * 4, [0.0] * 4, grads, beta=0, lr=lr)
    exact = _exact_grad(rewards, grads)
    assert exact == [0, Fraction(2) ** 1021, 19]
    expected = [float(Fraction(w) + Fraction(lr) * g) for w, g in zip(weights, exact, strict=True)]
    assert result.weights.tolist() == expected
    norm = math.sqrt(float(exact[1] / 2**1000) ** 2 + float(exact[2] / 2**1000) ** 2) * 2.0**1000
    assert result.stats.grad_norm == pytest.approx(norm, rel=1e-15)
    assert result.stats.update_norm == pytest.approx(lr * norm, rel=1e-15)
    assert result.stats.reward_mean == 2.0


def test_a_gradient_beyond_float64_is_still_422_naming_the_entry() -> None:
    with pytest.raises(UpdateOverflowError, match=r"grad\[0\] overflows float64 \(inf\)") as info:
        compute_update([0.0, 0.0], [1e10], [0.0], [0.0], [[1e300, 1.0]], beta=0, lr=1.0)
    assert info.value.problems[0].loc == ("grad", 0)


def test_adjusted_reward_whose_penalty_overflows_is_exact() -> None:
    # beta * kl = 3.2e308 is beyond float64; rewards - beta * kl = -1.5e308 is not.
    rewards, policy, beta = [1.7e308, 0.0], [1.6e308, 0.0], 2.0
    result = compute_update(
        [0.0], rewards, policy, [0.0, 0.0], [[2.0**-1000], [0.0]], beta=beta, lr=1.0
    )
    adjusted = [
        Fraction(r) - Fraction(beta) * Fraction(p) for r, p in zip(rewards, policy, strict=True)
    ]
    assert result.stats.adjusted_reward_mean == float(sum(adjusted) / 2)
    assert result.weights.tolist() == [float(adjusted[0] * Fraction(2) ** -1000 / 2)]


def test_k2_of_a_log_ratio_whose_square_overflows_is_exact() -> None:
    d = 1.5e154  # d * d is 2.25e308, d**2 / 2 is not beyond float64
    options = UpdateOptions(kl_estimator="k2")
    result = compute_update(
        [0.0], [0.0, 0.0], [d, 0.0], [0.0, 0.0], [[0.0], [0.0]], beta=0, lr=1.0, options=options
    )
    assert result.stats.kl_max == float(Fraction(d) ** 2 / 2)


def test_mean_product_equals_the_plain_product_bit_for_bit_where_that_is_finite() -> None:
    # Scaling by powers of two commutes with rounding: away from the ends of float64 the
    # scaled product is the plain one (the same rows in the same order), in every bit.
    rng = np.random.default_rng(7)
    for magnitude in (1e-150, 1.0, 1e150):
        vector = rng.standard_normal(33) * magnitude
        matrix = rng.standard_normal((33, 17)) * 10.0 ** rng.integers(-100, 100, 17)
        plain = weighted_row_sum(vector, matrix) / vector.size
        assert mean_product(vector, matrix).tobytes() == plain.tobytes()


def test_add_product_keeps_finite_entries_bit_for_bit() -> None:
    x = np.array([1.7e308, 5e-324, -0.0, 1.0])
    y = np.array([1.6e308, 0.0, 0.0, 3.0])
    with np.errstate(over="ignore", invalid="ignore"):  # as compute_update runs it
        got = add_product(x, -2.0, y)
        plain = x - 2.0 * y
        beyond = add_product(np.array([MAX]), 1.0, np.array([MAX]))
    assert got[0] == float(Fraction(1.7e308) - 2 * Fraction(1.6e308))
    assert got[1:].tobytes() == plain[1:].tobytes()
    assert beyond[0] == math.inf
