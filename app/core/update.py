"""One RLHF policy-gradient step: a KL-penalised REINFORCE update of a weight vector.

The numeric core of the service: the formula and its options. Pure NumPy, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .advantages import advantages, kl_estimate, kl_estimate_means, whiten
from .aggregation import aggregation
from .inputs import CheckedInputs, check_inputs, check_step_inputs
from .kernel import weighted_row_sum
from .kl_loss import KlLossTerms, kl_loss_terms
from .norms import chunk_partials, norm_of_partials
from .optimizers import OptimizerState, StateVector, optimizer_step, takes_plain_step
from .options import DEFAULT_OPTIONS, KlEstimatorName, UpdateOptions
from .overflow import first_non_finite, require_finite, require_finite_stats
from .plain import plain_update
from .policy_loss import PolicyTerms, policy_coefficients
from .results import (
    AppliedStep,
    ColumnPartials,
    FloatArray,
    GradientResult,
    InputProblem,
    InvalidInputError,
    UpdateError,
    UpdateOverflowError,
    UpdateResult,
    UpdateStats,
)
from .stable import (
    add_product,
    clamp,
    mean,
    mean_product,
    sample_std,
)
from .tis import TisWeights, tis_weights

__all__ = [
    "apply_gradient",
    "compute_gradient",
    "compute_update",
    "in_weights_dtype",
    "rlhf_weight_update",
]

# A result whose weights `in_weights_dtype` casts.
_Stepped = TypeVar("_Stepped", UpdateResult, AppliedStep)


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
    from the reward as in [2]_. The sum over samples adds the rows in order for each column
    (`app.core.kernel.weighted_row_sum`), without a (B, N) temporary, and every norm over N
    comes from fixed chunks of columns (`app.core.norms`): the result does not depend on the
    machine or the BLAS build. All arithmetic is float64.

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
    options: UpdateOptions | None = None,
) -> UpdateResult:
    """Compute the update of `rlhf_weight_update`, with algorithm options and diagnostics.

    Parameters
    ----------
    weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta, lr
        As in `rlhf_weight_update`.
    options : UpdateOptions, optional
        KL estimator, clamps, baseline, normalisation, gradient clipping and adaptive
        KL. None, or ``UpdateOptions()``, reproduces `rlhf_weight_update` bit for bit.

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

    0. ``r = clip(rewards, -reward_clip, reward_clip)`` (or ``[low, high]``) when set;
    1. ``kl_i`` by the chosen estimator of ``d_i = policy_log_probs_i - ref_log_probs_i``
       (``old_log_probs_i - ref_log_probs_i`` when `old_log_probs` is sent: advantages are
       frozen at rollout time), see `app.core.advantages.kl_estimate`; clamped to
       ``[-kl_clamp, kl_clamp]`` when set ("low_var_kl": to [-10, 10] unless set);
    2. ``a_i = r_i - beta * kl_i``;
    3. ``A_i`` from ``a_i`` by the baseline, within each group of `group_ids`
       (see `app.core.advantages.advantages`);
    4. ``A = whiten(A)`` when `normalize_advantages` (see `app.core.advantages.whiten`);
    5. ``coef_i``: the policy loss's coefficient of ``grad logp_i``
       (`app.core.policy_loss`), times the TIS weight (`app.core.tis`), minus
       ``kl_loss_coef * k'(policy_log_probs_i - ref_log_probs_i)`` (`app.core.kl_loss`);
       ``g = sum_i c_i * coef_i * log_prob_grads[i]``, ``c_i`` the weight of `loss_agg`
       (`app.core.aggregation`; by default ``1/B``, so that ``g = A @ log_prob_grads / B``);
    6. ``g *= max_grad_norm / (||g|| + 1e-6)`` when that factor is below 1, exactly as
       ``torch.nn.utils.clip_grad_norm_``;
    7. ``w' = weights + lr * g``; with `optimizer`, one step of SGD, Adam or AdamW along
       ``g`` from `optimizer_state` (`app.core.optimizers`), which also returns the new state.

    With `target_kl` and `kl_horizon`, ``stats.next_beta`` is the adaptive KL
    controller's next coefficient (Ziegler et al. 2019; verl's and OpenRLHF's
    AdaptiveKLController): ``beta * (1 + clip(kl_mean / target_kl - 1, -0.2, 0.2) * B /
    kl_horizon)``.

    With no options (None or `DEFAULT_OPTIONS`) the update is `app.core.plain.plain_update`'s
    whenever it answers: the same steps with their defaults, the same bits.
    """
    if options is None or options is DEFAULT_OPTIONS:
        plain = plain_update(
            weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta, lr
        )
        if plain is not None:
            return plain
    options = options or DEFAULT_OPTIONS
    batch = _batch_terms(
        weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta, lr, options
    )
    offset = options.column_offset
    if offset is not None and options.max_grad_norm is not None:
        msg = (
            "column_offset with max_grad_norm: clipping needs the norm of the whole "
            "gradient; send each block to /update/grad, then to /update/apply with the "
            "combined grad_norm"
        )
        raise InvalidInputError([InputProblem(("column_offset",), msg)])
    grad, grad_partials, grad_norm = _batch_gradient(batch, offset or 0)
    step, update_norm = _step(batch.weights, grad, grad_norm, batch.lr, options, batch.state)
    new_state = step.optimizer_state
    stats = _stats(
        batch,
        grad_norm=grad_norm,
        clipped=step.clipped,
        update_norm=update_norm,
        optimizer_step=None if new_state is None else new_state.step,
    )
    _require_finite_step(step, options, offset or 0)
    require_finite_stats(stats)
    partials = None
    if offset is not None:
        partials = dataclasses.replace(step.partials, grad=grad_partials)
    return UpdateResult(
        weights=step.weights, stats=stats, optimizer_state=new_state, partials=partials
    )


@np.errstate(over="ignore", invalid="ignore")
def compute_gradient(
    weights: ArrayLike,
    rewards: ArrayLike,
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    log_prob_grads: ArrayLike,
    *,
    beta: float,
    lr: float,
    options: UpdateOptions | None = None,
) -> GradientResult:
    """Steps 0 to 5 of `compute_update` for one block of columns: its gradient and partials.

    Parameters
    ----------
    weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta, lr, options
        As in `compute_update`, with `weights` and the columns of `log_prob_grads` those
        of the block that starts at ``options.column_offset`` (0 when not set); the (B,)
        arrays whole. The optimizer and `max_grad_norm` are checked, not used.

    Returns
    -------
    GradientResult
        The block's gradient before clipping, equal bit for bit to those columns of the
        whole's; its `app.core.norms.chunk_partials`; the batch's statistics, the same
        for every block (and the block's own `COLUMN_STATS`).

    Raises
    ------
    InvalidInputError, UpdateOverflowError
        As `compute_update`, a column named by its index in the whole vector.
    """
    options = options or DEFAULT_OPTIONS
    batch = _batch_terms(
        weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta, lr, options
    )
    grad, partials, grad_norm = _batch_gradient(batch, options.column_offset or 0)
    stats = _stats(batch, grad_norm=grad_norm, clipped=False, update_norm=0.0, optimizer_step=None)
    require_finite_stats(stats)
    return GradientResult(grad=grad, partials=partials, stats=stats)


@np.errstate(over="ignore", invalid="ignore")
def apply_gradient(
    weights: ArrayLike,
    grad: ArrayLike,
    *,
    lr: float,
    grad_norm: float,
    options: UpdateOptions | None = None,
) -> AppliedStep:
    """Steps 6 and 7 of `compute_update` for one block: clip by the whole's norm, then step.

    Parameters
    ----------
    weights : array_like, shape (n,)
        The block's weights.
    grad : array_like, shape (n,)
        The block's gradient before clipping (`compute_gradient`'s).
    lr : float
        The learning rate, finite and >= 0.
    grad_norm : float
        The norm of the whole gradient, `app.core.norms.norm_of_partials` of every
        block's partials: the clipping factor is derived from it as `compute_update` does.
    options : UpdateOptions, optional
        `max_grad_norm`, `optimizer` and the block of `optimizer_state`, and
        `column_offset`; the other options are not used.

    Returns
    -------
    AppliedStep
        The new weights and state of the block, equal bit for bit to those columns of
        `compute_update`'s, whether it clipped, and the block's partials of the norms of
        the step after clipping and of the update.

    Raises
    ------
    InvalidInputError
        For arrays of other shapes, values that are not finite, a negative `lr` or
        `grad_norm`, or an optimizer or state outside its domain, naming each.
    UpdateOverflowError
        When a new weight or state entry overflows, naming its index in the whole.
    """
    options = options or DEFAULT_OPTIONS
    checked = check_step_inputs(weights, grad, lr=lr, grad_norm=grad_norm, options=options)
    step, _ = _step(
        checked.arrays["weights"],
        checked.arrays["grad"],
        checked.grad_norm,
        checked.lr,
        options,
        checked.state,
    )
    _require_finite_step(step, options, options.column_offset or 0)
    return step


@dataclasses.dataclass(frozen=True, slots=True)
class _Batch:
    """What steps 0 to 5 computed, from the (B,) arrays: the same in every block."""

    checked: CheckedInputs
    rewards: FloatArray
    kl: FloatArray
    adjusted: FloatArray
    advantage: FloatArray
    log_ratio: FloatArray
    own_estimate: dict[KlEstimatorName, float]
    terms: PolicyTerms
    tis: TisWeights | None
    kl_loss: KlLossTerms | None
    coefficient: FloatArray
    divisor: float | None
    kl_mean: float
    options: UpdateOptions

    @property
    def weights(self) -> FloatArray:
        return self.checked.arrays["weights"]

    @property
    def grads(self) -> FloatArray:
        return self.checked.arrays["log_prob_grads"]

    @property
    def lr(self) -> float:
        return self.checked.lr

    @property
    def state(self) -> dict[StateVector, FloatArray]:
        return self.checked.state


def _batch_terms(
    weights: ArrayLike,
    rewards: ArrayLike,
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    log_prob_grads: ArrayLike,
    beta: float,
    lr: float,
    options: UpdateOptions,
) -> _Batch:
    """Check the inputs, then steps 0 to 5 up to each sample's gradient coefficient."""
    checked = check_inputs(
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
        defer_finite=(_GRADIENTS,),
    )
    try:
        return _terms(checked, options)
    except UpdateError:
        # A value of the gradients that is not finite is the answer, before any problem
        # found later, as when every input is checked first.
        checked.require_finite()
        raise


