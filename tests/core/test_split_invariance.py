"""The gradient kernel and the chunked norms: a slice of columns gets the whole's bits."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from app.core import kernel
from app.core.kernel import SMALL_ELEMENTS, TILE_COLUMNS, weighted_row_sum
from app.core.norms import CHUNK_COLUMNS, chunk_partials, chunked_norm, norm_of_partials


def _rows_in_order(weights: np.ndarray, matrix: np.ndarray, column: int) -> float:
    """One column by Python floats: each product and each sum rounded once, rows in order."""
    total = float(weights[0]) * float(matrix[0, column])
    for w, value in zip(weights[1:].tolist(), matrix[1:, column].tolist(), strict=True):
        total = total + w * value
    return total


def _exact_norm(values: np.ndarray) -> float:
    """sqrt(sum of squares), from the exact rational sum, rounded once (isqrt, 1600 bits)."""
    mantissas, exponents = np.frexp(values)
    total = Fraction(0)
    for m, e in zip(mantissas.tolist(), exponents.tolist(), strict=True):
        if m:
            integer = int(m * 2**53)
            total += Fraction(integer * integer) * Fraction(2) ** (2 * (e - 53))
    if total == 0:
        return 0.0
    bits = 1600
    root = math.isqrt(total.numerator * 4**bits // total.denominator)
    return float(Fraction(root, 2**bits))


@pytest.mark.parametrize(
    ("rows", "columns"),
    [
        (1, 1),
        (3, 7),
        (5, TILE_COLUMNS - 1),
        (4, TILE_COLUMNS),
        (3, TILE_COLUMNS + 1),
        (2, 2 * TILE_COLUMNS + 3),
        (17, 1000),
        (8, SMALL_ELEMENTS // 8),
        (8, SMALL_ELEMENTS // 8 + 1),
        (SMALL_ELEMENTS + 1, 1),
    ],
)
def test_any_column_slice_of_the_kernel_is_that_slice_of_the_whole(rows: int, columns: int) -> None:
    rng = np.random.default_rng(rows * 1000 + columns)
    # Magnitudes spread over many binades, so that the order of the sums shows.
    matrix = rng.standard_normal((rows, columns)) * 10.0 ** rng.integers(-8, 9, (rows, columns))
    weights = rng.standard_normal(rows) * 10.0 ** rng.integers(-3, 4, rows)
    whole = weighted_row_sum(weights, matrix)
    cuts = {0, columns, *rng.integers(0, columns + 1, 6).tolist()}
    cuts |= {c for c in (TILE_COLUMNS - 1, TILE_COLUMNS, TILE_COLUMNS + 1) if c <= columns}
    edges = sorted(cuts)
    for start, stop in itertools.pairwise(edges):
        part = weighted_row_sum(weights, matrix[:, start:stop])
        assert part.tobytes() == whole[start:stop].tobytes(), (start, stop)
    for column in {0, columns - 1, *rng.integers(0, columns, 3).tolist()}:
        assert whole[column] == _rows_in_order(weights, matrix, column)


def test_a_single_column_and_a_transposed_copy_get_the_same_bits() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((40, 9)) * 10.0 ** rng.integers(-12, 12, (40, 9))
    weights = rng.standard_normal(40)
    whole = weighted_row_sum(weights, matrix)
    fortran = weighted_row_sum(weights, np.asfortranarray(matrix))
    assert fortran.tobytes() == whole.tobytes()
    for j in range(9):
        assert weighted_row_sum(weights, matrix[:, j : j + 1])[0] == whole[j]


def _spread(rng: np.random.Generator, shape: tuple[int, ...], binades: int) -> np.ndarray:
    return rng.standard_normal(shape) * 10.0 ** rng.integers(-binades, binades + 1, shape)


def test_this_numpy_s_einsum_folds_the_rows_in_order() -> None:
    # Not a property of the code but of the NumPy it runs on: a build whose einsum fuses
    # or reorders its sums would still be right, through the ufunc fold, only slower.
    assert kernel.EINSUM_FOLDS_ROWS


@pytest.mark.parametrize(
    "zeros",
    ["none", "one column", "a sum of -0.0 products", "many columns", "all"],
)
def test_einsum_s_fold_and_the_ufunc_fold_agree_bit_for_bit(zeros: str) -> None:
    rng = np.random.default_rng(len(zeros))
    for _ in range(60):
        rows, columns = int(rng.integers(1, 70)), int(rng.integers(2, 400))
        weights = _spread(rng, (rows,), 4)
        full = _spread(rng, (rows, columns + 5), 9)
        matrix = full[:, 2 : 2 + columns]  # rows apart, as a shard's columns are
        picked = {
            "none": [],
            "one column": [columns // 2],
            "a sum of -0.0 products": [0, columns - 1],
            "many columns": rng.choice(columns, columns // 2 + 1, replace=False).tolist(),
            "all": list(range(columns)),
        }[zeros]
        matrix[:, picked] = 0.0
        if zeros == "a sum of -0.0 products":
            matrix[:, picked] = np.copysign(0.0, -weights)[:, None]
        by_einsum = kernel._einsum_fold(weights, matrix)
        by_ufuncs = kernel._ufunc_fold(weights, matrix)
        assert by_einsum.tobytes() == by_ufuncs.tobytes(), (rows, columns)
        for column in {0, columns - 1, *picked[:3]}:
            expected = _rows_in_order(weights, matrix, column)
            assert math.copysign(1.0, by_einsum[column]) == math.copysign(1.0, expected)
            assert by_einsum[column] == expected


@pytest.mark.parametrize(
    "fold",
    ["BLAS's gemv", "the rows in reverse", "products not rounded"],
)
def test_the_probe_turns_down_an_einsum_that_fuses_or_reorders(
    fold: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def gemv(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(weights @ matrix)

    def reversed_rows(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return kernel._ufunc_fold(weights[::-1], np.ascontiguousarray(matrix[::-1]))

    def unrounded_products(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        # Each product kept in extended precision until it is added: a fused multiply-add.
        total = np.zeros(matrix.shape[1])
        for weight, row in zip(weights.tolist(), matrix, strict=True):
            wide = np.longdouble(weight) * row.astype(np.longdouble)
            total = (total.astype(np.longdouble) + wide).astype(np.float64)
        return total

    chosen = {
        "BLAS's gemv": gemv,
        "the rows in reverse": reversed_rows,
        "products not rounded": unrounded_products,
    }[fold]
    monkeypatch.setattr(
        np, "einsum", lambda subscripts, weights, matrix, optimize: chosen(weights, matrix)
    )
    assert not kernel._einsum_probe()


def test_einsum_s_fold_of_unaligned_rows_is_the_ufunc_fold() -> None:
    # A safetensors body's arrays are views at any byte offset of the body.
    rng = np.random.default_rng(8)
    for offset in range(1, 8):
        rows, columns = int(rng.integers(1, 30)), int(rng.integers(2, 300))
        buffer = bytearray(8 * rows * columns + 8)
        matrix = np.frombuffer(buffer, np.float64, rows * columns, offset).reshape(rows, columns)
        assert not matrix.flags.aligned
        np.frombuffer(buffer, np.uint8)[offset : offset + matrix.nbytes] = np.frombuffer(
            _spread(rng, (rows, columns), 9).tobytes(), np.uint8
        )
        weights = _spread(rng, (rows,), 4)
        expected = kernel._ufunc_fold(weights, np.ascontiguousarray(matrix))
        assert weighted_row_sum(weights, matrix).tobytes() == expected.tobytes()


def test_einsum_takes_only_rows_of_contiguous_entries_and_two_columns_or_more() -> None:
    matrix = np.ones((4, 6))
    assert kernel._rows_contiguous(matrix)
    assert kernel._rows_contiguous(np.ones((4, 9))[:, 2:8])
    assert not kernel._rows_contiguous(matrix[:, :1])  # one column: einsum takes a dot
    assert not kernel._rows_contiguous(np.asfortranarray(matrix))
    assert not kernel._rows_contiguous(matrix[:, ::2])
    assert not kernel._rows_contiguous(np.broadcast_to(np.ones(6), (4, 6)))


@pytest.mark.parametrize(
    "scale", [1.0, 1e-160, 1e-310, 1e150, 1e300], ids=["unit", "tiny", "subnormal", "big", "huge"]
)
def test_the_chunked_norm_is_the_exact_norm_correctly_rounded_or_nearly(scale: float) -> None:
    rng = np.random.default_rng(int(-math.log10(scale) + 400))
    values = rng.standard_normal(2 * CHUNK_COLUMNS + 5) * scale
    reference = _exact_norm(values)
    norm = chunked_norm(values)
    # Each square and each chunk's pairwise sum round; fsum adds the partials exactly.
    assert norm == pytest.approx(reference, rel=4e-15, abs=0)


def test_chunks_of_very_different_sizes_and_an_overflowing_total() -> None:
    values = np.zeros(3 * CHUNK_COLUMNS + 1)
    values[:10] = 1e-300  # a chunk whose squares underflow
    values[CHUNK_COLUMNS : CHUNK_COLUMNS + 3] = [6e307, -8e307, 1e307]  # squares overflow
    values[2 * CHUNK_COLUMNS] = 1.0
    values[-1] = 1e307
    assert chunked_norm(values) == pytest.approx(_exact_norm(values), rel=4e-16)
    # Several chunks each below float64's largest, their sum of squares far beyond it.
    big = np.full(3 * CHUNK_COLUMNS, 3.9e151)
    assert chunked_norm(big) == pytest.approx(_exact_norm(big), rel=4e-16)
    assert math.isinf(chunked_norm(np.array([1.0, math.inf])))
    assert math.isnan(chunked_norm(np.array([math.inf, math.nan])))
    assert chunked_norm(np.zeros(5)) == 0.0


def test_partials_of_blocks_are_those_of_the_whole_in_any_order() -> None:
    rng = np.random.default_rng(11)
    values = rng.standard_normal(7 * CHUNK_COLUMNS + 123) * 10.0 ** rng.integers(-5, 5)
    whole = chunk_partials(values)
    assert whole.shape == (8, 2)
    blocks = [values[i : i + 2 * CHUNK_COLUMNS] for i in range(0, values.size, 2 * CHUNK_COLUMNS)]
    parts = [chunk_partials(block) for block in blocks]
    assert np.concatenate(parts).tobytes() == whole.tobytes()
    assert norm_of_partials(parts[::-1]) == norm_of_partials(whole) == chunked_norm(values)
    # One chunk: exactly the single-chunk norm sqrt(sum of squares).
    small = values[:100]
    assert chunked_norm(small) == math.sqrt(float(np.add.reduce(small * small)))


@pytest.mark.parametrize("scale", [1.0, 1e-160, 1e-310, 1e150, 1e300, 0.0])
def test_one_chunk_takes_the_general_combination_s_value(scale: float) -> None:
    rng = np.random.default_rng(abs(int(math.log10(scale))) if scale else 7)
    zero_chunk = np.array([[1.0, 0.0]])  # adds nothing, and takes the general combination
    vectors = [rng.standard_normal(int(rng.integers(1, 200))) * scale for _ in range(100)]
    vectors += [np.array([np.inf, 1.0]), np.array([-np.inf]), np.array([np.nan, 2.0])]
    for values in vectors:
        partials = chunk_partials(values)
        alone = norm_of_partials(partials)
        general = norm_of_partials(np.vstack([partials, zero_chunk]))
        assert alone == general or (math.isnan(alone) and math.isnan(general))
        if np.isfinite(values).all():
            assert alone == _exact_norm(values) or abs(alone - _exact_norm(values)) <= 2 * math.ulp(
                alone
            )
