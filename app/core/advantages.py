"""From log-probabilities and rewards to per-sample advantages: KL estimators and baselines.

Pure NumPy on (B,) vectors; the (B, N) gradients never pass through here. Overflow is
looked for, not warned about: these run under ``np.errstate(over="ignore",
invalid="ignore")``, as `app.core.update` sets it.
"""

from __future__ import annotations

import math

import numpy as np

from .options import Baseline, Groups, GrpoScale, KlEstimatorName
from .results import FloatArray
from .stable import clamp, mean, power_of_two_scale, sample_std

__all__ = [
    "GRPO_EPS",
    "KL3_LOG_RATIO_BOUND",
    "WHITEN_EPS",
    "advantages",
    "group_means",
    "kl_estimate",
    "whiten",
]

# exp(-d) is evaluated on d clipped to this range, as verl does: k3 never overflows.
KL3_LOG_RATIO_BOUND = 20.0
# TRL's GRPOTrainer: advantages / (std + 1e-4), std the sample std of the group.
GRPO_EPS = 1e-4
# TRL's `whiten`: (A - mean) / sqrt(var + 1e-8), var the sample variance of the batch.
WHITEN_EPS = 1e-8


def kl_estimate(log_ratio: FloatArray, estimator: KlEstimatorName) -> FloatArray:
    """Per-sample estimate of KL(policy || reference) from ``d = log pi - log pi_ref``.

    Parameters
    ----------
    log_ratio : ndarray, shape (B,)
        ``d_i = policy_log_probs_i - ref_log_probs_i`` for samples drawn from the policy.
    estimator : {"k1", "k2", "k3", "abs"}
        ``k1 = d`` (unbiased, can be negative); ``k2 = d**2 / 2``; ``k3 = exp(-d) - 1 + d``
        (unbiased and never negative); ``abs = |d|``.

    Returns
    -------
    ndarray, shape (B,)

    Notes
    -----
    k3 is computed as ``expm1(-d) + d`` on d clipped to [-20, 20], so ``exp`` cannot
    overflow and small d keep their precision. See J. Schulman, "Approximating KL
    Divergence", 2020.

    Examples
    --------
    >>> kl_estimate(np.array([0.5, -1.0]), "k2")
    array([0.125, 0.5  ])
    """
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        # Halved first: d * d overflows for |d| above 1.34e154, d**2 / 2 only above 1.9e154.
        return (0.5 * log_ratio) * log_ratio
    if estimator == "k3":
        bounded = clamp(log_ratio, KL3_LOG_RATIO_BOUND)
        return np.expm1(-bounded) + bounded
    if estimator == "abs":
        return np.abs(log_ratio)
    msg = f"unknown KL estimator {estimator!r}"
    raise ValueError(msg)


def advantages(
    adjusted: FloatArray, groups: Groups, baseline: Baseline, grpo_scale: GrpoScale
) -> FloatArray:
    """Advantages ``A_i`` from the KL-adjusted rewards ``a_i``, with a per-group baseline.

    Parameters
    ----------
    adjusted : ndarray, shape (B,)
        ``a_i = rewards_i - beta * kl_i``.
    groups : Groups
        The group of each sample (one group for the whole batch without ``group_ids``).
    baseline : {"none", "mean", "rloo", "grpo"}
        ``"none"``: ``A = a``. ``"mean"``: ``A_i = a_i - mean_g(a)``. ``"rloo"``:
        ``A_i = a_i - (sum_g(a) - a_i) / (n_g - 1)``, computed as the equal
        ``n_g / (n_g - 1) * (a_i - mean_g(a))``; every group needs ``n_g >= 2``.
        ``"grpo"``: ``A_i = (a_i - mean_g(a)) / (std_g(a) + 1e-4)``, std_g the sample
        standard deviation (ddof = 1) of the group, as TRL's GRPOTrainer.
    grpo_scale : {"std", "none"}
        ``"none"`` skips the division of ``"grpo"`` (Dr. GRPO).

    Returns
    -------
    ndarray, shape (B,)
        Groups of one sample get ``A_i = 0`` under "mean" and "grpo".

    Examples
    --------
    >>> g = Groups.from_ids(np.array([0, 0, 1, 1]))
    >>> advantages(np.array([1.0, 3.0, 5.0, 5.0]), g, "rloo", "std")
    array([-2.,  2.,  0.,  0.])
    """
    if baseline == "none":
        return adjusted
    centred = adjusted - group_means(adjusted, groups)[groups.index]
    if baseline == "mean" or (baseline == "grpo" and grpo_scale == "none"):
        return centred
    if baseline == "rloo":
        sizes = groups.sizes[groups.index]
        return sizes / (sizes - 1) * centred
    if baseline == "grpo":
        std = _group_sample_std(centred, groups)
        return centred / (std[groups.index] + GRPO_EPS)
    msg = f"unknown baseline {baseline!r}"
    raise ValueError(msg)


def whiten(values: FloatArray) -> FloatArray:
    """Shift to zero mean and scale to unit sample std: ``(A - mean) / sqrt(var + 1e-8)``.

    TRL's ``whiten``; the variance is the sample variance (ddof = 1). A batch of one
    sample becomes 0.

    Examples
    --------
    >>> whiten(np.array([1.0, 3.0]))
    array([-0.70710678,  0.70710678])
    """
    centred = values - mean(values)
    # hypot(std, 1e-4) = sqrt(var + 1e-8), without squaring a huge std into overflow.
    return centred / math.hypot(sample_std(centred), math.sqrt(WHITEN_EPS))


def group_means(values: FloatArray, groups: Groups) -> FloatArray:
    """Mean of `values` within each group, shape (G,)."""
    # Summing values scaled by a power of two (exact) keeps the sums from overflowing.
    scale = power_of_two_scale(values)
    if scale == 0.0 or not math.isfinite(scale):
        scale = 1.0
    sums = np.bincount(groups.index, weights=values / scale, minlength=groups.sizes.size)
    means: FloatArray = scale * (sums / groups.sizes)
    return means


def _group_sample_std(centred: FloatArray, groups: Groups) -> FloatArray:
    """Sample std of each group from values already centred on their group mean; 0 for n = 1."""
    scale = power_of_two_scale(centred)
    if scale == 0.0 or not math.isfinite(scale):
        scale = 1.0
    scaled = centred / scale
    squares = np.bincount(groups.index, weights=scaled * scaled, minlength=groups.sizes.size)
    dof = np.maximum(groups.sizes - 1, 1)
    std: FloatArray = scale * np.sqrt(squares / dof)
    return std