# The (B, N) input: its pass for values that are not finite is left to `_batch_gradient`,
# which most often has a proof of its own instead.
_GRADIENTS = "log_prob_grads"


def _terms(checked: CheckedInputs, options: UpdateOptions) -> _Batch:
    """Steps 0 to 5 once `check_inputs` has passed, maybe with `checked.unchecked`."""
    estimator = options.estimator
    arrays = checked.arrays
    r = arrays["rewards"]
    if options.reward_clip is not None:
        r = _clip_rewards(r, options.reward_clip)
    policy, ref, old = (
        arrays["policy_log_probs"],
        arrays["ref_log_probs"],
        arrays.get("old_log_probs"),
    )
    log_ratio = (policy if old is None else old) - ref
    kl = kl_estimate(log_ratio, estimator)
    kl_bound = options.reward_kl_clamp
    if kl_bound is not None:
        kl = clamp(kl, kl_bound)
    adjusted = add_product(r, -checked.beta, kl)
    advantage = (
        adjusted
        if checked.groups is None
        else advantages(
            adjusted, checked.groups, options.baseline, options.grpo_scale, checked.lengths
        )
    )
    if options.normalize_advantages:
        advantage = whiten(advantage)
    require_finite(estimator, kl=kl, adjusted=adjusted, advantage=advantage)
    terms = policy_coefficients(advantage, policy, old, checked.lengths, options)
    coefficient = terms.coefficient
    tis = None
    if options.tis_mode is not None:
        tis = tis_weights(policy if old is None else old, arrays["behavior_log_probs"], options)
        coefficient = coefficient * tis.weights
    kl_loss = None
    if options.kl_loss_coef:
        kl_loss = kl_loss_terms(policy - ref, options.kl_loss_type, options.kl_loss_clamp)
        coefficient = coefficient - float(options.kl_loss_coef) * kl_loss.derivative
    summed = aggregation(options.aggregation, r.size, checked.lengths, options.loss_agg_constant)
    if summed.per_sample is not None:
        coefficient = coefficient / summed.per_sample
    if coefficient is not advantage:
        require_finite(coefficient=coefficient)
    kl_mean = mean(kl)
    # Unless clamped, the update's own estimate is one of the three reported side by side.
    own_estimate = {estimator: kl_mean} if kl_bound is None else {}
    return _Batch(
        checked,
        r,
        kl,
        adjusted,
        advantage,
        log_ratio,
        own_estimate,
        terms,
        tis,
        kl_loss,
        coefficient,
        summed.divisor,
        kl_mean,
        options,
    )


