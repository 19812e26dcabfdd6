"""The policy loss: each sample's coefficient on its log-prob gradient, and the ratio stats.

A trainer's clipped surrogate, differentiated by hand at sequence level. With ``A_i`` the
advantage, ``logp_i`` the policy's log-prob and ``old_i`` the log-prob the rollout was
sampled with, the gradient of the loss is ``-sum_i c_i * coef_i * grad logp_i`` (``c_i``
the aggregation weight, `app.core.aggregation`); this module gives ``coef_i``.

Pure NumPy on (B,) vectors, under the update's ``np.errstate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import UpdateOptions
from .results import FloatArray, RatioStats
from .stable import clamp, fraction, mean

__all__ = ["PolicyTerms", "policy_coefficients"]


@dataclass(frozen=True, slots=True)
class PolicyTerms:
    """The coefficient of each ``grad logp_i`` (before TIS, KL loss and aggregation)."""

    coefficient: FloatArray
    stats: RatioStats | None  # None under "pg", which has no ratio


def policy_coefficients(
    advantage: FloatArray,
    log_probs: FloatArray,
    old_log_probs: FloatArray | None,
    lengths: FloatArray | None,
    options: UpdateOptions,
) -> PolicyTerms:
    """The coefficient on ``grad logp_i`` of the chosen policy loss.

    Parameters
    ----------
    advantage : ndarray, shape (B,)
        ``A_i``, from the advantage pipeline (`app.core.advantages`).
    log_probs : ndarray, shape (B,)
        ``logp_i``: `policy_log_probs`, the policy being updated.
    old_log_probs : ndarray, shape (B,), optional
        ``old_i``, the log-probs the rollouts were sampled with; omitted, ``old = logp``
        and every ratio is exactly 1.
    lengths : ndarray, shape (B,), optional
        ``L_i``, the number of tokens of each sample; "gspo" needs them.
    options : UpdateOptions
        `policy_loss`, `clip_eps_low`, `clip_eps_high`, `dual_clip_c`, `log_ratio_clamp`.

    Returns
    -------
    PolicyTerms

    Notes
    -----
    With ``eps_l = clip_eps_low``, ``eps_h = clip_eps_high``, ``c = dual_clip_c`` and
    ``clamp`` the clamp to ``[-log_ratio_clamp, log_ratio_clamp]``:

    - ``"pg"`` (REINFORCE): ``coef_i = A_i``.
    - ``"ppo_clip"``: ``rho_i = exp(clamp(logp_i - old_i))``; the loss
      ``-min(rho A, clip(rho, 1 - eps_l, 1 + eps_h) A)`` (Schulman et al. 2017), with
      dual clip ``max(., c A)`` for ``A < 0`` (Ye et al. 2020), has the gradient
      ``coef_i = m_i A_i rho_i``, ``m_i = 1`` iff ``A_i > 0`` and ``rho_i <= 1 + eps_h``,
      or ``A_i < 0`` and ``rho_i >= 1 - eps_l`` and (no dual clip or ``rho_i <= c``);
      ``m_i = 0`` where ``|logp_i - old_i|`` is beyond the clamp, whose gradient is 0.
    - ``"gspo"`` (Zheng et al. 2025): the same with ``rho_i = exp(clamp((logp_i - old_i)
      / L_i))``; the ``1 / L_i`` of ``grad rho`` cancels the ``L_i`` tokens the
      sequence's surrogate is summed over.
    - ``"cispo"`` (MiniMax 2025): ``-sg(clip(rho, 1 - eps_l, 1 + eps_h)) A logp``, so
      ``coef_i = clip(rho_i, 1 - eps_l, 1 + eps_h) A_i``: no sample loses its gradient.

    Examples
    --------
    >>> terms = policy_coefficients(np.array([1.0, 1.0, -1.0]), np.array([0.0, 0.5, 0.5]),
    ...                             np.zeros(3), None, UpdateOptions(policy_loss="ppo_clip"))
    >>> terms.coefficient  # exp(0.5) = 1.65 > 1.2: the second sample is clipped
    array([ 1.        ,  0.        , -1.64872127])
    >>> terms.stats.clip_frac_high, terms.stats.active_frac
    (0.3333333333333333, 0.6666666666666666)
    """
    if options.policy_loss == "pg":
        return PolicyTerms(advantage, None)
    old = log_probs if old_log_probs is None else old_log_probs
    log_ratio = log_probs - old
    if options.policy_loss == "gspo":
        if lengths is None:
            msg = "policy_loss 'gspo' needs the sequence lengths"
            raise ValueError(msg)
        log_ratio = log_ratio / lengths
    bound = float(options.log_ratio_clamp)
    beyond = np.abs(log_ratio) > bound
    ratio = np.exp(clamp(log_ratio, bound))
    low, high = 1.0 - float(options.clip_eps_low), 1.0 + options.eps_high
    positive, negative = advantage > 0, advantage < 0
    above, below = ratio > high, ratio < low
    dual = None if options.dual_clip_c is None else negative & (ratio > options.dual_clip_c)
    if options.policy_loss == "cispo":
        clipped = np.clip(ratio, low, high)
        coefficient = advantage * clipped
        active = advantage != 0
        clip_frac = fraction(ratio != clipped)  # as verl counts it, whatever the sign of A
    else:
        active = ((positive & ~above) | (negative & ~below)) & ~beyond
        if dual is not None:
            active &= ~dual
        # where(), not a product: 0 * inf must stay 0 for a masked, overflowing ratio.
        coefficient = advantage * np.where(active, ratio, 0.0)
        clip_frac = None
    clip_frac_low, clip_frac_high = fraction(negative & below), fraction(positive & above)
    stats = RatioStats(
        ratio_mean=mean(ratio),
        ratio_min=float(ratio.min()),
        ratio_max=float(ratio.max()),
        clip_frac=clip_frac_low + clip_frac_high if clip_frac is None else clip_frac,
        clip_frac_low=clip_frac_low,
        clip_frac_high=clip_frac_high,
        dual_clip_frac=None if dual is None else fraction(dual),
        log_ratio_clamped_frac=fraction(beyond),
        active_frac=fraction(active),
        approx_kl_old=mean(old - log_probs),
    )
    return PolicyTerms(coefficient, stats)
