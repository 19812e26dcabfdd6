"""The /update contract: request, response and error bodies (Pydantic v2)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, FailFast, Field

__all__ = ["ErrorItem", "Problem", "UpdateRequest", "UpdateResponse", "UpdateStatsModel"]

# Strict: JSON numbers only (integers included), never strings, booleans or null.
# NaN, Infinity and literals beyond float64 (1e999) are rejected by allow_inf_nan=False.
# FailFast stops at a list's first bad entry, so a body of a million strings yields one
# error per field, not a million.
Numbers = Annotated[list[float], FailFast()]
Rows = Annotated[list[Numbers], FailFast()]

REFERENCE_EXAMPLE: dict[str, Any] = {
    "weights": [1.0, 1.0],
    "rewards": [1.0, 1.0],
    "policy_log_probs": [-1.5, -1.5],
    "ref_log_probs": [-1.5, -1.5],
    "log_prob_grads": [[0.5, -0.5], [0.5, -0.5]],
    "beta": 1.0,
    "lr": 0.1,
}


class UpdateRequest(BaseModel):
    """One policy-gradient update: B samples, N weights."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [REFERENCE_EXAMPLE]},
    )

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


class UpdateStatsModel(BaseModel):
    """Diagnostics of the update."""

    kl_mean: float = Field(description="Mean of kl_i = policy_log_probs_i - ref_log_probs_i.")
    reward_mean: float = Field(description="Mean of the rewards.")
    adjusted_reward_mean: float = Field(description="Mean of rewards_i - beta * kl_i.")
    grad_norm: float = Field(description="L2 norm of the policy gradient.")
    update_norm: float = Field(description="L2 norm of lr * gradient, the step applied.")


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