def _batch_gradient(batch: _Batch, offset: int) -> tuple[FloatArray, FloatArray, float]:
    """The block's gradient, its chunk partials and their norm, its inputs proven finite."""
    try:
        grad = _gradient(batch.coefficient, batch.grads, batch.divisor, offset)
    except UpdateError:
        batch.checked.require_finite()
        raise
    partials = chunk_partials(grad)
    grad_norm = norm_of_partials(partials)
    # A finite gradient proves every gradient entry finite when no coefficient is 0: a
    # product c * x with c finite and not 0 is infinite or NaN for x infinite or NaN, and
    # so is any sum it is in; a 0 * inf is left to the check, whatever the kernel does.
    coefficient = batch.coefficient
    if batch.checked.unchecked and not (
        math.isfinite(grad_norm) and np.count_nonzero(coefficient) == coefficient.size
    ):
        batch.checked.require_finite()
    return grad, partials, grad_norm


def _step(
    w: FloatArray,
    grad: FloatArray,
    grad_norm: float,
    lr: float,
    options: UpdateOptions,
    vectors: dict[StateVector, FloatArray],
) -> tuple[AppliedStep, float]:
    """Steps 6 and 7 on these columns: the step, and its update_norm were they the whole."""
    step_norm = grad_norm
    clipped = False
    step_partials = None
    if options.max_grad_norm is not None:
        # torch.nn.utils.clip_grad_norm_ multiplies by min(factor, 1), 1e-6 included.
        factor = float(options.max_grad_norm) / (grad_norm + 1e-6)
        if factor < 1.0:
            grad = grad * factor
            step_partials = chunk_partials(grad)
            step_norm = norm_of_partials(step_partials)
            clipped = True
    optimizer = options.optimizer
    state = options.optimizer_state or OptimizerState()
    new_state = None
    update_partials = None
    if takes_plain_step(optimizer):
        # lr = 0 returns the weights bit for bit: w + 0.0 would turn -0.0 into 0.0.
        new_weights = w + lr * grad if lr else w.copy()
        update_norm = lr * step_norm
        if optimizer is not None:
            new_state = OptimizerState(step=int(state.step) + 1)
    else:
        assert optimizer is not None  # takes_plain_step said so
        new_weights, new_state = optimizer_step(w, grad, lr, optimizer, int(state.step), vectors)
        update_partials = chunk_partials(new_weights - w)
        update_norm = norm_of_partials(update_partials)
    partials = ColumnPartials(grad=None, step=step_partials, update=update_partials)
    return AppliedStep(new_weights, new_state, clipped, partials), update_norm


