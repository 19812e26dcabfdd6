"""Combining the norm partials of a sharded update's blocks into the norms of the whole.

The service answers each block's partials, one ``(s, q)`` row per chunk of columns (the
chunk's sum of squares is ``s**2 * q``); this is the service's ``norm_of_partials``
(app/core/norms.py) for a client that does not install the service:
``tests/client/test_sharded.py`` checks the two agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["norm_of_partials"]

# As the service's: shift the terms when their plain fsum overflows.
_OVERFLOW_SHIFT = 64


def norm_of_partials(partials: Sequence[NDArray[Any]]) -> float:
    """``S * sqrt(fsum(q_k * (s_k / S)**2))``, ``S`` the largest ``s_k`` of a non-zero chunk."""
    rows = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in partials])
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
