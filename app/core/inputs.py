"""The one set of rules an update's inputs must follow, whatever wire format they came in."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .optimizers import StateVector, optimizer_problems, state_problems
from .options import (
    FLOAT_SAMPLE_OPTIONS,
    Groups,
    UpdateOptions,
    group_id_problems,
    option_problems,
    per_token_message,
    sequence_length_problems,
)
from .overflow import first_non_finite
from .results import (
    MAX_LISTED_PROBLEMS,
    FloatArray,
    InputProblem,
    InvalidInputError,
    Loc,
    format_loc,
)

__all__ = [
    "ARRAY_SHAPES",
    "LOG_PROB_ARRAYS",
    "CheckedInputs",
    "CheckedStep",
    "check_inputs",
    "check_step_inputs",
    "shape_text",
]

# The expected shape of each array argument, in the order of the signature.
ARRAY_SHAPES: Mapping[str, tuple[str, ...]] = {
    "weights": ("N",),
    "rewards": ("B",),
    "policy_log_probs": ("B",),
    "ref_log_probs": ("B",),
    "log_prob_grads": ("B", "N"),
}
# The optional float arrays, one value per sample, that the options carry.
_SHAPES: Mapping[str, tuple[str, ...]] = {
    **ARRAY_SHAPES,
    "grad": ("N",),
    **dict.fromkeys(FLOAT_SAMPLE_OPTIONS, ("B",)),
}
# The arrays of sequence log-probs: 2-D ones would be per-token log-probs.
LOG_PROB_ARRAYS = ("policy_log_probs", "ref_log_probs", *FLOAT_SAMPLE_OPTIONS)


@dataclass(frozen=True, slots=True)
class CheckedInputs:
    """The inputs as float64 arrays and floats, every rule checked.

    Except, when `check_inputs` was asked to defer it, that the arrays named in
    `unchecked` are finite: `require_finite` checks that.
    """

    arrays: dict[str, FloatArray]  # the five arrays, and those of the options sent
    beta: float
    lr: float
    groups: Groups | None  # None without a baseline
    lengths: FloatArray | None  # `sequence_lengths` as floats, when sent
    state: dict[StateVector, FloatArray]  # the optimizer state's vectors sent, float64
    unchecked: tuple[str, ...] = ()  # arrays not yet known to be finite
    column_offset: int = 0  # the block's first column in the whole (its problems name those)

    def require_finite(self) -> None:
        """Raise the `InvalidInputError` `check_inputs` would have raised for `unchecked`.

        Raises
        ------
        InvalidInputError
            Naming the first value that is not finite of each array in `unchecked`.
        """
        problems = _non_finite_problems(self.arrays, self.column_offset, self.unchecked)
        if problems:
            raise InvalidInputError(problems)


def check_inputs(
    values: Mapping[str, ArrayLike],
    *,
    beta: float,
    lr: float,
    options: UpdateOptions,
    defer_finite: Collection[str] = (),
) -> CheckedInputs:
    """Convert every argument to float64 and check it; report all problems of a stage at once.

    The arrays named in `defer_finite` are looked at for values that are not finite only
    when another array has one (so that the answer lists them all, as without deferral);
    otherwise the result's `unchecked` names them, for the caller's `require_finite` once
    it has no proof of its own (see `app.core.update`).

    Raises
    ------
    InvalidInputError
        Naming every argument (and index) that breaks a rule, stage by stage: types and
        ranks first, then shapes, groups and options, then values that are not finite.
    """
    problems: list[InputProblem] = []
    sent = {name: getattr(options, name) for name in FLOAT_SAMPLE_OPTIONS}
    arrays = {
        name: array
        for name, value in {**values, **sent}.items()
        if value is not None and (array := _as_float64(name, value, problems)) is not None
    }
    beta_value = _as_scalar("beta", beta, problems)
    lr_value = _as_scalar("lr", lr, problems)
    problems += [InputProblem((name,), msg) for name, msg in option_problems(options)]
    if options.optimizer is not None:
        problems += [InputProblem(loc, msg) for loc, msg in optimizer_problems(options.optimizer)]
    state: dict[StateVector, FloatArray] = {}
    groups = None  # only a baseline needs them
    lengths = None
    if not problems:
        problems = _shape_problems(arrays)
        batch_size = arrays["rewards"].shape[0]
        ids = None
        if options.group_ids is not None:
            ids, id_problems = group_id_problems(options.group_ids, batch_size)
            problems += [InputProblem(loc, msg) for loc, msg in id_problems]
        if options.sequence_lengths is not None:
            lengths, length_problems = sequence_length_problems(
                options.sequence_lengths, batch_size
            )
            problems += [InputProblem(loc, msg) for loc, msg in length_problems]
        if options.optimizer_state is not None and not problems:
            state, state_problem_list = state_problems(
                options.optimizer_state,
                options.optimizer,
                arrays["weights"].shape[0],
                options.column_offset or 0,
            )
            problems += state_problem_list
        if not problems and options.baseline != "none":
            groups = Groups.whole_batch(batch_size) if ids is None else Groups.from_ids(ids)
            if options.baseline == "rloo":
                problems = _rloo_problems(groups, grouped=ids is not None)
    unchecked: tuple[str, ...] = ()
    if not problems:
        offset = options.column_offset or 0
        unchecked = tuple(name for name in arrays if name in defer_finite)
        checked = [name for name in arrays if name not in unchecked]
        problems = _non_finite_problems(arrays, offset, checked)
        if problems and unchecked:
            problems = _non_finite_problems(arrays, offset)
    if problems:
        raise InvalidInputError(problems)
    return CheckedInputs(
        arrays, beta_value, lr_value, groups, lengths, state, unchecked, options.column_offset or 0
    )


@dataclass(frozen=True, slots=True)
class CheckedStep:
    """The inputs of a block's step (`app.core.update.apply_gradient`), every rule checked."""

    arrays: dict[str, FloatArray]  # "weights" and "grad"
    lr: float
    grad_norm: float
    state: dict[StateVector, FloatArray]


