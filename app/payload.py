"""A decoded /update request, the same whatever wire format it arrived in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.core import UpdateResult, compute_update
from app.options import DEFAULT_OPTIONS, UpdateOptions

__all__ = ["UpdatePayload"]


@dataclass(frozen=True, slots=True)
class UpdatePayload:
    """The arrays, scalars and options of one update, as the decoder produced them."""

    weights: NDArray[np.float64]
    rewards: NDArray[np.float64]
    policy_log_probs: NDArray[np.float64]
    ref_log_probs: NDArray[np.float64]
    log_prob_grads: NDArray[np.float64]
    beta: float
    lr: float
    options: UpdateOptions = DEFAULT_OPTIONS

    def compute(self) -> UpdateResult:
        """Run the update; the core checks the shape rules shared by every format."""
        return compute_update(
            self.weights,
            self.rewards,
            self.policy_log_probs,
            self.ref_log_probs,
            self.log_prob_grads,
            beta=self.beta,
            lr=self.lr,
            options=self.options,
        )
