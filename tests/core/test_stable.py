"""The reductions of the update at the ends of float64: norms, standard deviations, clamps."""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

import numpy as np
import pytest

from app.core.norms import chunked_norm
from app.core.stable import clamp, sample_std


def _exact_sqrt(value: Fraction) -> float:
    """The square root of an exact rational, to 40 digits, as a float."""
    with decimal.localcontext(prec=40):
        return float((decimal.Decimal(value.numerator) / value.denominator).sqrt())


@pytest.mark.parametrize("magnitude", [1e-300, 1e-200, 1e-160, 1.0, 1e150, 1e200, 1e307])
def test_norm_and_std_keep_full_precision_from_tiny_to_huge(magnitude: float) -> None:
    values = np.array([3.0, -4.0, 12.0, 0.5]) * magnitude
    exact = [Fraction(float(v)) for v in values]
    norm = _exact_sqrt(sum((v * v for v in exact), Fraction(0)))
    mean_ = sum(exact, Fraction(0)) / len(exact)
    std = _exact_sqrt(sum(((v - mean_) ** 2 for v in exact), Fraction(0)) / (len(exact) - 1))
    with np.errstate(over="ignore"):  # as compute_update runs them
        assert chunked_norm(values) == pytest.approx(norm, rel=1e-14)
        assert sample_std(values) == pytest.approx(std, rel=1e-14)


def test_norm_of_zeros_and_of_an_infinite_entry() -> None:
    assert chunked_norm(np.zeros(3)) == 0.0
    assert sample_std(np.full(3, 2.5)) == 0.0
    assert chunked_norm(np.array([1.0, -np.inf])) == math.inf


@pytest.mark.parametrize("bound", [2.0, 5e-324, 1e-310, 1.7976931348623157e308, np.inf, 0.0])
def test_clamp_is_np_clip_bit_for_bit_nan_and_signed_zero_included(bound: float) -> None:
    values = np.array([-np.inf, -3.0, -2.0, -0.0, 0.0, 5e-324, -5e-324, 1e-310, 2.5, np.inf])
    values = np.concatenate([values, [bound, -bound, np.nan]])
    got, expected = clamp(values, bound), np.clip(values, -bound, bound)
    assert got.tobytes() == expected.tobytes()