def check_step_inputs(
    weights: ArrayLike, grad: ArrayLike, *, lr: float, grad_norm: float, options: UpdateOptions
) -> CheckedStep:
    """Check a block's weights and gradient, lr, the whole's norm, the optimizer and state.

    Raises
    ------
    InvalidInputError
        Naming every argument (and index, in the whole vector) that breaks a rule.
    """
    problems: list[InputProblem] = []
    arrays = {
        name: array
        for name, value in (("weights", weights), ("grad", grad))
        if (array := _as_float64(name, value, problems)) is not None
    }
    lr_value = _as_scalar("lr", lr, problems)
    norm_value = _as_scalar("grad_norm", grad_norm, problems)
    problems += [
        InputProblem((name,), msg)
        for name, msg in option_problems(options)
        if name in ("max_grad_norm", "column_offset")
    ]
    if options.optimizer is not None:
        problems += [InputProblem(loc, msg) for loc, msg in optimizer_problems(options.optimizer)]
    state: dict[StateVector, FloatArray] = {}
    if not problems:
        n = arrays["weights"].shape[0]
        if n == 0:
            msg = "weights is empty; expected at least 1 entry"
            problems.append(InputProblem(("weights",), msg))
        if arrays["grad"].shape[0] != n:
            msg = f"{_length_text('grad', arrays['grad'].shape[0], 'entries', n)} (= len(weights))"
            problems.append(InputProblem(("grad",), msg))
        if options.optimizer_state is not None and not problems:
            state, state_problem_list = state_problems(
                options.optimizer_state, options.optimizer, n, options.column_offset or 0
            )
            problems += state_problem_list
    if not problems:
        problems = _non_finite_problems(arrays, options.column_offset or 0)
    if problems:
        raise InvalidInputError(problems)
    return CheckedStep(arrays, lr_value, norm_value, state)


def _non_finite_problems(
    arrays: Mapping[str, FloatArray], offset: int, names: Collection[str] | None = None
) -> list[InputProblem]:
    """The first entry that is not finite of each array (of those in `names`, when given).

    Columns are named by their index in the whole vector: `offset` is the block's first.
    """
    problems = []
    for name, array in arrays.items():
        if names is not None and name not in names:
            continue
        index = first_non_finite(array)
        if index is None:
            continue
        named = index
        if _SHAPES[name][-1] == "N":
            named = (*index[:-1], offset + index[-1])
        loc: Loc = (name, *named)
        msg = f"{format_loc(loc)} is {array[index]}; expected a finite number"
        problems.append(InputProblem(loc, msg))
    return problems


