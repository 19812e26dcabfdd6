"""The KL penalty in the loss: its gradient coefficient per sample, and its batch mean.

Sequence-level estimators of ``delta_i = policy_log_probs_i - ref_log_probs_i``, the same
four as the KL in the reward (`app.core.advantages.kl_estimate`). A per-token k2 or k3
(the estimator summed over tokens) is a different estimator, which needs per-token
log-probs; it is not offered. Pure NumPy on (B,) vectors, under the update's errstate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .advantages import KL3_LOG_RATIO_BOUND, kl_estimate
from .options import KlEstimatorName
from .results import FloatArray
from .stable import clamp, mean

__all__ = ["KlLossTerms", "kl_loss_terms"]


@dataclass(frozen=True, slots=True)
class KlLossTerms:
    """``k'(delta_i)`` (0 where a clamp holds the estimate) and the mean of ``k(delta_i)``."""

    derivative: FloatArray
    mean: float


def kl_loss_terms(
    log_ratio: FloatArray, kl_type: KlEstimatorName, bound: float | None
) -> KlLossTerms:
    """The derivative of ``k(delta)`` with respect to ``logp``, and the batch mean of ``k``.

    Parameters
    ----------
    log_ratio : ndarray, shape (B,)
        ``delta_i = policy_log_probs_i - ref_log_probs_i``.
    kl_type : {"k1", "k2", "k3", "abs"}
        ``k1 = delta`` (``k' = 1``), ``k2 = delta**2 / 2`` (``k' = delta``),
        ``k3 = exp(-delta) - 1 + delta`` (``k' = 1 - exp(-delta)``; delta bounded to
        [-20, 20] first, as in the reward, so ``k' = 0`` beyond), ``abs = |delta|``
        (``k' = sign(delta)``).
    bound : float, optional
        `kl_loss_clamp`: ``k`` clamped to ``[-bound, bound]``, with ``k' = 0`` where the
        clamp holds it (``torch.clamp`` passes no gradient there), as verl and OpenRLHF
        clamp at 10.

    Returns
    -------
    KlLossTerms
        The update subtracts ``kl_loss_coef * k'(delta_i)`` from each sample's coefficient.

    Examples
    --------
    >>> terms = kl_loss_terms(np.array([0.5, -3.0]), "k2", 2.0)
    >>> terms.derivative, terms.mean  # k2(-3) = 4.5 is clamped to 2: no gradient
    (array([0.5, 0. ]), 1.0625)
    """
    value = kl_estimate(log_ratio, kl_type)
    if kl_type == "k1":
        derivative = np.ones_like(log_ratio)
    elif kl_type == "k2":
        derivative = log_ratio
    elif kl_type == "k3":
        inside = np.abs(log_ratio) <= KL3_LOG_RATIO_BOUND
        derivative = np.where(inside, -np.expm1(-log_ratio), 0.0)
    else:
        derivative = np.sign(log_ratio)
    if bound is not None:
        held = np.abs(value) > bound
        derivative = np.where(held, 0.0, derivative)
        value = clamp(value, bound)
    return KlLossTerms(derivative, mean(value))
