"""The update with every option at its default, in the fewest array operations.

`compute_update` with no options runs the same steps as with any: every input converted
and checked, each option's stage asked whether it applies, each intermediate looked at for
values that are not finite. For a small update those steps cost several times its
arithmetic. `plain_update` takes the default path's arithmetic alone, the same functions in
the same order, so its answer is the general path's bit for bit, and checks the outcome
instead of every input: it answers only when the result proves the inputs valid, and
otherwise declines (None), for the general path to compute or word the refusal.

Why a finite outcome proves finite inputs: every input value reaches a reported quantity
through operations that keep a NaN or an infinity (a sum, a product by a finite number
that is not 0, an addition of finite numbers). ``weights`` reach the new weights,
``rewards`` the reward mean, both log-probs the KL mean, and each entry of
``log_prob_grads`` its column of the gradient, when no sample's coefficient is 0 (a
``0 * inf`` is left to the general path). A value that is not finite in the (B,) arrays is
found before the gradient; one in the weights or the gradients only after it, so their
refusal computes the gradient twice, here and on the general path.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .advantages import kl_estimate_means
from .kernel import weighted_row_sum
from .norms import CHUNK_COLUMNS, chunk_partials, norm_of_partials, single_chunk_norm
from .results import FloatArray, UpdateResult, UpdateStats
from .stable import mean, sample_std

__all__ = ["plain_update"]


def plain_update(
    weights: ArrayLike,
    rewards: ArrayLike,
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    log_prob_grads: ArrayLike,
    beta: float,
    lr: float,
) -> UpdateResult | None:
    """`compute_update` with default options, or None when it may refuse or fall back.

    Parameters
    ----------
    weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads, beta, lr
        As in `app.core.update.rlhf_weight_update`.

    Returns
    -------
    UpdateResult or None
        The general path's result, bit for bit; None when an input does not convert to
        a float64 array of the expected shape, `beta` or `lr` is not a Python float that
        is finite and >= 0, a sample's coefficient is 0, or a quantity the general path
        checks is not finite: that path then answers, with its own errors and its
        handling of overflow.

    Notes
    -----
    Runs under ``np.errstate(over="ignore", invalid="ignore")``, as `compute_update` does.
    """
    if not (_valid_scalar(beta) and _valid_scalar(lr)):
        return None
    try:
        w = np.asarray(weights, dtype=np.float64)
        r = np.asarray(rewards, dtype=np.float64)
        policy = np.asarray(policy_log_probs, dtype=np.float64)
        ref = np.asarray(ref_log_probs, dtype=np.float64)
        grads = np.asarray(log_prob_grads, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    batch_size = r.size
    if not (
        w.ndim == 1
        and r.ndim == 1
        and grads.ndim == 2
        and w.size
        and batch_size
        and policy.shape == ref.shape == r.shape
        and grads.shape == (batch_size, w.size)
    ):
        return None
    # Steps 1 to 5 with their defaults: k1 unclamped, no baseline, REINFORCE over 1/B.
    kl = policy - ref
    # `add_product`'s result whenever its sum is finite, and that sum is also the mean's.
    adjusted = r + -beta * kl
    adjusted_sum = float(adjusted.sum())
    # Before the (B, N) work: a finite sum of the adjusted rewards proves rewards and both
    # log-probs finite, so a refusal for those costs no gradient here.
    if not math.isfinite(adjusted_sum) or np.count_nonzero(adjusted) != batch_size:
        return None
    grad: FloatArray = weighted_row_sum(adjusted, grads) / batch_size
    if grad.size <= CHUNK_COLUMNS:
        grad_norm = single_chunk_norm(grad)
    else:
        grad_norm = norm_of_partials(chunk_partials(grad))
    # Step 7; lr = 0 returns the weights bit for bit (w + 0.0 would turn -0.0 into 0.0).
    new_weights = w + lr * grad if lr else w.copy()
    kl_mean = mean(kl)
    reward_mean = mean(r)
    adjusted_mean = adjusted_sum / batch_size  # `mean`'s, for a finite sum
    stats = UpdateStats(
        kl_mean=kl_mean,
        kl_max=float(kl.max()),
        reward_mean=reward_mean,
        reward_std=sample_std(r, reward_mean),
        adjusted_reward_mean=adjusted_mean,
        advantage_mean=adjusted_mean,
        advantage_std=sample_std(adjusted, adjusted_mean),
        grad_norm=grad_norm,
        clipped=False,
        update_norm=lr * grad_norm,
        next_beta=None,
        kl_estimates=kl_estimate_means(kl, {"k1": kl_mean}),
    )
    reported = (
        kl_mean,
        stats.kl_max,
        reward_mean,
        stats.reward_std,
        adjusted_mean,
        stats.advantage_std,
        grad_norm,
        stats.update_norm,
        float(new_weights.sum()),
    )
    if not all(map(math.isfinite, reported)):
        return None
    return UpdateResult(weights=new_weights, stats=stats)


def _valid_scalar(value: object) -> bool:
    return type(value) is float and math.isfinite(value) and value >= 0
