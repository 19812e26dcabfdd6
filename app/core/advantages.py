"""From log-probabilities and rewards to per-sample advantages: KL estimators and baselines.

Pure NumPy on (B,) vectors; the (B, N) gradients never pass through here. Overflow is
looked for, not warned about: these run under ``np.errstate(over="ignore",
invalid="ignore")``, as `app.core.update` sets it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .options import Baseline, Groups, GrpoScale, KlEstimatorName
from .results import FloatArray, KlEstimates
from .stable import clamp, mean, power_of_two_scale, sample_std, scaled_sum_of_squares

__all__ = [
    "GRPO_EPS",
    "KL3_LOG_RATIO_BOUND",
    "WHITEN_EPS",
    "advantages",
    "group_means",
    "kl_estimate",
    "kl_estimate_means",
    "whiten",
]

# exp(-d) is evaluated on d clipped to this range, as verl does: k3 never overflows.
KL3_LOG_RATIO_BOUND = 20.0
# TRL's GRPOTrainer: advantages / (std + 1e-4), std the sample std of the group.
GRPO_EPS = 1e-4
# verl's `masked_whiten`: (A - mean) / sqrt(var + 1e-8), var the sample variance.
WHITEN_EPS = 1e-8
# On |d| <= 1, exp(-d) - 1 + d cancels to d**2 / 2 and loses about log2(1 / |d|) bits;
# there k3 is its Taylor series d**2 * sum_{n >= 2} (-d)**(n - 2) / n!, whose terms past
# n = 19 are below 1e-18 of the sum. Coefficients highest first, for Horner's rule.
_K3_SERIES_BOUND = 1.0
_K3_SERIES = tuple(1 / math.factorial(n) for n in range(19, 1, -1))
# Up to this many samples the series is summed value by value: each array operation costs
# about a microsecond whatever its size, the series' 36 of them more than the arithmetic.
_K3_SCALAR_SIZE = 32


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
    k3 is computed on d clipped to [-20, 20], so ``exp`` cannot overflow, as verl's
    ``kl_penalty`` does; within a few ulp of the exact value everywhere: as
    ``expm1(-d) + d`` for ``|d| > 1`` and, where that form cancels, as its Taylor series
    ``d**2 * (1/2 - d/6 + d**2/24 - ...)``. See J. Schulman, "Approximating KL
    Divergence", 2020.

    Examples
    --------
    >>> kl_estimate(np.array([0.5, -1.0]), "k2")
    array([0.125, 0.5  ])
    >>> float(kl_estimate(np.array([1e-9]), "k3")[0])  # expm1(-d) + d: 5.000000746e-19
    4.999999998333333e-19
    """
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        # Halved first: d * d overflows for |d| above 1.34e154, d**2 / 2 only above 1.9e154.
        return (0.5 * log_ratio) * log_ratio
    if estimator == "k3":
        return _k3(clamp(log_ratio, KL3_LOG_RATIO_BOUND))
    if estimator == "abs":
        return np.abs(log_ratio)
    msg = f"unknown KL estimator {estimator!r}"
    raise ValueError(msg)


def kl_estimate_means(log_ratio: FloatArray, known: Mapping[KlEstimatorName, float]) -> KlEstimates:
    """The batch means of k1, k2 and k3, each None where it is not finite.

    Those in `known` (the update's own estimator's mean, computed already) are taken as
    they are.

    Examples
    --------
    >>> kl_estimate_means(np.array([0.5, -0.5]), {})
    KlEstimates(k1=0.0, k2=0.125, k3=0.12762596520638078)
    """
    names: tuple[KlEstimatorName, ...] = ("k1", "k2", "k3")
    means = [known[name] if name in known else _kl_estimate_mean(log_ratio, name) for name in names]
    k1, k2, k3 = (value if math.isfinite(value) else None for value in means)
    return KlEstimates(k1=k1, k2=k2, k3=k3)


def _kl_estimate_mean(log_ratio: FloatArray, estimator: KlEstimatorName) -> float:
    """The batch mean of one estimator's per-sample estimates."""
    if estimator == "k2":
        # mean(d**2 / 2) from one product, scaled so that the squares cannot overflow.
        scale, squares = scaled_sum_of_squares(log_ratio)
        return 0.5 * scale * (scale * (squares / log_ratio.size))
    return mean(kl_estimate(log_ratio, estimator))


def _k3(bounded: FloatArray) -> FloatArray:
    """``exp(-d) - 1 + d`` for d within [-20, 20], accurate near 0 too."""
    k3: FloatArray = np.expm1(-bounded) + bounded
    if bounded.size <= _K3_SCALAR_SIZE:
        return _k3_series_by_value(bounded, k3)
    small = np.abs(bounded) <= _K3_SERIES_BOUND
    if small.any():
        x = -bounded[small]
        series = np.full_like(x, _K3_SERIES[0])
        # In place: a new array per step would cost more than the series' arithmetic.
        for coefficient in _K3_SERIES[1:]:
            series *= x
            series += coefficient
        k3[small] = (x * x) * series
    return k3


def _k3_series_by_value(bounded: FloatArray, k3: FloatArray) -> FloatArray:
    """`_k3`'s series where it applies, value by value, for a few values.

    The same operations in the same order as the array form, each rounded once as NumPy
    rounds it (Python's float arithmetic is IEEE double, with no fused multiply-add), so
    the same bits; for a handful of samples without the dozens of array calls.
    """
    for i, d in enumerate(bounded.tolist()):
        if abs(d) <= _K3_SERIES_BOUND:
            x = -d
            series = _K3_SERIES[0]
            for coefficient in _K3_SERIES[1:]:
                series = series * x + coefficient
            k3[i] = (x * x) * series
    return k3


