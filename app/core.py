"""One RLHF policy-gradient step: a KL-penalised REINFORCE update of a weight vector.

The numeric core of the service. Pure NumPy: no HTTP, no Pydantic, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.advantages import (
    advantages,
    clamp,
    kl_estimate,
    l2_norm,
    mean,
    sample_std,
    scaled_sum_of_squares,
    whiten,
)
from app.options import (
    DEFAULT_OPTIONS,
    Groups,
    UpdateOptions,
    group_id_problems,
    option_problems,
)

__all__ = [
    "ARRAY_SHAPES",
    "AnyFloatArray",
    "InputProblem",
    "InvalidInputError",
    "KlEstimates",
    "UpdateError",
    "UpdateOptions",
    "UpdateOverflowError",
    "UpdateResult",
    "UpdateStats",
    "compute_update",
    "in_weights_dtype",
    "rlhf_weight_update",
]

Loc = tuple[str | int, ...]
FloatArray = NDArray[np.float64]
# float64, or float32 as a binary body may send (see `in_weights_dtype`).
AnyFloatArray = NDArray[np.float64] | NDArray[np.float32]


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
class KlEstimates:
    """Batch means of the k1, k2 and k3 KL estimates, whatever estimator the update used.

    An entry is None when that mean overflows float64 (only for absurd log-ratios).
    """

    k1: float | None
    k2: float | None
    k3: float | None


@dataclass(frozen=True, slots=True)
class UpdateStats:
    """Diagnostics of one update, for the caller's logs."""

    kl_mean: float
    kl_max: float
    reward_mean: float
    reward_std: float
    adjusted_reward_mean: float
    advantage_mean: float
    advantage_std: float
    grad_norm: float
    clipped: bool
    update_norm: float
    next_beta: float | None
    kl_estimates: KlEstimates


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The new weights (shape (N,), float64 unless cast) and the diagnostics of the step."""

    weights: AnyFloatArray
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
    result = compute_update(
        weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta=beta, lr=lr
    )
    # compute_update answers in float64; only in_weights_dtype casts to another dtype.
    return cast("FloatArray", result.weights)


# Overflow is looked for explicitly, value by value, and reported with its index; one
# errstate around the whole update keeps NumPy's warnings out, at the cost of one switch.
@np.errstate(over="ignore", invalid="ignore")
def compute_update(
    weights: ArrayLike,
    rewards: ArrayLike,
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    log_prob_grads: ArrayLike,
    *,
    beta: float,
    lr: float,
    options: UpdateOptions = DEFAULT_OPTIONS,
    inputs_finite: bool = False,
) -> UpdateResult:
    """Compute the update of `rlhf_weight_update`, with algorithm options and diagnostics.

    Parameters
    ----------
    weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta, lr
        As in `rlhf_weight_update`.
    options : UpdateOptions, optional
        KL estimator, clamps, baseline, normalisation, gradient clipping and adaptive
        KL. The default reproduces `rlhf_weight_update` bit for bit.
    inputs_finite : bool, optional
        True when the caller has already proven every entry of the arrays finite (the
        JSON decoder refuses NaN, Infinity and literals beyond float64), so that they
        are not scanned again. Intermediate and final results are checked regardless.

    Returns
    -------
    UpdateResult
        The new weights and `UpdateStats`.

    Raises
    ------
    InvalidInputError, UpdateOverflowError
        As in `rlhf_weight_update`; also for an option outside its domain, `group_ids`
        of the wrong length, or "rloo" with a group of one sample.

    Notes
    -----
    The steps, in order:

    0. ``r = clip(rewards, -reward_clip, reward_clip)`` when `reward_clip` is set;
    1. ``kl_i`` by the chosen estimator of ``d_i = policy_log_probs_i - ref_log_probs_i``
       (see `app.advantages.kl_estimate`), clamped to ``[-kl_clamp, kl_clamp]`` when set;
    2. ``a_i = r_i - beta * kl_i``;
    3. ``A_i`` from ``a_i`` by the baseline, within each group of `group_ids`
       (see `app.advantages.advantages`);
    4. ``A = whiten(A)`` when `normalize_advantages` (see `app.advantages.whiten`);
    5. ``g = A @ log_prob_grads / B``;
    6. ``g *= max_grad_norm / (||g|| + 1e-6)`` when ``||g|| > max_grad_norm``, as
       ``torch.nn.utils.clip_grad_norm_``;
    7. ``w' = weights + lr * g``.

    With `target_kl` and `kl_horizon`, ``stats.next_beta`` is the adaptive KL
    controller's next coefficient (Ziegler et al. 2019, TRL's AdaptiveKLController):
    ``beta * (1 + clip(kl_mean / target_kl - 1, -0.2, 0.2) * B / kl_horizon)``.
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
        options=options,
        inputs_finite=inputs_finite,
    )
    estimator = options.estimator
    w, r = checked.arrays["weights"], checked.arrays["rewards"]
    if options.reward_clip is not None:
        r = clamp(r, float(options.reward_clip))
    log_ratio = checked.arrays["policy_log_probs"] - checked.arrays["ref_log_probs"]
    kl = kl_estimate(log_ratio, estimator)
    if options.kl_clamp is not None:
        kl = clamp(kl, float(options.kl_clamp))
    adjusted = r - checked.beta * kl
    advantage = (
        adjusted
        if checked.groups is None
        else advantages(adjusted, checked.groups, options.baseline, options.grpo_scale)
    )
    if options.normalize_advantages:
        advantage = whiten(advantage)
    # Without a baseline or whitening the advantages are the adjusted rewards themselves.
    same = advantage is adjusted
    _require_finite_advantages(kl, adjusted, None if same else advantage, estimator)
    grad, grad_norm = _gradient(advantage, checked.arrays["log_prob_grads"])
    step_norm = grad_norm
    clipped = False
    if options.max_grad_norm is not None and grad_norm > options.max_grad_norm:
        # torch.nn.utils.clip_grad_norm_'s factor, 1e-6 included.
        grad = grad * (float(options.max_grad_norm) / (grad_norm + 1e-6))
        step_norm = l2_norm(grad)
        clipped = True
    # lr = 0 returns the weights bit for bit: w + 0.0 would turn -0.0 into 0.0.
    new_weights = w + checked.lr * grad if checked.lr else w.copy()
    kl_mean = mean(kl)
    reward_mean = mean(r)
    adjusted_mean = mean(adjusted)
    advantage_mean = adjusted_mean if same else mean(advantage)
    # Unless clamped, the update's own estimate is one of the three reported side by side.
    own_estimate = {estimator: kl_mean} if options.kl_clamp is None else {}
    stats = UpdateStats(
        kl_mean=kl_mean,
        kl_max=float(np.maximum.reduce(kl)),
        reward_mean=reward_mean,
        reward_std=sample_std(r, reward_mean),
        adjusted_reward_mean=adjusted_mean,
        advantage_mean=advantage_mean,
        advantage_std=sample_std(advantage, advantage_mean),
        grad_norm=grad_norm,
        clipped=clipped,
        update_norm=checked.lr * step_norm,
        next_beta=_next_beta(checked.beta, kl_mean, r.size, options),
        kl_estimates=_kl_estimates(log_ratio, own_estimate),
    )
    _require_finite_results(new_weights=new_weights)
    _require_finite_stats(stats)
    return UpdateResult(weights=new_weights, stats=stats)


