"""The weighted sum of rows, computed the same way for every column whatever slice it is in.

BLAS's matrix-vector product is not split-invariant: how it blocks and vectorises the
sum depends on the shape and the machine, so the columns ``[a, b)`` of ``v @ M`` and
``v @ M[:, a:b]`` can differ in their last bits. Here every column is the rows
accumulated in order, with NumPy ufuncs that round each product and each sum once per
entry, so a column's value depends on that column alone: a shard of the columns gets
exactly the columns of the whole.
"""

from __future__ import annotations

import numpy as np

from .results import FloatArray

__all__ = ["SMALL_ELEMENTS", "TILE_COLUMNS", "weighted_row_sum"]

# Columns taken at a time: the running sum and one row's products (2 x 256 KiB) stay in a
# core's L2 cache while the B rows pass over them; `python -m benchmarks.kernel` compares
# other widths. The result does not depend on it.
TILE_COLUMNS = 32_768
# Up to this many entries all products are formed by one call and the rows added in place:
# half the ufunc calls of the tiled loop, whose per-call cost is most of a small update's.
# The same products and the same sums in the same order, so the same bits.
SMALL_ELEMENTS = 16_384


def weighted_row_sum(weights: FloatArray, matrix: FloatArray) -> FloatArray:
    """``sum_i weights[i] * matrix[i]``, row by row in order, for each column alone.

    Parameters
    ----------
    weights : ndarray of float64, shape (B,)
        One weight per row, B >= 1.
    matrix : ndarray of float64, shape (B, N)
        The rows.

    Returns
    -------
    ndarray of float64, shape (N,)
        Column j is ``((w0 * m[0, j] + w1 * m[1, j]) + w2 * m[2, j]) + ...``, each product
        and each sum rounded once, so that ``weighted_row_sum(w, m)[a:b]`` equals
        ``weighted_row_sum(w, m[:, a:b])`` bit for bit, on every machine.

    Notes
    -----
    Columns are taken `TILE_COLUMNS` at a time, so the only temporaries are one tile's
    products and running sums, whatever N; a matrix of at most `SMALL_ELEMENTS` entries is
    multiplied in one call first. ``weights @ matrix`` (one BLAS call) does the
    same arithmetic in about half the time, in an order of its own.

    Examples
    --------
    >>> weighted_row_sum(np.array([1.0, 2.0]), np.array([[1.0, 0.5], [3.0, -1.0]]))
    array([ 7. , -1.5])
    """
    rows, columns = matrix.shape
    if rows * columns <= SMALL_ELEMENTS:
        products: FloatArray = matrix * weights[:, None]
        total: FloatArray = products[0].copy()
        for row in products[1:]:
            np.add(total, row, out=total)
        return total
    coefficients = weights.tolist()
    first, rest = coefficients[0], coefficients[1:]
    result = np.empty(columns)
    scratch = np.empty(min(columns, TILE_COLUMNS))
    multiply, add = np.multiply, np.add
    for start in range(0, columns, TILE_COLUMNS):
        stop = min(start + TILE_COLUMNS, columns)
        tile = matrix[:, start:stop]
        total = result[start:stop]
        products = scratch[: stop - start]
        multiply(tile[0], first, out=total)
        for row, coefficient in zip(tile[1:rows], rest, strict=True):
            multiply(row, coefficient, out=products)
            add(total, products, out=total)
    return result