def _stats(
    batch: _Batch,
    *,
    grad_norm: float,
    clipped: bool,
    update_norm: float,
    optimizer_step: int | None,
) -> UpdateStats:
    """The update's statistics: the batch's, and those of `COLUMN_STATS` as given."""
    r, advantage, kl_mean = batch.rewards, batch.advantage, batch.kl_mean
    reward_mean = mean(r)
    advantage_mean = mean(advantage)
    checked = batch.checked
    return UpdateStats(
        kl_mean=kl_mean,
        kl_max=float(batch.kl.max()),
        reward_mean=reward_mean,
        reward_std=sample_std(r, reward_mean),
        adjusted_reward_mean=mean(batch.adjusted),
        advantage_mean=advantage_mean,
        advantage_std=sample_std(advantage, advantage_mean),
        grad_norm=grad_norm,
        clipped=clipped,
        update_norm=update_norm,
        next_beta=_next_beta(checked.beta, kl_mean, r.size, batch.options),
        kl_estimates=kl_estimate_means(batch.log_ratio, batch.own_estimate),
        ratio=batch.terms.stats,
        kl_loss_mean=None if batch.kl_loss is None else batch.kl_loss.mean,
        tis=None if batch.tis is None else batch.tis.stats,
        optimizer_step=optimizer_step,
    )


