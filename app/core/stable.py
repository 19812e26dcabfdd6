"""Arithmetic that keeps its digits at the ends of float64: mean, std, norms, products, a clamp.

Pure NumPy on 1-D float64 arrays. Overflow is looked for, not warned about: callers run
these under ``np.errstate(over="ignore", invalid="ignore")``, as `app.core.update` does.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .kernel import weighted_row_sum
from .results import FloatArray

__all__ = [
    "add_product",
    "clamp",
    "fraction",
    "mean",
    "mean_product",
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
    if bound > 0:
        # np.clip's result, without its Python wrapper's checks: maximum and minimum differ
        # from it only in which of two equal zeros they keep, and no bound here is a zero.
        return np.minimum(np.maximum(values, -bound), bound)
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


def scaled_sum_of_squares(values: FloatArray) -> tuple[float, float]:
    """``(s, q)`` with ``sum(values**2) = s**2 * q``, q free of overflow and underflow.

    Usually ``s = 1``: a finite sum of squares proves that none overflowed, and one of at
    least 2**-900 loses nothing that matters to squares that underflowed (each is below
    2**-1022). Otherwise the values are divided by a power of two (exactly) first.
    The sum is NumPy's pairwise sum of the squares, not BLAS's dot product, whose order
    differs between BLAS builds and machines.
    """
    squares = _sum_of_squares(values)
    if _SQUARES_SAFE_MIN <= squares < math.inf:
        return 1.0, squares
    scale = power_of_two_scale(values)
    if scale == 0.0 or not math.isfinite(scale):
        # All zeros: (0, 0). An infinite entry: (inf, 1), a norm of inf.
        return scale, float(scale != 0.0)
    return scale, _sum_of_squares(values / scale)


def _sum_of_squares(values: FloatArray) -> float:
    return float(np.add.reduce(values * values))


def power_of_two_scale(values: FloatArray) -> float:
    """A power of two within a factor 2 below max |values| (0 for all zeros).

    Dividing by a power of two is exact, and the quotients stay below 2 in magnitude.
    """
    largest = float(np.abs(values).max()) if values.size else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return largest
    return math.ldexp(1.0, _exponent(largest))


def add_product(x: FloatArray, alpha: float, y: FloatArray) -> FloatArray:
    """``x + alpha * y``, also where the product alone overflows but the sum does not.

    Entries whose plain result is not finite are computed again on halved operands
    (``2 * (x/2 + (alpha/2) * y)``, exact scalings): with `x` finite, a representable sum
    has a product below twice the largest float64, whose half is representable. Every
    other entry is the plain result, bit for bit. (The adjusted reward ``r - beta * kl``
    needs this; the new weights do not, as a step ``lr * grad`` beyond float64 makes the
    reported update_norm overflow whatever the sum.)

    Examples
    --------
    >>> with np.errstate(over="ignore", invalid="ignore"):
    ...     add_product(np.array([1.7e308]), -2.0, np.array([1.6e308]))
    array([-1.5e+308])
    """
    result: FloatArray = x + alpha * y
    if not math.isfinite(result.sum()):
        redo = ~np.isfinite(result)
        result[redo] = 2.0 * (0.5 * x[redo] + (0.5 * alpha) * y[redo])
    return result


def mean_product(
    vector: FloatArray, matrix: FloatArray, divisor: float | None = None
) -> FloatArray:
    """``(vector @ matrix) / divisor`` with no overflow in a product or a partial sum.

    The vector is divided by one power of two and each column of the matrix by its own, so
    that every product is below 4 in magnitude and every sum below ``4 * len(vector)``; the
    mean is scaled back by `np.ldexp`, which rounds only where the result itself is
    subnormal or overflows. The sum is `app.core.kernel.weighted_row_sum`'s, and every
    scale is the vector's or the column's own, so a column's result depends on that column
    alone. Scaling by powers of two is exact, so the result is what the
    plain product would give with an unbounded exponent range, except for terms so much
    smaller than the largest of their column that they underflow (below 2**-1022 of it),
    which the plain sum would lose to rounding all the same.

    Parameters
    ----------
    vector : ndarray, shape (B,)
        Finite values.
    matrix : ndarray, shape (B, N)
        Finite values.
    divisor : float, optional
        What the sum is divided by; ``len(vector)`` when not given.

    Returns
    -------
    ndarray, shape (N,)
        Infinite where the mean itself is beyond float64.

    Examples
    --------
    >>> mean_product(np.array([1e10, -1e10]), np.array([[1e300, 1.0], [1e300, 3.0]]))
    array([ 0.e+00, -1.e+10])
    """
    vector_exponent = _exponent(float(np.abs(vector).max()))
    # The largest magnitude of each column, without an |matrix| temporary.
    column_max = np.maximum(matrix.max(axis=0), -matrix.min(axis=0))
    column_exponents = np.frexp(column_max)[1] - 1
    scaled_vector = np.ldexp(vector, -vector_exponent)
    scaled_matrix = np.ldexp(matrix, -column_exponents)
    sums = weighted_row_sum(scaled_vector, scaled_matrix)
    size = vector.size if divisor is None else divisor
    result: FloatArray = np.ldexp(sums / size, vector_exponent + column_exponents)
    return result


def _exponent(largest: float) -> int:
    """The e of the power of two `power_of_two_scale` gives for this largest magnitude."""
    return math.frexp(largest)[1] - 1 if largest else 0
