"""`python -m benchmarks.kernel`: the gradient kernel's cost against BLAS's gemv, in process.

For the shapes of `make bench`, best of several runs each (the same matrix each run, so
what fits stays in the cache): ``coefficient @ grads`` (one BLAS call, not split-invariant)
against `app.core.kernel.weighted_row_sum` (einsum's one pass, when this NumPy's einsum
folds the rows in order) and against its ufunc fold at several tile widths (what any
other layout or build takes), and the chunked norm of the gradient against BLAS's dot.
Ratios, not times: the machine is shared, so compare within a row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.core import kernel
from app.core.norms import chunked_norm

SHAPES = [(8, 64), (64, 1024), (64, 16384), (256, 65536), (4, 1_000_000)]
TILES = (4096, 8192, 16384, 32768)


def best(rounds: int, run: Callable[..., Any], *args: Any) -> float:
    """The fastest of `rounds` runs of ``run(*args)``, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def _dot_norm(values: np.ndarray) -> float:
    return math.sqrt(float(values @ values))


def main() -> None:
    rng = np.random.default_rng(0)
    chosen = kernel.TILE_COLUMNS
    print(f"einsum folds the rows in order: {kernel.EINSUM_FOLDS_ROWS}")
    print(
        "B x N          gemv ms     kernel  "
        + "  ".join(f"tile {t:>5}" for t in TILES)
        + "   norm/dot"
    )
    for b, n in SHAPES:
        grads = rng.standard_normal((b, n))
        coefficient = rng.standard_normal(b)
        rounds = max(10, min(200, 4_000_000 // (b * n)))
        gemv = best(rounds, np.matmul, coefficient, grads)
        ratios = [best(rounds, kernel.weighted_row_sum, coefficient, grads) / gemv]
        for tile in TILES:
            kernel.TILE_COLUMNS = tile
            ratios.append(best(rounds, kernel._ufunc_fold, coefficient, grads) / gemv)
        kernel.TILE_COLUMNS = chosen
        grad = coefficient @ grads
        dot = best(rounds, _dot_norm, grad)
        norm = best(rounds, chunked_norm, grad)
        cells = "  ".join(f"{r:9.2f}x" for r in ratios)
        print(f"{b:>4} x {n:<8} {gemv * 1e3:8.3f}  {cells}   {norm / dot:6.2f}x")


if __name__ == "__main__":
    main()
