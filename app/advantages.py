"""From log-probabilities and rewards to per-sample advantages: KL estimators and baselines.

Pure NumPy on (B,) vectors; the (B, N) gradients never pass through here. Overflow is
looked for, not warned about: these run under ``np.errstate(over="ignore",
invalid="ignore")``, as `app.core.compute_update` sets it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from app.options import Groups

__all__ = [
    "GRPO_EPS",
    "KL3_LOG_RATIO_BOUND",
    "WHITEN_EPS",
    "advantages",
    "clamp",
    "kl_estimate",
    "l2_norm",
    "mean",
    "sample_std",
    "scaled_sum_of_squares",
    "whiten",
]

FloatArray = NDArray[np.float64]

# exp(-d) is evaluated on d clipped to this range, as verl does: k3 never overflows.
KL3_LOG_RATIO_BOUND = 20.0
# TRL's GRPOTrainer: advantages / (std + 1e-4), std the sample std of the group.
GRPO_EPS = 1e-4
# TRL's `whiten`: (A - mean) / sqrt(var + 1e-8), var the sample variance of the batch.
WHITEN_EPS = 1e-8
# A sum of squares at least this large is not spoilt by squares that underflowed.
_SQUARES_SAFE_MIN = 2.0**-900


def kl_estimate(log_ratio: FloatArray, estimator: str) -> FloatArray:
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
        return 0.5 * (log_ratio * log_ratio)
    if estimator == "k3":
        bounded = clamp(log_ratio, KL3_LOG_RATIO_BOUND)
        return np.expm1(-bounded) + bounded
    if estimator == "abs":
        return np.abs(log_ratio)
    msg = f"unknown KL estimator {estimator!r}"
    raise ValueError(msg)


def clamp(values: FloatArray, bound: float) -> FloatArray:
    """``values`` limited to ``[-bound, bound]``, NaN kept: `np.clip` without its wrapper.

    >>> clamp(np.array([-3.0, 0.5, 3.0]), 2.0)
    array([-2. ,  0.5,  2. ])
    """
    clamped: FloatArray = np.minimum(np.maximum(values, -bound), bound)
    return clamped


def advantages(adjusted: FloatArray, groups: Groups, baseline: str, grpo_scale: str) -> FloatArray:
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


def mean(values: FloatArray) -> float:
    """Mean that does not overflow while the mean itself is representable."""
    # np.mean's own arithmetic (pairwise sum, then one division) without its Python wrapper.
    result = float(np.add.reduce(values, axis=None)) / values.size if values.size else math.nan
    if not math.isfinite(result) and np.isfinite(values).all():
        scale = _power_of_two_scale(values)
        result = scale * (float(np.add.reduce(values / scale, axis=None)) / values.size)
    return result


def sample_std(values: FloatArray, values_mean: float | None = None) -> float:
    """Sample standard deviation (ddof = 1), 0 for a single value; no overflow in squares.

    `values_mean`, when the caller has it already, is ``mean(values)``.
    """
    if values.size < 2:
        return 0.0
    centred = values - (mean(values) if values_mean is None else values_mean)
    scale, squares = scaled_sum_of_squares(centred)
    return scale * math.sqrt(squares / (values.size - 1))


def l2_norm(values: FloatArray) -> float:
    """Euclidean norm, without overflow or underflow in the squares."""
    scale, squares = scaled_sum_of_squares(values)
    return scale * math.sqrt(squares)


def scaled_sum_of_squares(values: FloatArray) -> tuple[float, float]:
    """``(s, q)`` with ``sum(values**2) = s**2 * q``, q free of overflow and underflow.

    Usually ``s = 1``: a finite sum of squares proves that none overflowed, and one of at
    least 2**-900 loses nothing that matters to squares that underflowed (each is below
    2**-1022). Otherwise the values are divided by a power of two (exactly) first.
    """
    squares = float(values.dot(values))
    if _SQUARES_SAFE_MIN <= squares < math.inf:
        return 1.0, squares
    scale = _power_of_two_scale(values)
    if scale == 0.0 or not math.isfinite(scale):
        # All zeros: (0, 0). An infinite entry: (inf, 1), a norm of inf.
        return scale, float(scale != 0.0)
    scaled = values / scale
    return scale, float(scaled.dot(scaled))


def group_means(values: FloatArray, groups: Groups) -> FloatArray:
    """Mean of `values` within each group, shape (G,)."""
    # Summing values scaled by a power of two (exact) keeps the sums from overflowing.
    scale = _power_of_two_scale(values)
    if scale == 0.0 or not math.isfinite(scale):
        scale = 1.0
    sums = np.bincount(groups.index, weights=values / scale, minlength=groups.sizes.size)
    means: FloatArray = scale * (sums / groups.sizes)
    return means


def _group_sample_std(centred: FloatArray, groups: Groups) -> FloatArray:
    """Sample std of each group from values already centred on their group mean; 0 for n = 1."""
    scale = _power_of_two_scale(centred)
    if scale == 0.0 or not math.isfinite(scale):
        scale = 1.0
    scaled = centred / scale
    squares = np.bincount(groups.index, weights=scaled * scaled, minlength=groups.sizes.size)
    dof = np.maximum(groups.sizes - 1, 1)
    std: FloatArray = scale * np.sqrt(squares / dof)
    return std


def _power_of_two_scale(values: FloatArray) -> float:
    """A power of two within a factor 2 below max |values| (0 for all zeros).

    Dividing by a power of two is exact, and the quotients stay below 2 in magnitude.
    """
    largest = float(np.abs(values).max()) if values.size else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return largest
    return math.ldexp(1.0, math.frexp(largest)[1] - 1)
