"""Truncated importance sampling against the rollout engine: one weight per sample.

The engine that sampled the rollouts (vLLM, SGLang) computes log-probs that differ from
the trainer's; a sequence-level weight ``exp(old - behavior)``, truncated or masked and
held constant, corrects the policy term of the loss for it (Yao et al., "Your Efficient
RL Framework Secretly Brings You Off-Policy RL Training", 2025; verl's rollout
correction). Pure NumPy on (B,) vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import UpdateOptions
from .results import FloatArray, TisStats
from .stable import clamp, fraction, mean

__all__ = ["TIS_LOG_RATIO_BOUND", "TisWeights", "tis_weights"]

# The log-weight is bounded before exp, as verl bounds its log-ratios: no weight overflows.
TIS_LOG_RATIO_BOUND = 20.0


@dataclass(frozen=True, slots=True)
class TisWeights:
    """``w_i``, the factor of each sample's policy term, and its statistics."""

    weights: FloatArray
    stats: TisStats


def tis_weights(
    old_log_probs: FloatArray, behavior_log_probs: FloatArray, options: UpdateOptions
) -> TisWeights:
    """The truncated importance weights of `tis_mode`.

    Parameters
    ----------
    old_log_probs : ndarray, shape (B,)
        The trainer's log-probs of the rollouts (`old_log_probs`, else `policy_log_probs`).
    behavior_log_probs : ndarray, shape (B,)
        The rollout engine's log-probs of the same samples.
    options : UpdateOptions
        `tis_mode`, `tis_max`, `tis_min`, `tis_batch_normalize`.

    Returns
    -------
    TisWeights

    Notes
    -----
    ``r_i = exp(clamp(old_i - behavior_i, -20, 20))``. ``"truncate"``: ``w_i =
    clip(r_i, tis_min, tis_max)`` (no lower bound without `tis_min`); ``"mask"``: ``w_i =
    r_i`` where ``tis_min <= r_i <= tis_max``, else 0. With `tis_batch_normalize` the
    weights are then divided by their batch mean (left at 0 if they are all 0). The
    effective sample size is ``tis_ess = 1 / mean((w / mean(w))**2)``, 0 when every
    weight is 0.

    Examples
    --------
    >>> tis = tis_weights(np.array([0.0, 1.0]), np.zeros(2), UpdateOptions(tis_mode="mask"))
    >>> tis.weights, tis.stats.tis_masked_frac  # e = 2.718 > tis_max = 2
    (array([1., 0.]), 0.5)
    """
    raw = np.exp(clamp(old_log_probs - behavior_log_probs, TIS_LOG_RATIO_BOUND))
    high = float(options.tis_max)
    low = None if options.tis_min is None else float(options.tis_min)
    outside = (raw > high) if low is None else (raw > high) | (raw < low)
    if options.tis_mode == "mask":
        weights: FloatArray = np.where(outside, 0.0, raw)
        truncated, masked = 0.0, fraction(outside)
    else:
        weights = np.clip(raw, low, high)
        truncated, masked = fraction(outside), 0.0
    weights_mean = mean(weights)
    if options.tis_batch_normalize and weights_mean > 0:
        weights = weights / weights_mean
        weights_mean = mean(weights)
    if weights_mean > 0:
        relative = weights / weights_mean
        ess = 1.0 / mean(relative * relative)
    else:
        ess = 0.0
    stats = TisStats(
        tis_weight_mean=weights_mean,
        tis_weight_min=float(weights.min()),
        tis_weight_max=float(weights.max()),
        tis_truncated_frac=truncated,
        tis_masked_frac=masked,
        tis_ess=ess,
    )
    return TisWeights(weights, stats)
