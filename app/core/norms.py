"""Euclidean norms over N from fixed global chunks of columns, combined exactly.

A norm over the weights' columns (the gradient's, the step's, the update's) is the
combination of one partial per chunk of `CHUNK_COLUMNS` columns, the chunks counted from
column 0 of the whole vector. A shard that starts at a multiple of the chunk computes the
partials of its chunks exactly as the whole would, and `math.fsum` combines any list of
them into the same correctly rounded sum whatever order or grouping they come in: the
norm of a sharded vector is the norm of the whole, bit for bit. No partial goes through
BLAS (whose dot product differs between builds and machines): each is NumPy's pairwise
sum of the chunk's squares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .results import FloatArray
from .stable import scaled_sum_of_squares

__all__ = [
    "CHUNK_COLUMNS",
    "chunk_partials",
    "chunked_norm",
    "norm_of_partials",
    "single_chunk_norm",
]

# The columns of one partial; a shard's first column is a multiple of it.
CHUNK_COLUMNS = 65_536
# Added to the exponent of every partial when their plain fsum would overflow: with at
# most 2**40 partials below 2**1024 each, the scaled sum stays below float64's largest.
_OVERFLOW_SHIFT = 64


# Squares that overflow are found and scaled, not warned about.
@np.errstate(over="ignore", invalid="ignore")
def chunk_partials(values: FloatArray) -> FloatArray:
    """One ``(s, q)`` row per chunk of `values`: the chunk's sum of squares is ``s**2 * q``.

    Parameters
    ----------
    values : ndarray of float64, shape (n,)
        Columns ``[offset, offset + n)`` of a vector, `offset` a multiple of
        `CHUNK_COLUMNS`; the last chunk may be short.

    Returns
    -------
    ndarray of float64, shape (ceil(n / CHUNK_COLUMNS), 2)
        ``s`` is 1, or a power of two when the chunk's squares would overflow or
        underflow (see `app.core.stable.scaled_sum_of_squares`); 0 for a chunk of zeros,
        inf or NaN for one that holds an infinity or a NaN.

    Examples
    --------
    >>> chunk_partials(np.array([3.0, 4.0]))
    array([[ 1., 25.]])
    """
    rows = [
        scaled_sum_of_squares(values[start : start + CHUNK_COLUMNS])
        for start in range(0, values.size, CHUNK_COLUMNS)
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def norm_of_partials(partials: Iterable[FloatArray] | FloatArray) -> float:
    """The Euclidean norm whose chunks have these partials, in any order or grouping.

    Parameters
    ----------
    partials : ndarray of shape (k, 2), or an iterable of such arrays
        Rows of `chunk_partials`, of one vector's chunks, each chunk once.

    Returns
    -------
    float
        ``S * sqrt(fsum(q_k * (s_k / S)**2))`` with ``S`` the largest ``s_k`` of a
        non-zero chunk: every term is exact but for its one rounding to float64 (a
        scaling by a power of two), and fsum rounds their sum once. 0 for no chunk or
        chunks of zeros; NaN if a chunk holds a NaN, else inf if one holds an infinity.

    Examples
    --------
    >>> norm_of_partials(np.array([[1.0, 9.0], [1.0, 16.0]]))
    5.0
    """
    rows = partials if isinstance(partials, np.ndarray) else np.concatenate(list(partials))
    rows = rows.reshape(-1, 2)
    if rows.shape[0] == 1:
        return _norm_of_one(*(float(x) for x in rows[0]))
    scales, sums = rows[:, 0], rows[:, 1]
    if np.isnan(scales).any():
        return math.nan
    if np.isinf(scales).any():
        return math.inf
    nonzero = sums != 0
    if not nonzero.any():
        return 0.0
    largest = float(scales[nonzero].max())
    ratios = scales[nonzero] / largest
    terms = (sums[nonzero] * (ratios * ratios)).tolist()
    try:
        total = math.fsum(terms)
    except OverflowError:
        total = math.inf
    if math.isinf(total):
        total = math.fsum(math.ldexp(term, -_OVERFLOW_SHIFT) for term in terms)
        largest = math.ldexp(largest, _OVERFLOW_SHIFT // 2)
    return largest * math.sqrt(total)


def single_chunk_norm(values: FloatArray) -> float:
    """`chunked_norm` of at most `CHUNK_COLUMNS` values, without the array of partials.

    Runs under the caller's ``np.errstate(over="ignore", invalid="ignore")``, as the
    functions of `app.core.stable` do.

    >>> single_chunk_norm(np.array([3.0, 4.0]))
    5.0
    """
    return _norm_of_one(*scaled_sum_of_squares(values))


def _norm_of_one(s: float, q: float) -> float:
    # One chunk (every small update): what the general case of `norm_of_partials` gives.
    if math.isnan(s) or math.isinf(s):
        return s
    return s * math.sqrt(q) if q else 0.0


def chunked_norm(values: FloatArray) -> float:
    """``norm_of_partials(chunk_partials(values))``: the norm of a whole vector, by chunks.

    >>> chunked_norm(np.array([3.0, 4.0]))
    5.0
    """
    return norm_of_partials(chunk_partials(values))
