"""Reductions that keep their digits at the ends of float64: mean, std, norms, and a clamp.

Pure NumPy on 1-D float64 arrays. Overflow is looked for, not warned about: callers run
these under ``np.errstate(over="ignore", invalid="ignore")``, as `app.core.update` does.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .results import FloatArray

__all__ = [
    "clamp",
    "fraction",
    "l2_norm",
    "mean",
    "power_of_two_scale",
    "sample_std",
    "scaled_sum_of_squares",
]

# A sum of squares at least this large is not spoilt by squares that underflowed.
_SQUARES_SAFE_MIN = 2.0**-900


def clamp(values: FloatArray, bound: float) -> FloatArray:
    """``values`` limited to ``[-bound, bound]``, NaN kept.

    Examples
    --------
    >>> clamp(np.array([-3.0, 0.5, 3.0]), 2.0)
    array([-2. ,  0.5,  2. ])
    """
    clamped: FloatArray = np.clip(values, -bound, bound)
    return clamped


def fraction(flags: NDArray[np.bool_]) -> float:
    """The fraction of true entries, exactly: their count over the size.

    >>> fraction(np.array([True, False, False, True]))
    0.5
    """
    return int(np.count_nonzero(flags)) / flags.size


def mean(values: FloatArray) -> float:
    """Mean that does not overflow while the mean itself is representable.

    NumPy's pairwise sum and one division, as `np.mean`; when that sum overflows although
    every value is finite, the values are divided by a power of two (exactly) first. NaN
    for no values.

    Examples
    --------
    >>> with np.errstate(over="ignore"):
    ...     mean(np.array([1e308, 1e308]))
    1e+308
    """
    if not values.size:
        return math.nan
    result = float(values.sum()) / values.size
    if not math.isfinite(result) and np.isfinite(values).all():
        scale = power_of_two_scale(values)
        result = scale * (float((values / scale).sum()) / values.size)
    return result


def sample_std(values: FloatArray, values_mean: float | None = None) -> float:
    """Sample standard deviation (ddof = 1), 0 for a single value; no overflow in squares.

    `values_mean`, when the caller has it already, is ``mean(values)``.

    Examples
    --------
    >>> sample_std(np.array([1.0, 3.0]))
    1.4142135623730951
    """
    if values.size < 2:
        return 0.0
    centred = values - (mean(values) if values_mean is None else values_mean)
    scale, squares = scaled_sum_of_squares(centred)
    return scale * math.sqrt(squares / (values.size - 1))


def l2_norm(values: FloatArray) -> float:
    """Euclidean norm, without overflow or underflow in the squares.

    Examples
    --------
    >>> with np.errstate(over="ignore"):
    ...     l2_norm(np.array([3e300, 4e300]))
    5e+300
    """
    scale, squares = scaled_sum_of_squares(values)
    return scale * math.sqrt(squares)


def scaled_sum_of_squares(values: FloatArray) -> tuple[float, float]:
    """``(s, q)`` with ``sum(values**2) = s**2 * q``, q free of overflow and underflow.

    Usually ``s = 1``: a finite sum of squares proves that none overflowed, and one of at
    least 2**-900 loses nothing that matters to squares that underflowed (each is below
    2**-1022). Otherwise the values are divided by a power of two (exactly) first.
    """
    squares = float(values @ values)
    if _SQUARES_SAFE_MIN <= squares < math.inf:
        return 1.0, squares
    scale = power_of_two_scale(values)
    if scale == 0.0 or not math.isfinite(scale):
        # All zeros: (0, 0). An infinite entry: (inf, 1), a norm of inf.
        return scale, float(scale != 0.0)
    scaled = values / scale
    return scale, float(scaled @ scaled)


def power_of_two_scale(values: FloatArray) -> float:
    """A power of two within a factor 2 below max |values| (0 for all zeros).

    Dividing by a power of two is exact, and the quotients stay below 2 in magnitude.
    """
    largest = float(np.abs(values).max()) if values.size else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return largest
    return math.ldexp(1.0, math.frexp(largest)[1] - 1)