def _next_beta(
    beta: float, kl_mean: float, batch_size: int, options: UpdateOptions
) -> float | None:
    """The adaptive KL controller's next beta, or None when it is not enabled."""
    if options.target_kl is None or options.kl_horizon is None:
        return None
    error = min(max(kl_mean / float(options.target_kl) - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * batch_size / float(options.kl_horizon))


def _kl_estimates(log_ratio: FloatArray, known: dict[str, float]) -> KlEstimates:
    """The batch means of k1, k2 and k3; those in `known` are taken as they are."""
    means = [
        known[name] if name in known else _kl_estimate_mean(log_ratio, name)
        for name in ("k1", "k2", "k3")
    ]
    k1, k2, k3 = (value if math.isfinite(value) else None for value in means)
    return KlEstimates(k1=k1, k2=k2, k3=k3)


def _kl_estimate_mean(log_ratio: FloatArray, estimator: str) -> float:
    """The batch mean of one estimator's per-sample estimates."""
    if estimator == "k2":
        # mean(d**2 / 2) from one product, scaled so that the squares cannot overflow.
        scale, squares = scaled_sum_of_squares(log_ratio)
        return 0.5 * scale * (scale * (squares / log_ratio.size))
    return mean(kl_estimate(log_ratio, estimator))


def in_weights_dtype(result: UpdateResult, dtype: np.dtype[np.floating[Any]]) -> UpdateResult:
    """Cast the float64 result to the dtype the weights came in (float32 or float64).

    Parameters
    ----------
    result : UpdateResult
        The output of `compute_update`, computed in float64.
    dtype : numpy.dtype
        The dtype of the caller's weights.

    Returns
    -------
    UpdateResult
        `result` itself for float64; otherwise the weights rounded to `dtype`.

    Raises
    ------
    UpdateOverflowError
        If a new weight is beyond the range of `dtype`, naming the first such weight.
    """
    if dtype == result.weights.dtype:
        return result
    with np.errstate(over="ignore", invalid="ignore"):
        weights: NDArray[np.float32] = result.weights.astype(dtype)
        index = _first_non_finite(weights)
    if index is not None:
        i = index[0]
        msg = (
            f"the updated weight weights[{i}] + lr * grad[{i}] overflows {dtype.name} "
            f"({result.weights[i]}); scale down the inputs or lr, or send float64 weights"
        )
        raise UpdateOverflowError([InputProblem(("new_weights", i), msg)])
    return UpdateResult(weights=weights, stats=result.stats)


# The expected shape of each array argument, in the order of the signature.
ARRAY_SHAPES = {
    "weights": "(N,)",
    "rewards": "(B,)",
    "policy_log_probs": "(B,)",
    "ref_log_probs": "(B,)",
    "log_prob_grads": "(B, N)",
}
_NDIMS = {name: shape.count("B") + shape.count("N") for name, shape in ARRAY_SHAPES.items()}


@dataclass(frozen=True, slots=True)
class _CheckedInputs:
    arrays: dict[str, FloatArray]
    beta: float
    lr: float
    groups: Groups | None  # None without a baseline


def _checked_inputs(
    values: dict[str, ArrayLike],
    *,
    beta: float,
    lr: float,
    options: UpdateOptions,
    inputs_finite: bool,
) -> _CheckedInputs:
    """Convert every argument to float64 and check it; report all problems of a stage at once."""
    problems: list[InputProblem] = []
    arrays = {
        name: array
        for name, value in values.items()
        if (array := _as_float64(name, value, problems)) is not None
    }
    beta_value = _as_scalar("beta", beta, problems)
    lr_value = _as_scalar("lr", lr, problems)
    if options is not DEFAULT_OPTIONS:  # the defaults are valid; tests/test_options.py checks
        problems += [InputProblem((name,), msg) for name, msg in option_problems(options)]
    groups = None  # only a baseline needs them
    if not problems:
        problems = _shape_problems(arrays)
        batch_size = arrays["rewards"].shape[0]
        ids = None
        if options.group_ids is not None:
            ids, id_problems = group_id_problems(options.group_ids, batch_size)
            problems += [InputProblem(loc, msg) for loc, msg in id_problems]
        if not problems and options.baseline != "none":
            groups = Groups.whole_batch(batch_size) if ids is None else Groups.from_ids(ids)
            if options.baseline == "rloo":
                problems = _rloo_problems(groups, grouped=ids is not None)
    if not problems and not inputs_finite:
        problems = [
            InputProblem(
                (name, *index), f"{_path(name, index)} is {array[index]}; expected a finite number"
            )
            for name, array in arrays.items()
            if (index := _first_non_finite(array)) is not None
        ]
    if problems:
        raise InvalidInputError(problems)
    return _CheckedInputs(arrays, beta_value, lr_value, groups)


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
    for group in singles[:_MAX_GROUP_PROBLEMS]:
        index = int(groups.first[group])
        msg = (
            f"group {groups.ids[group]} (group_ids[{index}]) has 1 sample; "
            "baseline 'rloo' needs at least 2 samples per group"
        )
        problems.append(InputProblem(("group_ids", index), msg))
    if singles.size > _MAX_GROUP_PROBLEMS:
        more = singles.size - _MAX_GROUP_PROBLEMS
        msg = f"{more} more groups have 1 sample; baseline 'rloo' needs at least 2 per group"
        problems.append(InputProblem(("group_ids",), msg))
    return problems


# Listing a million single-sample groups one by one helps nobody.
_MAX_GROUP_PROBLEMS = 20


def _as_float64(name: str, value: ArrayLike, problems: list[InputProblem]) -> FloatArray | None:
    shape, ndim = ARRAY_SHAPES[name], _NDIMS[name]
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
    if isinstance(value, float):  # as the decoders give it: no conversion through NumPy
        scalar = float(value)
    else:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            problems.append(InputProblem((name,), f"{name} is not a number; expected a float >= 0"))
            return float("nan")
        if array.ndim != 0:
            msg = f"{name} has shape {array.shape}; expected a scalar"
            problems.append(InputProblem((name,), msg))
            return float("nan")
        scalar = float(array)
    if not (math.isfinite(scalar) and scalar >= 0):
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


def _first_non_finite(array: AnyFloatArray) -> tuple[int, ...] | None:
    """Index of the first NaN or infinity in `array`, or None (under an errstate that
    ignores overflow: the sum may overflow)."""
    # A finite sum proves every entry finite without a boolean temporary of the array's
    # size; only when it is not (a non-finite entry, or a finite sum that overflowed) look.
    if math.isfinite(np.add.reduce(array, axis=None)):
        return None
    bad = np.argwhere(~np.isfinite(array))
    return tuple(int(i) for i in bad[0]) if bad.size else None


_DESCRIPTIONS = {
    "kl": "the KL estimate policy_log_probs[{i}] - ref_log_probs[{i}]",
    "adjusted": "the adjusted reward rewards[{i}] - beta * kl[{i}]",
    "advantage": "the advantage of sample {i}",
    "grad": "the policy gradient grad[{i}]",
    "new_weights": "the updated weight weights[{i}] + lr * grad[{i}]",
}


def _require_finite_advantages(
    kl: FloatArray, adjusted: FloatArray, advantage: FloatArray | None, estimator: str
) -> None:
    """Name the first per-sample quantity that overflowed: kl, adjusted or advantage.

    A non-finite KL estimate makes the adjusted reward non-finite too (``beta * inf`` is
    infinite, ``0 * inf`` is NaN), so kl is looked at only when adjusted is not finite.
    """
    if _first_non_finite(adjusted) is not None:
        _require_finite_results(estimator=estimator, kl=kl, adjusted=adjusted)
    if advantage is not None:
        _require_finite_results(advantage=advantage)


def _require_finite_results(estimator: str = "k1", **quantities: FloatArray) -> None:
    for name, values in quantities.items():
        index = _first_non_finite(values)
        if index is not None:
            what = _DESCRIPTIONS[name].format(i=index[0])
            if name == "kl" and estimator != "k1":
                what = f"the {estimator} KL estimate of sample {index[0]}"
            msg = f"{what} overflows float64 ({values[index]}); scale down the inputs or lr"
            raise UpdateOverflowError([InputProblem((name, index[0]), msg)])


def _require_finite_stats(stats: UpdateStats) -> None:
    for name in UpdateStats.__slots__:
        value = getattr(stats, name)
        if isinstance(value, float) and not math.isfinite(value):
            msg = f"stats.{name} overflows float64 ({value}); scale down the inputs or lr"
            raise UpdateOverflowError([InputProblem(("stats", name), msg)])


def _gradient(advantage: FloatArray, grads: FloatArray) -> tuple[FloatArray, float]:
    """The policy gradient ``advantage @ grads / B`` and its L2 norm.

    One matrix-vector product, no (B, N) temporary. Raises `UpdateOverflowError` when an
    entry of the gradient overflows.
    """
    b = advantage.size
    # ndarray.dot: the same BLAS product as @, with less dispatch for small arrays.
    grad: FloatArray = advantage.dot(grads) / b
    norm = l2_norm(grad)
    # A finite norm proves every entry finite. Otherwise a column sum may have overflowed
    # although its mean is representable: divide first, then look.
    if not math.isfinite(norm):
        grad = (advantage / b).dot(grads)
        _require_finite_results(grad=grad)
        norm = l2_norm(grad)
    return grad, norm


def _path(name: str, index: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in index)
