"""The /update contract: request, response and error bodies (Pydantic v2)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, FailFast, Field

from ..core.options import Baseline, GrpoScale, KlEstimator, UpdateOptions

__all__ = [
    "REFERENCE_EXAMPLE",
    "ErrorItem",
    "Problem",
    "UpdateOptionsModel",
    "UpdateRequest",
    "UpdateResponse",
    "UpdateStatsModel",
]

# Strict: JSON numbers only (integers included), never strings, booleans or null.
# NaN, Infinity and literals beyond float64 (1e999) are rejected by allow_inf_nan=False.
# FailFast stops at a list's first bad entry, so a body of a million strings yields one
# error per field, not a million.
Numbers = Annotated[list[float], FailFast()]
Rows = Annotated[list[Numbers], FailFast()]
GroupId = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Positive = Annotated[float, Field(gt=0)]

REFERENCE_EXAMPLE: dict[str, Any] = {
    "weights": [1.0, 1.0],
    "rewards": [1.0, 1.0],
    "policy_log_probs": [-1.5, -1.5],
    "ref_log_probs": [-1.5, -1.5],
    "log_prob_grads": [[0.5, -0.5], [0.5, -0.5]],
    "beta": 1.0,
    "lr": 0.1,
}


class UpdateOptionsModel(BaseModel):
    """The optional algorithm settings; leaving all out gives the plain update."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    kl_estimator: KlEstimator = Field(
        default="k1",
        description="Per-sample KL estimate of d = policy_log_probs - ref_log_probs: "
        "k1 = d, k2 = d^2/2, k3 = exp(-d) - 1 + d (d bounded to [-20, 20]), abs = |d|; "
        "verl's kl, mse, low_var_kl are aliases of k1, k2, k3.",
    )
    kl_clamp: Positive | None = Field(
        default=None, description="Clamp each kl_i to [-kl_clamp, kl_clamp]."
    )
    reward_clip: Positive | None = Field(
        default=None, description="Clamp each reward to [-reward_clip, reward_clip] first."
    )
    group_ids: Annotated[list[GroupId] | None, FailFast()] = Field(
        default=None,
        description="B integers: the prompt each sample answers. Baselines are computed "
        "within each group; without group_ids the batch is one group.",
    )
    baseline: Baseline = Field(
        default="none",
        description="Advantage from the adjusted reward a: none (A = a), mean (a - group "
        "mean), rloo (a - mean of the others in the group), grpo ((a - group mean) / "
        "(group sample std + 1e-4)).",
    )
    grpo_scale: GrpoScale = Field(
        default="std", description='"none" skips grpo\'s division by the group std (Dr. GRPO).'
    )
    normalize_advantages: bool = Field(
        default=False,
        description="Whiten the advantages over the batch: (A - mean) / sqrt(var + 1e-8).",
    )
    max_grad_norm: Positive | None = Field(
        default=None,
        description="If ||grad|| > max_grad_norm, scale grad by max_grad_norm / (||grad|| + 1e-6).",
    )
    target_kl: Positive | None = Field(
        default=None, description="Adaptive KL: the KL to steer towards (with kl_horizon)."
    )
    kl_horizon: Positive | None = Field(
        default=None, description="Adaptive KL: the horizon, in samples (with target_kl)."
    )

    def to_options(self) -> UpdateOptions:
        """The core's view of these options."""
        return UpdateOptions(
            **{name: getattr(self, name) for name in UpdateOptionsModel.model_fields}
        )


class _UpdateArrays(BaseModel):
    weights: Numbers = Field(min_length=1, description="Current weights, shape (N,).")
    rewards: Numbers = Field(min_length=1, description="Reward per sample, shape (B,).")
    policy_log_probs: Numbers = Field(
        description="Log-probability of each sample under the policy, shape (B,)."
    )
    ref_log_probs: Numbers = Field(
        description="Log-probability of each sample under the reference policy, shape (B,)."
    )
    log_prob_grads: Rows = Field(
        description="Gradient of each sample's policy log-probability w.r.t. the weights, "
        "shape (B, N): B rows of N numbers."
    )
    beta: float = Field(ge=0, description="KL penalty coefficient, >= 0.")
    lr: float = Field(ge=0, description="Learning rate, >= 0.")


# The arrays come first in the schema: Pydantic orders inherited fields by reversed MRO.
class UpdateRequest(UpdateOptionsModel, _UpdateArrays):
    """One policy-gradient update: B samples, N weights, and optional algorithm settings."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [REFERENCE_EXAMPLE]},
    )


class KlEstimatesModel(BaseModel):
    """Batch means of three KL estimators side by side (null if one overflows float64)."""

    k1: float | None = Field(description="Mean of d = policy_log_probs - ref_log_probs.")
    k2: float | None = Field(description="Mean of d^2 / 2.")
    k3: float | None = Field(description="Mean of exp(-d) - 1 + d, d bounded to [-20, 20].")


class UpdateStatsModel(BaseModel):
    """Diagnostics of the update. Standard deviations are sample ones (ddof = 1), 0 for B = 1."""

    kl_mean: float = Field(description="Mean of kl_i, the chosen estimator after kl_clamp.")
    kl_max: float = Field(description="Largest kl_i.")
    reward_mean: float = Field(description="Mean of the rewards (after reward_clip).")
    reward_std: float = Field(description="Standard deviation of the rewards (after reward_clip).")
    adjusted_reward_mean: float = Field(description="Mean of a_i = rewards_i - beta * kl_i.")
    advantage_mean: float = Field(description="Mean of the advantages A_i (after normalisation).")
    advantage_std: float = Field(description="Standard deviation of the advantages A_i.")
    grad_norm: float = Field(description="L2 norm of the policy gradient, before clipping.")
    clipped: bool = Field(description="True if max_grad_norm scaled the gradient down.")
    update_norm: float = Field(description="L2 norm of lr * gradient, the step applied.")
    next_beta: float | None = Field(
        default=None,
        description="Adaptive KL controller's next beta; present only with target_kl and "
        "kl_horizon.",
    )
    kl_estimates: KlEstimatesModel = Field(
        description="Batch means of k1, k2 and k3, whatever estimator the update used."
    )


class UpdateResponse(BaseModel):
    """The updated weights and the diagnostics of the step."""

    weights: list[float] = Field(description="weights + lr * grad, shape (N,).")
    stats: UpdateStatsModel


class ErrorItem(BaseModel):
    """One problem with the request."""

    loc: list[str | int] = Field(description='Path to the offending value, e.g. ["weights", 3].')
    msg: str = Field(description="What is wrong and what was expected.")


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    type: str = Field(description="URI identifying the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    errors: list[ErrorItem] = Field(description="Every problem found, field by field.")
    request_id: str = Field(
        description="The request's id, as in the X-Request-ID response header; quote it "
        "when reporting a problem."
    )