def _require_finite_step(step: AppliedStep, options: UpdateOptions, offset: int) -> None:
    """Name the first new weight, then the first new state entry, that is not finite."""
    new_state = step.optimizer_state
    if new_state is None or takes_plain_step(options.optimizer):
        require_finite(offset=offset, new_weights=step.weights)
    else:
        require_finite(offset=offset, stepped_weights=step.weights)
    if new_state is not None:
        vectors = {f"optimizer_state.{k}": np.asarray(v) for k, v in new_state.vectors().items()}
        require_finite(options.estimator, offset=offset, **vectors)


def _clip_rewards(rewards: FloatArray, bound: float | Sequence[float]) -> FloatArray:
    """`rewards` within ``[-bound, bound]``, or within ``[low, high]`` for a pair."""
    if isinstance(bound, Sequence | np.ndarray):
        low, high = (float(value) for value in bound)
        clipped: FloatArray = np.clip(rewards, low, high)
        return clipped
    return clamp(rewards, float(bound))


def _next_beta(
    beta: float, kl_mean: float, batch_size: int, options: UpdateOptions
) -> float | None:
    """The adaptive KL controller's next beta, or None when it is not enabled."""
    if options.target_kl is None or options.kl_horizon is None:
        return None
    error = min(max(kl_mean / float(options.target_kl) - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * batch_size / float(options.kl_horizon))


def in_weights_dtype(
    result: _Stepped, dtype: np.dtype[np.floating[Any]], column_offset: int = 0
) -> _Stepped:
    """Cast the float64 result to the dtype the weights came in.

    float64, float32, float16, or ml_dtypes' bfloat16 (a binary body's BF16): each new
    weight is rounded once, from float64, to nearest with ties to even.

    Parameters
    ----------
    result : UpdateResult or AppliedStep
        The output of `compute_update` or `apply_gradient`, computed in float64.
    dtype : numpy.dtype
        The dtype of the caller's weights.
    column_offset : int, optional
        The index in the whole vector of the first weight (a block's), for the error.

    Returns
    -------
    UpdateResult or AppliedStep
        `result` itself for float64; otherwise the weights rounded to `dtype`.

    Raises
    ------
    UpdateOverflowError
        If a new weight is beyond the range of `dtype`, naming the first such weight.
    """
    if dtype == result.weights.dtype:
        return result
    with np.errstate(over="ignore", invalid="ignore"):
        weights: NDArray[Any] = result.weights.astype(dtype)
        index = first_non_finite(weights)
    if index is not None:
        j = index[0]
        i = column_offset + j
        msg = (
            f"the updated weight weights[{i}] + lr * grad[{i}] overflows {dtype.name} "
            f"({result.weights[j]}); scale down the inputs or lr, or send float64 weights"
        )
        raise UpdateOverflowError([InputProblem(("new_weights", i), msg)])
    return dataclasses.replace(result, weights=weights)


def _gradient(
    coefficient: FloatArray, grads: FloatArray, divisor: float | None, offset: int
) -> FloatArray:
    """The policy gradient ``coefficient @ grads / B``, each column computed on its own.

    `coefficient` is each sample's; `divisor`, when given, replaces B (see
    `app.core.aggregation`). The sum is `app.core.kernel.weighted_row_sum`'s, so a block
    of columns gets the whole's bits. Raises `UpdateOverflowError` when an entry of the
    gradient overflows, naming it by its index in the whole (`offset` + its own).
    """
    b = coefficient.size if divisor is None else divisor
    grad: FloatArray = weighted_row_sum(coefficient, grads) / b
    # A finite sum proves every entry finite. Otherwise a product or a partial sum of a
    # column may have overflowed although its mean is representable: compute those
    # columns again on operands scaled by powers of two (a (B, k) temporary for k such
    # columns, only then), and look.
    if not math.isfinite(grad.sum()):
        redo = np.flatnonzero(~np.isfinite(grad))
        grad[redo] = mean_product(coefficient, grads[:, redo], b)
        require_finite(offset=offset, grad=grad)
    return grad