def advantages(
    adjusted: FloatArray,
    groups: Groups,
    baseline: Baseline,
    grpo_scale: GrpoScale,
    lengths: FloatArray | None = None,
) -> FloatArray:
    """Advantages ``A_i`` from the KL-adjusted rewards ``a_i``, with a per-group baseline.

    Parameters
    ----------
    adjusted : ndarray, shape (B,)
        ``a_i = rewards_i - beta * kl_i``.
    groups : Groups
        The group of each sample (one group for the whole batch without ``group_ids``).
    baseline : {"none", "mean", "rloo", "grpo", "reinforce_pp", "opo"}
        ``"none"``: ``A = a``. ``"mean"``: ``A_i = a_i - mean_g(a)``. ``"rloo"``:
        ``A_i = a_i - (sum_g(a) - a_i) / (n_g - 1)``, computed as the equal
        ``n_g / (n_g - 1) * (a_i - mean_g(a))``; every group needs ``n_g >= 2``.
        ``"grpo"``: ``A_i = (a_i - mean_g(a)) / (std_g(a) + 1e-4)``, std_g the sample
        standard deviation (ddof = 1) of the group, as TRL's GRPOTrainer.
        ``"reinforce_pp"``: ``a_i - mean_g(a)``, then whitened over the batch (see
        `whiten`), as verl's REINFORCE++-baseline. ``"opo"``: ``A_i = a_i - sum_g(L a) /
        sum_g(L)``, the length-weighted group mean, as verl's OPO.
    grpo_scale : {"std", "none", "batch"}
        ``"none"`` skips the division of ``"grpo"`` (Dr. GRPO); ``"batch"`` divides by
        the sample std of the whole batch's ``a`` instead (TRL's ``scale_rewards="batch"``).
    lengths : ndarray, shape (B,), optional
        The number of tokens of each sample; ``"opo"`` needs it.

    Returns
    -------
    ndarray, shape (B,)
        Groups of one sample get ``A_i = 0`` (before the whitening of "reinforce_pp")
        under every baseline but "none" ("rloo" refuses them); verl's OPO leaves them at
        ``a_i``.

    Examples
    --------
    >>> g = Groups.from_ids(np.array([0, 0, 1, 1]))
    >>> advantages(np.array([1.0, 3.0, 5.0, 5.0]), g, "rloo", "std")
    array([-2.,  2.,  0.,  0.])
    >>> advantages(np.array([1.0, 4.0, 5.0, 5.0]), g, "opo", "std", np.array([2.0, 1, 1, 1]))
    array([-1.,  2.,  0.,  0.])
    """
    if baseline == "none":
        return adjusted
    if baseline == "opo":
        if lengths is None:
            msg = "baseline 'opo' needs the sequence lengths"
            raise ValueError(msg)
        return _opo(adjusted, groups, lengths)
    centred = adjusted - group_means(adjusted, groups)[groups.index]
    if baseline == "reinforce_pp":
        return whiten(centred)
    if baseline == "mean" or (baseline == "grpo" and grpo_scale == "none"):
        return centred
    if baseline == "rloo":
        sizes = groups.sizes[groups.index]
        return sizes / (sizes - 1) * centred
    if baseline == "grpo" and grpo_scale == "batch":
        return centred / (sample_std(adjusted) + GRPO_EPS)
    if baseline == "grpo":
        std = _group_sample_std(centred, groups)
        return centred / (std[groups.index] + GRPO_EPS)
    msg = f"unknown baseline {baseline!r}"
    raise ValueError(msg)


def _opo(adjusted: FloatArray, groups: Groups, lengths: FloatArray) -> FloatArray:
    """``a_i`` minus its group's length-weighted mean; 0 in groups of one sample."""
    scale = _safe_scale(adjusted)
    # The values scaled by a power of two (exact) keep the weighted sums from overflowing.
    weighted = np.bincount(
        groups.index, weights=lengths * (adjusted / scale), minlength=groups.sizes.size
    )
    total = np.bincount(groups.index, weights=lengths, minlength=groups.sizes.size)
    centred = adjusted - (scale * (weighted / total))[groups.index]
    # A single sample's weighted mean is itself, up to a rounding that must not survive.
    opo: FloatArray = np.where(groups.sizes[groups.index] > 1, centred, 0.0)
    return opo


def whiten(values: FloatArray) -> FloatArray:
    """Shift to zero mean and scale to unit sample std: ``(A - mean) / sqrt(var + 1e-8)``.

    verl's ``masked_whiten`` over one value per sample (TRL removed its ``whiten`` in
    PR #2480); the variance is the sample variance (ddof = 1). A batch of one sample
    becomes 0.

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
    scale = _safe_scale(values)
    sums = np.bincount(groups.index, weights=values / scale, minlength=groups.sizes.size)
    means: FloatArray = scale * (sums / groups.sizes)
    return means


def _group_sample_std(centred: FloatArray, groups: Groups) -> FloatArray:
    """Sample std of each group from values already centred on their group mean; 0 for n = 1."""
    scale = _safe_scale(centred)
    scaled = centred / scale
    squares = np.bincount(groups.index, weights=scaled * scaled, minlength=groups.sizes.size)
    dof = np.maximum(groups.sizes - 1, 1)
    std: FloatArray = scale * np.sqrt(squares / dof)
    return std


def _safe_scale(values: FloatArray) -> float:
    """`power_of_two_scale`, or 1 where it is no divisor (all zeros, or not finite)."""
    scale = power_of_two_scale(values)
    return scale if scale != 0.0 and math.isfinite(scale) else 1.0
