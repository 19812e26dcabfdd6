"""Finding the first value that is not finite, and naming it in an error.

Overflow is looked for explicitly and reported with its index, instead of being warned
about: callers run under ``np.errstate(over="ignore", invalid="ignore")``.
"""

from __future__ import annotations

import math

import numpy as np

from .results import AnyFloatArray, InputProblem, UpdateOverflowError, UpdateStats

__all__ = [
    "finite_or_nan",
    "first_non_finite",
    "require_finite",
    "require_finite_stats",
]


def finite_or_nan(value: object) -> float:
    """`value` as a finite float, NaN when it is not one (so that every comparison fails)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number if math.isfinite(number) else math.nan


_DESCRIPTIONS = {
    "kl": "the KL estimate policy_log_probs[{i}] - ref_log_probs[{i}]",
    "adjusted": "the adjusted reward rewards[{i}] - beta * kl[{i}]",
    "advantage": "the advantage of sample {i}",
    "coefficient": "the gradient coefficient of sample {i} (policy loss, TIS and KL loss)",
    "grad": "the policy gradient grad[{i}]",
    "new_weights": "the updated weight weights[{i}] + lr * grad[{i}]",
    "stepped_weights": (
        "the optimizer's new weight weights[{i}] (with eps 0, a gradient entry that was 0 at "
        "every step gives 0 / 0)"
    ),
}


def first_non_finite(array: AnyFloatArray) -> tuple[int, ...] | None:
    """Index of the first NaN or infinity in `array`, or None.

    A finite sum proves every entry finite without a boolean temporary of the array's
    size; only when it is not (a non-finite entry, or a finite sum that overflowed) look.
    """
    if math.isfinite(array.sum()):
        return None
    bad = np.argwhere(~np.isfinite(array))
    return tuple(int(i) for i in bad[0]) if bad.size else None


def require_finite(estimator: str = "k1", *, offset: int = 0, **quantities: AnyFloatArray) -> None:
    """Raise `UpdateOverflowError` naming the first entry of a quantity that is not finite.

    The keywords are quantities of `_DESCRIPTIONS`, looked at in the order given;
    `estimator` words a KL estimate. `offset` is added to the index named: a block of
    columns names its entries by their index in the whole vector.
    """
    for name, values in quantities.items():
        index = first_non_finite(values)
        if index is not None:
            i = offset + index[0]
            # Other quantities (the optimizer's new state) are named as they are.
            what = _DESCRIPTIONS.get(name, f"the new {name}[{{i}}]").format(i=i)
            if name == "kl" and estimator != "k1":
                what = f"the {estimator} KL estimate of sample {i}"
            msg = f"{what} overflows float64 ({values[index]}); scale down the inputs or lr"
            raise UpdateOverflowError([InputProblem((name, i), msg)])


def require_finite_stats(stats: UpdateStats) -> None:
    """Raise `UpdateOverflowError` naming the first statistic that is not finite.

    The statistics of the policy loss and of TIS (`stats.ratio`, `stats.tis`) are named
    as the wire shows them, without the group: ``stats.ratio_max``.
    """
    values = [(name, getattr(stats, name)) for name in UpdateStats.__slots__]
    for group in (stats.ratio, stats.tis):
        if group is not None:
            values += [(name, getattr(group, name)) for name in type(group).__slots__]
    for name, value in values:
        if isinstance(value, float) and not math.isfinite(value):
            msg = f"stats.{name} overflows float64 ({value}); scale down the inputs or lr"
            raise UpdateOverflowError([InputProblem(("stats", name), msg)])
