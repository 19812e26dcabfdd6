"""A contextual bandit whose KL-regularised optimum is known in closed form.

P prompts, K candidate responses each, features ``phi(p, k) = vec(x_p ⊗ y_pk)`` of size
N = d². The policy is ``pi_w(k | p) = softmax_k(w · phi(p, k))``, the reference policy is
``pi_{w0}``, and the hidden reward ``r(p, k) = theta · phi(p, k)`` lies in the same class, so
``E[r] - beta KL(pi || pi_ref)`` is maximised exactly by ``w*(beta) = w0 + theta / beta``
(``pi* ∝ pi_ref exp(r / beta)``). Everything here is exact: sums over all K responses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Bandit", "make_bandit"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Bandit:
    """One problem instance.

    Attributes
    ----------
    features : ndarray, shape (P, K, N)
        ``phi(p, k)``.
    reference_weights : ndarray, shape (N,)
        ``w0``: the initial and reference policy's weights.
    reward_weights : ndarray, shape (N,)
        ``theta``: the hidden reward is ``features @ theta``.
    """

    features: FloatArray
    reference_weights: FloatArray
    reward_weights: FloatArray

    @property
    def rewards(self) -> FloatArray:
        """``r(p, k)``, shape (P, K)."""
        return self.features @ self.reward_weights

    def log_policy(self, weights: FloatArray) -> FloatArray:
        """``log pi_w(k | p)``, shape (P, K)."""
        logits: FloatArray = self.features @ weights
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return log_probs

    def grad_log_policy(
        self, weights: FloatArray, prompts: IntArray, responses: IntArray
    ) -> FloatArray:
        """``∇_w log pi_w(k | p) = phi(p, k) - sum_j pi_w(j | p) phi(p, j)`` per sample.

        Parameters
        ----------
        weights : ndarray, shape (N,)
        prompts, responses : ndarray of int, shape (B,)
            The sampled ``(p, k)`` pairs.

        Returns
        -------
        ndarray, shape (B, N)
        """
        probs = np.exp(self.log_policy(weights))[prompts]  # (B, K)
        mean_features: FloatArray = np.einsum("bk,bkn->bn", probs, self.features[prompts])
        return self.features[prompts, responses] - mean_features

    def expected_reward(self, weights: FloatArray) -> float:
        """``E_p E_{k ~ pi_w} r(p, k)`` with prompts uniform, by enumeration."""
        probs = np.exp(self.log_policy(weights))
        return float((probs * self.rewards).sum(axis=1).mean())

    def kl_to_reference(self, weights: FloatArray) -> float:
        """``E_p KL(pi_w(. | p) || pi_w0(. | p))`` by enumeration."""
        log_p = self.log_policy(weights)
        log_ref = self.log_policy(self.reference_weights)
        return float((np.exp(log_p) * (log_p - log_ref)).sum(axis=1).mean())

    def optimal_weights(self, beta: float) -> FloatArray:
        """``w*(beta) = w0 + theta / beta``, the maximiser of ``E[r] - beta KL`` (beta > 0)."""
        if beta <= 0:
            msg = f"beta is {beta}; the optimum exists only for beta > 0"
            raise ValueError(msg)
        return self.reference_weights + self.reward_weights / beta

    def best_reward(self) -> float:
        """``E_p max_k r(p, k)``: the supremum of the expected reward (beta = 0)."""
        return float(self.rewards.max(axis=1).mean())


def make_bandit(
    seed: int,
    *,
    prompts: int = 64,
    responses: int = 8,
    dim: int = 8,
    logit_std: float = 1.0,
    reward_std: float = 0.25,
) -> Bandit:
    """Draw ``x_p`` and ``y_pk`` standard normal in ``R^dim``, then ``w0`` and ``theta``
    scaled so the reference logits have std `logit_std` and the rewards std `reward_std`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prompts, dim))
    y = rng.standard_normal((prompts, responses, dim))
    features = np.einsum("pi,pkj->pkij", x, y).reshape(prompts, responses, dim * dim)
    w0 = rng.standard_normal(dim * dim)
    w0 *= logit_std / (features @ w0).std()
    theta = rng.standard_normal(dim * dim)
    theta *= reward_std / (features @ theta).std()
    return Bandit(features, w0, theta)
