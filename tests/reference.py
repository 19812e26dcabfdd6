"""An independent pure-Python reference of the update: exact sums with `math.fsum`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The reference example of the product description; its answer is [1.05, 0.95].
EXAMPLE: dict[str, Any] = {
    "weights": [1.0, 1.0],
    "rewards": [1.0, 1.0],
    "policy_log_probs": [-1.5, -1.5],
    "ref_log_probs": [-1.5, -1.5],
    "log_prob_grads": [[0.5, -0.5], [0.5, -0.5]],
    "beta": 1.0,
    "lr": 0.1,
}


@dataclass(frozen=True)
class ReferenceUpdate:
    weights: list[float]
    grad: list[float]
    # Sum over samples of |adjusted_i * grads[i][j]|, per column: bounds the rounding error
    # of any summation order.
    abs_terms: list[float]
    kl: list[float]
    adjusted: list[float]


def reference_update(
    weights: Sequence[float],
    rewards: Sequence[float],
    policy_log_probs: Sequence[float],
    ref_log_probs: Sequence[float],
    log_prob_grads: Sequence[Sequence[float]],
    beta: float,
    lr: float,
) -> ReferenceUpdate:
    """The update, column by column, each column's sum correctly rounded."""
    b = len(rewards)
    kl = [p - q for p, q in zip(policy_log_probs, ref_log_probs, strict=True)]
    adjusted = [r - beta * k for r, k in zip(rewards, kl, strict=True)]
    columns = list(zip(*log_prob_grads, strict=True))
    grad = [math.fsum(a * g for a, g in zip(adjusted, col, strict=True)) / b for col in columns]
    abs_terms = [
        math.fsum(abs(a * g) for a, g in zip(adjusted, col, strict=True)) for col in columns
    ]
    new_weights = [w + lr * g for w, g in zip(weights, grad, strict=True)]
    return ReferenceUpdate(new_weights, grad, abs_terms, kl, adjusted)
