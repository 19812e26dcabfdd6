"""One RLHF policy-gradient step: a KL-penalised REINFORCE update of a weight vector.

The numeric core of the service. Pure NumPy: no HTTP, no Pydantic, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "InputProblem",
    "InvalidInputError",
    "UpdateError",
    "UpdateOverflowError",
    "UpdateResult",
    "UpdateStats",
    "compute_update",
    "rlhf_weight_update",
]

Loc = tuple[str | int, ...]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One thing wrong with the inputs: where (`loc`) and what was expected (`msg`)."""

    loc: Loc
    msg: str


class UpdateError(ValueError):
    """The update cannot be computed for these inputs; `problems` says why, field by field."""

    def __init__(self, problems: Sequence[InputProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problem.msg for problem in self.problems))


class InvalidInputError(UpdateError):
    """An argument has the wrong shape, or holds a value outside its domain."""


class UpdateOverflowError(UpdateError):
    """Valid inputs whose update (or one of its statistics) overflows float64."""


@dataclass(frozen=True, slots=True)
class UpdateStats:
    """Diagnostics of one update, for the caller's logs."""

    kl_mean: float
    reward_mean: float
    adjusted_reward_mean: float
    grad_norm: float
    update_norm: float


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The new weights (float64, shape (N,)) and the diagnostics of the step."""

    weights: FloatArray
    stats: UpdateStats


def rlhf_weight_update(
    weights: ArrayLike,
    rewards: ArrayLike,
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    log_prob_grads: ArrayLike,
    beta: float,
    lr: float,
) -> FloatArray:
    """Apply one KL-penalised policy-gradient step to `weights`.

    Parameters
    ----------
    weights : array_like, shape (N,)
        Current policy weights.
    rewards : array_like, shape (B,)
        Reward of each sample.
    policy_log_probs : array_like, shape (B,)
        Log-probability of each sample under the current policy.
    ref_log_probs : array_like, shape (B,)
        Log-probability of each sample under the reference policy.
    log_prob_grads : array_like, shape (B, N)
        Gradient of each sample's policy log-probability with respect to `weights`.
    beta : float
        KL penalty coefficient, finite and >= 0.
    lr : float
        Learning rate, finite and >= 0.

    Returns
    -------
    new_weights : ndarray of float64, shape (N,)
        ``weights + lr * grad``; a new array, the inputs are left untouched.

    Raises
    ------
    InvalidInputError
        If the shapes disagree, an array is empty, a value is not finite, or `beta`
        or `lr` is negative. It is a `ValueError` whose message names the argument.
    UpdateOverflowError
        If an intermediate quantity or the result overflows float64 (also a `ValueError`).

    Notes
    -----
    With ``B = len(rewards)``:

    .. math::

        kl_i &= \\mathrm{policy\\_log\\_probs}_i - \\mathrm{ref\\_log\\_probs}_i \\\\
        a_i &= \\mathrm{rewards}_i - \\beta \\, kl_i \\\\
        g &= \\frac{1}{B} \\sum_i a_i \\, \\mathrm{log\\_prob\\_grads}_{i,:} \\\\
        w' &= w + \\mathrm{lr} \\, g

    `kl_i` is the single-sample (k1) estimate of KL(policy || reference) [1]_, subtracted
    from the reward as in [2]_. The sum over samples is one matrix-vector product, so no
    (B, N) temporary is built. All arithmetic is float64.

    References
    ----------
    .. [1] J. Schulman, "Approximating KL Divergence", 2020.
           http://joschu.net/blog/kl-approx.html
    .. [2] D. M. Ziegler et al., "Fine-Tuning Language Models from Human Preferences",
           arXiv:1909.08593, 2019.

    Examples
    --------
    >>> rlhf_weight_update([1, 1], [1, 1], [-1.5, -1.5], [-1.5, -1.5],
    ...                    [[0.5, -0.5], [0.5, -0.5]], beta=1.0, lr=0.1)
    array([1.05, 0.95])
    """
    return compute_update(
        weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta=beta, lr=lr
    ).weights


def compute_update(
    weights: ArrayLike,
    rewards: ArrayLike,
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    log_prob_grads: ArrayLike,
    *,
    beta: float,
    lr: float,
) -> UpdateResult:
    """Compute the update of `rlhf_weight_update` together with its diagnostics.

    Parameters and errors are those of `rlhf_weight_update`.

    Returns
    -------
    UpdateResult
        ``weights``: the new weights. ``stats``: ``kl_mean`` (mean of `kl_i`),
        ``reward_mean``, ``adjusted_reward_mean`` (mean of `a_i`), ``grad_norm``
        (L2 norm of `g`) and ``update_norm`` (L2 norm of ``lr * g``).
    """
    checked = _checked_inputs(
        {
            "weights": weights,
            "rewards": rewards,
            "policy_log_probs": policy_log_probs,
            "ref_log_probs": ref_log_probs,
            "log_prob_grads": log_prob_grads,
        },
        beta=beta,
        lr=lr,
    )
    w, r = checked.arrays["weights"], checked.arrays["rewards"]
    with np.errstate(over="ignore", invalid="ignore"):
        kl = checked.arrays["policy_log_probs"] - checked.arrays["ref_log_probs"]
        adjusted = r - checked.beta * kl
        grad = _mean_of_rows(adjusted, checked.arrays["log_prob_grads"])
        step = checked.lr * grad
        # lr = 0 returns the weights bit for bit: w + 0.0 would turn -0.0 into 0.0.
        new_weights = w + step if checked.lr else w.copy()
        stats = UpdateStats(
            kl_mean=_mean(kl),
            reward_mean=_mean(r),
            adjusted_reward_mean=_mean(adjusted),
            grad_norm=_l2_norm(grad),
            update_norm=_l2_norm(step),
        )
    _require_finite_results(kl=kl, adjusted=adjusted, grad=grad, new_weights=new_weights)
    _require_finite_stats(stats)
    return UpdateResult(weights=new_weights, stats=stats)


# The expected shape of each array argument.
_SHAPES = {
    "weights": "(N,)",
    "rewards": "(B,)",
    "policy_log_probs": "(B,)",
    "ref_log_probs": "(B,)",
    "log_prob_grads": "(B, N)",
}


@dataclass(frozen=True, slots=True)
class _CheckedInputs:
    arrays: dict[str, FloatArray]
    beta: float
    lr: float


def _checked_inputs(values: dict[str, ArrayLike], *, beta: float, lr: float) -> _CheckedInputs:
    """Convert every argument to float64 and check it; report all problems of a stage at once."""
    problems: list[InputProblem] = []
    arrays = {
        name: array
        for name, value in values.items()
        if (array := _as_float64(name, value, problems)) is not None
    }
    checked = _CheckedInputs(
        arrays, _as_scalar("beta", beta, problems), _as_scalar("lr", lr, problems)
    )
    if not problems:
        problems = _shape_problems(arrays)
    if not problems:
        problems = [
            InputProblem(
                (name, *index), f"{_path(name, index)} is {array[index]}; expected a finite number"
            )
            for name, array in arrays.items()
            if (index := _first_non_finite(array)) is not None
        ]
    if problems:
        raise InvalidInputError(problems)
    return checked


def _as_float64(name: str, value: ArrayLike, problems: list[InputProblem]) -> FloatArray | None:
    shape = _SHAPES[name]
    ndim = shape.count("B") + shape.count("N")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        msg = f"{name} is not a {ndim}-D array of floats, shape {shape} ({exc})"
        problems.append(InputProblem((name,), msg))
        return None
    if array.ndim != ndim:
        msg = f"{name} is {array.ndim}-D; expected {ndim}-D, shape {shape}"
        problems.append(InputProblem((name,), msg))
        return None
    return array


def _as_scalar(name: str, value: float, problems: list[InputProblem]) -> float:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        problems.append(InputProblem((name,), f"{name} is not a number; expected a float >= 0"))
        return float("nan")
    if array.ndim != 0:
        problems.append(InputProblem((name,), f"{name} has shape {array.shape}; expected a scalar"))
        return float("nan")
    scalar = float(array)
    if not (np.isfinite(scalar) and scalar >= 0):
        problems.append(InputProblem((name,), f"{name} is {scalar}; expected a finite number >= 0"))
    return scalar


def _shape_problems(arrays: dict[str, FloatArray]) -> list[InputProblem]:
    """The one set of shape rules, shared by every wire format."""
    n = arrays["weights"].shape[0]
    b = arrays["rewards"].shape[0]
    problems: list[InputProblem] = []
    if n == 0:
        problems.append(InputProblem(("weights",), "weights is empty; expected at least 1 entry"))
    if b == 0:
        problems.append(InputProblem(("rewards",), "rewards is empty; expected at least 1 sample"))
    for name in ("policy_log_probs", "ref_log_probs"):
        length = arrays[name].shape[0]
        if length != b:
            problems.append(
                InputProblem((name,), f"{name} has {length} entries; expected {b} (= len(rewards))")
            )
    rows, cols = arrays["log_prob_grads"].shape
    if rows != b:
        problems.append(
            InputProblem(
                ("log_prob_grads",),
                f"log_prob_grads has {rows} rows; expected {b} (= len(rewards))",
            )
        )
    if cols != n:
        problems.append(
            InputProblem(
                ("log_prob_grads",),
                f"log_prob_grads has rows of {cols} entries; expected {n} (= len(weights))",
            )
        )
    return problems


def _first_non_finite(array: FloatArray) -> tuple[int, ...] | None:
    """Index of the first NaN or infinity in `array`, or None."""
    # A finite sum proves every entry finite without a boolean temporary of the array's
    # size; only when it is not (a non-finite entry, or a finite sum that overflowed) look.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array)):
            return None
    bad = np.argwhere(~np.isfinite(array))
    return tuple(int(i) for i in bad[0]) if bad.size else None


def _require_finite_results(**quantities: FloatArray) -> None:
    descriptions = {
        "kl": "the KL estimate policy_log_probs[{i}] - ref_log_probs[{i}]",
        "adjusted": "the adjusted reward rewards[{i}] - beta * kl[{i}]",
        "grad": "the policy gradient grad[{i}]",
        "new_weights": "the updated weight weights[{i}] + lr * grad[{i}]",
    }
    for name, values in quantities.items():
        index = _first_non_finite(values)
        if index is not None:
            what = descriptions[name].format(i=index[0])
            msg = f"{what} overflows float64 ({values[index]}); scale down the inputs or lr"
            raise UpdateOverflowError([InputProblem((name, index[0]), msg)])


def _require_finite_stats(stats: UpdateStats) -> None:
    for name in UpdateStats.__slots__:
        value = getattr(stats, name)
        if not np.isfinite(value):
            msg = f"stats.{name} overflows float64 ({value}); scale down the inputs or lr"
            raise UpdateOverflowError([InputProblem(("stats", name), msg)])


def _mean_of_rows(coefficients: FloatArray, rows: FloatArray) -> FloatArray:
    """``coefficients @ rows / B``: one matrix-vector product, no (B, N) temporary."""
    b = coefficients.size
    grad: FloatArray = (coefficients @ rows) / b
    if not np.isfinite(grad).all() and np.isfinite(coefficients).all():
        # A column sum overflowed although its mean may be representable: divide first.
        grad = (coefficients / b) @ rows
    return grad


def _mean(values: FloatArray) -> float:
    mean = float(np.mean(values))
    if not np.isfinite(mean) and np.isfinite(values).all():
        # The sum overflowed although the mean itself is representable: average scaled terms.
        mean = float(np.sum(values / values.size))
    return mean


def _l2_norm(values: FloatArray) -> float:
    """L2 norm without overflow or underflow in the squares (scaled by the largest entry)."""
    scale = float(np.max(np.abs(values)))
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    scaled = values / scale
    return scale * float(np.sqrt(scaled @ scaled))


def _path(name: str, index: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in index)
