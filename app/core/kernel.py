"""The weighted sum of rows, computed the same way for every column whatever slice it is in.

BLAS's matrix-vector product is not split-invariant: how it blocks and vectorises the
sum depends on the shape and the machine, so the columns ``[a, b)`` of ``v @ M`` and
``v @ M[:, a:b]`` can differ in their last bits. Here every column is the rows
accumulated in order, each product and each sum rounded once per entry, so a column's
value depends on that column alone: a shard of the columns gets exactly the columns of
the whole.

Two ways compute that fold. `np.einsum` (``"i,ij->j"``, without its BLAS-based
optimisation) does it in one pass with no temporary, where its inner loop runs along a
row, adding one scaled row into the running sums: rows whose entries are contiguous, at
least two columns. Its sums start from +0.0 rather than from the first product, which only
a column whose products are all -0.0 tells apart (the fold gives -0.0): those columns are
taken from the ufunc fold. Whether this NumPy build's einsum adds without a fused
multiply-add and in row order is checked once, at import, on a probe whose every column
would show either; a build that fails it, and every other layout, takes the ufunc fold:
one `np.multiply` and one `np.add` per row and tile of columns.
"""

from __future__ import annotations

import numpy as np

from .results import FloatArray

__all__ = ["EINSUM_FOLDS_ROWS", "SMALL_ELEMENTS", "TILE_COLUMNS", "weighted_row_sum"]

# The ufunc fold's columns taken at a time: the running sum and one row's products
# (2 x 256 KiB) stay in a core's L2 cache while the B rows pass over them;
# `python -m benchmarks.kernel` compares other widths. The result does not depend on it.
TILE_COLUMNS = 32_768
# Up to this many entries the ufunc fold forms all products by one call and adds the rows
# in place: half the calls of the tiled loop. The same products and sums in the same
# order, so the same bits. Zero columns of einsum's result are gathered up to this many
# entries too, and taken from the fold of the whole matrix beyond.
SMALL_ELEMENTS = 16_384
_EINSUM_SUBSCRIPTS = "i,ij->j"


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
    By `np.einsum` when `EINSUM_FOLDS_ROWS` and the rows are contiguous with at least two
    columns (about twice BLAS's time, where the ufunc fold takes four to five), by the
    ufunc fold otherwise; the same bits either way.

    Examples
    --------
    >>> weighted_row_sum(np.array([1.0, 2.0]), np.array([[1.0, 0.5], [3.0, -1.0]]))
    array([ 7. , -1.5])
    """
    if EINSUM_FOLDS_ROWS and _rows_contiguous(matrix):
        return _einsum_fold(weights, matrix)
    return _ufunc_fold(weights, matrix)


def _rows_contiguous(matrix: FloatArray) -> bool:
    """Whether einsum's inner loop runs along the rows: contiguous entries, rows apart."""
    columns = matrix.shape[1]
    row_stride, entry_stride = matrix.strides
    return columns >= 2 and entry_stride == matrix.itemsize and row_stride >= columns * entry_stride


def _einsum_fold(weights: FloatArray, matrix: FloatArray) -> FloatArray:
    total: FloatArray = np.einsum(_EINSUM_SUBSCRIPTS, weights, matrix, optimize=False)
    zero = total == 0.0
    zeros = np.count_nonzero(zero)
    if zeros:
        # Only these may differ from the fold, which keeps a sum of -0.0 products -0.0.
        if zeros * matrix.shape[0] <= SMALL_ELEMENTS:
            columns = np.flatnonzero(zero)
            total[columns] = _ufunc_fold(weights, matrix[:, columns])
        else:
            np.copyto(total, _ufunc_fold(weights, matrix), where=zero)
    return total


def _ufunc_fold(weights: FloatArray, matrix: FloatArray) -> FloatArray:
    """The fold by ufuncs, tile by tile: any layout, any NumPy build."""
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


def _einsum_probe() -> bool:
    """Whether einsum's fold is the ufunc fold, bit for bit, on shapes that would show it.

    Magnitudes spread over many binades make a fused multiply-add, or sums taken in
    another order (as a dot product's lanes take them), change the last bits of nearly
    every column; a few columns of zeros check the signs einsum's sums start from.
    """
    rng = np.random.default_rng(20_261_202)
    for rows, columns in ((1, 2), (2, 3), (3, 8), (9, 17), (40, 67), (300, 5)):
        weights = rng.standard_normal(rows) * 10.0 ** rng.integers(-6, 7, rows)
        matrix = rng.standard_normal((rows, columns + 3)) * 10.0 ** rng.integers(
            -12, 13, (rows, columns + 3)
        )
        matrix[:, 1] = 0.0  # products of both signs, a sum of +0.0
        matrix[:, 2] = np.copysign(0.0, -weights)  # products all -0.0, and so the sum
        for block in (matrix[:, :columns], matrix[:, 3:]):
            expected = _ufunc_fold(weights, np.ascontiguousarray(block))
            if _einsum_fold(weights, block).tobytes() != expected.tobytes():
                return False
    return True


# Whether `weighted_row_sum` may take einsum's one pass (see the module's docstring).
EINSUM_FOLDS_ROWS = _einsum_probe()