def _rloo_problems(groups: Groups, *, grouped: bool) -> list[InputProblem]:
    """RLOO's leave-one-out baseline needs every group to have a second sample."""
    singles = np.flatnonzero(groups.sizes < 2)
    if not grouped:
        if singles.size == 0:
            return []
        msg = (
            "baseline 'rloo' needs at least 2 samples per group; without group_ids the "
            "batch is one group, and it has 1 sample"
        )
        return [InputProblem(("baseline",), msg)]
    problems = []
    for group in singles[:MAX_LISTED_PROBLEMS]:
        index = int(groups.first[group])
        msg = (
            f"group {groups.ids[group]} (group_ids[{index}]) has 1 sample; "
            "baseline 'rloo' needs at least 2 samples per group"
        )
        problems.append(InputProblem(("group_ids", index), msg))
    if singles.size > MAX_LISTED_PROBLEMS:
        more = singles.size - MAX_LISTED_PROBLEMS
        msg = f"{more} more groups have 1 sample; baseline 'rloo' needs at least 2 per group"
        problems.append(InputProblem(("group_ids",), msg))
    return problems


def _as_float64(name: str, value: ArrayLike, problems: list[InputProblem]) -> FloatArray | None:
    axes = _SHAPES[name]
    ndim, shape = len(axes), shape_text(name)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        msg = f"{name} is not a {ndim}-D array of floats, shape {shape} ({exc})"
        problems.append(InputProblem((name,), msg))
        return None
    if array.ndim > ndim and name in LOG_PROB_ARRAYS:
        msg = f"{per_token_message(name, f'is {array.ndim}-D')}, shape {shape}"
        problems.append(InputProblem((name,), msg))
        return None
    if array.ndim != ndim:
        msg = f"{name} is {array.ndim}-D; expected {ndim}-D, shape {shape}"
        if array.size == 0 and array.ndim == 1:  # [] for the (B, N) gradients
            msg = f"{name} is empty; expected shape {shape}"
        problems.append(InputProblem((name,), msg))
        return None
    return array


def shape_text(name: str) -> str:
    """The expected shape of an array argument as text, e.g. "(B, N)".

    >>> shape_text("log_prob_grads"), shape_text("weights")
    ('(B, N)', '(N,)')
    """
    axes = _SHAPES[name]
    return f"({axes[0]},)" if len(axes) == 1 else f"({', '.join(axes)})"


def _as_scalar(name: str, value: float, problems: list[InputProblem]) -> float:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        problems.append(InputProblem((name,), f"{name} is not a number; expected a float >= 0"))
        return math.nan
    if array.ndim != 0:
        msg = f"{name} has shape {array.shape}; expected a scalar"
        problems.append(InputProblem((name,), msg))
        return math.nan
    scalar = float(array)
    if not (math.isfinite(scalar) and scalar >= 0):
        problems.append(InputProblem((name,), f"{name} is {scalar}; expected a finite number >= 0"))
    return scalar


def _shape_problems(arrays: dict[str, FloatArray]) -> list[InputProblem]:
    n = arrays["weights"].shape[0]
    b = arrays["rewards"].shape[0]
    problems: list[InputProblem] = []
    if n == 0:
        problems.append(InputProblem(("weights",), "weights is empty; expected at least 1 entry"))
    if b == 0:
        problems.append(InputProblem(("rewards",), "rewards is empty; expected at least 1 sample"))
    for name in ("policy_log_probs", "ref_log_probs", *FLOAT_SAMPLE_OPTIONS):
        if name not in arrays:
            continue
        length = arrays[name].shape[0]
        if length != b:
            msg = _length_text(name, length, "entries", b)
            problems.append(InputProblem((name,), f"{msg} (= len(rewards))"))
    rows, cols = arrays["log_prob_grads"].shape
    if rows != b:
        msg = _length_text("log_prob_grads", rows, "rows", b)
        problems.append(InputProblem(("log_prob_grads",), f"{msg} (= len(rewards))"))
    if cols != n and rows:
        msg = f"log_prob_grads has rows of {cols} entries; expected {n}"
        if cols == 0:
            msg = f"log_prob_grads has empty rows; expected {n} entries"
        problems.append(InputProblem(("log_prob_grads",), f"{msg} (= len(weights))"))
    return problems


def _length_text(name: str, count: int, unit: str, expected: int) -> str:
    """ "x has 3 entries; expected 2", or "x is empty; expected 2 entries" for none."""
    if count == 0:
        return f"{name} is empty; expected {expected} {unit}"
    return f"{name} has {count} {unit}; expected {expected}"
