"""The optional algorithm settings of an update, and the checks every caller goes through."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from .results import Loc

__all__ = [
    "BASELINES",
    "GRPO_SCALES",
    "KL_ESTIMATORS",
    "KL_ESTIMATOR_ALIASES",
    "Baseline",
    "Groups",
    "GrpoScale",
    "KlEstimator",
    "KlEstimatorName",
    "UpdateOptions",
    "group_id_problems",
    "option_problems",
]

# The allowed values of each option, declared once: the core checks them, the request
# schema types its fields with them.
KlEstimatorName = Literal["k1", "k2", "k3", "abs"]
# verl's names for the same estimators are accepted too.
KlEstimator = Literal[KlEstimatorName, "kl", "mse", "low_var_kl"]
Baseline = Literal["none", "mean", "rloo", "grpo"]
GrpoScale = Literal["std", "none"]

KL_ESTIMATOR_ALIASES: Mapping[str, KlEstimatorName] = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
KL_ESTIMATORS: tuple[str, ...] = get_args(KlEstimatorName) + tuple(KL_ESTIMATOR_ALIASES)
_CANONICAL: Mapping[str, KlEstimatorName] = {
    **{name: name for name in get_args(KlEstimatorName)},
    **KL_ESTIMATOR_ALIASES,
}
BASELINES: tuple[str, ...] = get_args(Baseline)
GRPO_SCALES: tuple[str, ...] = get_args(GrpoScale)
# Options that take a number which must be finite and > 0 when given.
POSITIVE_OPTIONS = ("kl_clamp", "reward_clip", "max_grad_norm", "target_kl", "kl_horizon")


@dataclass(frozen=True, slots=True, eq=False)
class UpdateOptions:
    """How to turn rewards into advantages and the gradient into a step.

    The defaults give the plain update: k1 KL in the reward, no baseline, no clipping.
    `kl_estimator` accepts verl's aliases ("kl", "mse", "low_var_kl") as well.
    """

    kl_estimator: KlEstimator = "k1"
    kl_clamp: float | None = None
    reward_clip: float | None = None
    group_ids: Sequence[int] | NDArray[np.integer] | None = None
    baseline: Baseline = "none"
    grpo_scale: GrpoScale = "std"
    normalize_advantages: bool = False
    max_grad_norm: float | None = None
    target_kl: float | None = None
    kl_horizon: float | None = None

    @property
    def estimator(self) -> KlEstimatorName:
        """The canonical estimator name: "k1", "k2", "k3" or "abs"."""
        return _CANONICAL[self.kl_estimator]


@dataclass(frozen=True, slots=True)
class Groups:
    """Which group each sample belongs to: `index[i]` in ``range(len(sizes))``."""

    index: NDArray[np.intp]
    sizes: NDArray[np.float64]
    # The group id of each group, as the caller sent it; and its first sample.
    ids: NDArray[np.integer]
    first: NDArray[np.intp]

    @classmethod
    def whole_batch(cls, batch_size: int) -> Groups:
        """Every sample in one group (no `group_ids` given)."""
        return cls(
            index=np.zeros(batch_size, dtype=np.intp),
            sizes=np.array([batch_size], dtype=np.float64),
            ids=np.zeros(1, dtype=np.int64),
            first=np.zeros(1, dtype=np.intp),
        )

    @classmethod
    def from_ids(cls, ids: NDArray[np.integer]) -> Groups:
        """Group the samples by equal id."""
        unique, first, index, counts = np.unique(
            ids, return_index=True, return_inverse=True, return_counts=True
        )
        return cls(
            index=index.reshape(-1).astype(np.intp, copy=False),
            sizes=counts.astype(np.float64),
            ids=unique,
            first=first.astype(np.intp, copy=False),
        )


def option_problems(options: UpdateOptions) -> list[tuple[str, str]]:
    """(option name, message) for every option outside its domain; shapes are checked later."""
    problems: list[tuple[str, str]] = []
    for name, allowed in (
        ("kl_estimator", KL_ESTIMATORS),
        ("baseline", BASELINES),
        ("grpo_scale", GRPO_SCALES),
    ):
        value = getattr(options, name)
        if value not in allowed:
            problems.append((name, f"{name} is {value!r}; expected one of {_listed(allowed)}"))
    if not isinstance(options.normalize_advantages, bool | np.bool_):
        msg = f"normalize_advantages is {options.normalize_advantages!r}; expected true or false"
        problems.append(("normalize_advantages", msg))
    for name in POSITIVE_OPTIONS:
        value = getattr(options, name)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            problems.append((name, f"{name} is {value!r}; expected a finite number > 0"))
    for given, missing in (("target_kl", "kl_horizon"), ("kl_horizon", "target_kl")):
        if getattr(options, given) is not None and getattr(options, missing) is None:
            msg = f"{given} is set but {missing} is not; adaptive KL needs both"
            problems.append((missing, msg))
    return problems


def group_id_problems(
    group_ids: Sequence[int] | NDArray[np.integer], batch_size: int
) -> tuple[NDArray[np.integer] | None, list[tuple[Loc, str]]]:
    """Convert `group_ids` to an integer array of length B, or say what is wrong with it."""
    expected = f"expected {batch_size} integers (= len(rewards))"
    try:
        ids = np.asarray(group_ids)
    except (TypeError, ValueError, OverflowError) as exc:
        return None, [
            (("group_ids",), f"group_ids is not an array of integers ({exc}); {expected}")
        ]
    if ids.ndim == 1 and ids.size == 0:
        # Checked before the dtype: NumPy gives an empty list the dtype float64.
        return None, [(("group_ids",), f"group_ids is empty; {expected}")]
    if ids.dtype.kind not in "iu":
        what = "integers beyond int64" if ids.dtype.kind == "O" else f"{ids.dtype} values"
        return None, [(("group_ids",), f"group_ids holds {what}; {expected}")]
    if ids.dtype == np.uint64 and ids.size and int(ids.max()) > np.iinfo(np.int64).max:
        # A binary body's U64 tensor: held to the same int64 range as JSON's integers.
        return None, [(("group_ids",), f"group_ids holds integers beyond int64; {expected}")]
    if ids.ndim != 1:
        return None, [(("group_ids",), f"group_ids is {ids.ndim}-D; {expected}")]
    if ids.shape[0] != batch_size:
        return None, [(("group_ids",), f"group_ids has {ids.shape[0]} entries; {expected}")]
    return ids, []


def _listed(values: Sequence[str]) -> str:
    return ", ".join(repr(value) for value in values)
