"""A decoded /update request, the same whatever wire format it arrived in."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core import AnyFloatArray, UpdateOptions, UpdateResult, compute_update, in_weights_dtype
from ..core.results import AppliedStep, GradientResult
from ..core.update import apply_gradient, compute_gradient

__all__ = ["StepPayload", "UpdatePayload"]


@dataclass(frozen=True, slots=True)
class UpdatePayload:
    """The arrays, scalars and options of one update, as the decoder produced them.

    Arrays are float64, or float32 from a binary body; they may be read-only views on the
    request body, which nothing here writes to.
    """

    weights: AnyFloatArray
    rewards: AnyFloatArray
    policy_log_probs: AnyFloatArray
    ref_log_probs: AnyFloatArray
    log_prob_grads: AnyFloatArray
    beta: float
    lr: float
    options: UpdateOptions = field(default_factory=UpdateOptions)

    def compute(self) -> UpdateResult:
        """Run the update in float64, answering in the dtype of the weights.

        The core checks the shape rules shared by every format.
        """
        result = compute_update(
            self.weights,
            self.rewards,
            self.policy_log_probs,
            self.ref_log_probs,
            self.log_prob_grads,
            beta=self.beta,
            lr=self.lr,
            options=self.options,
        )
        return in_weights_dtype(result, self.weights.dtype, self.options.column_offset or 0)

    def compute_gradient(self) -> GradientResult:
        """The block's gradient before clipping, its norm partials and the batch's stats."""
        return compute_gradient(
            self.weights,
            self.rewards,
            self.policy_log_probs,
            self.ref_log_probs,
            self.log_prob_grads,
            beta=self.beta,
            lr=self.lr,
            options=self.options,
        )


@dataclass(frozen=True, slots=True)
class StepPayload:
    """A decoded /update/apply request: a block's weights, gradient and step settings."""

    weights: AnyFloatArray
    grad: AnyFloatArray
    lr: float
    grad_norm: float
    options: UpdateOptions = field(default_factory=UpdateOptions)

    def compute(self) -> AppliedStep:
        """The block's step in float64, its new weights in the dtype of its weights."""
        step = apply_gradient(
            self.weights, self.grad, lr=self.lr, grad_norm=self.grad_norm, options=self.options
        )
        return in_weights_dtype(step, self.weights.dtype, self.options.column_offset or 0)
