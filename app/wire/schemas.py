"""The /update contract: request, response and error bodies (Pydantic v2)."""

from __future__ import annotations

import math
from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, FailFast, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from ..core.norms import CHUNK_COLUMNS
from ..core.optimizers import Optimizer, OptimizerState, OptimizerType
from ..core.options import (
    Baseline,
    GrpoScale,
    KlEstimator,
    KlEstimatorName,
    LossAgg,
    PolicyLoss,
    TisMode,
    UpdateOptions,
)

__all__ = [
    "REFERENCE_EXAMPLE",
    "ErrorItem",
    "OptimizerModel",
    "OptimizerStateModel",
    "OptionInfo",
    "Problem",
    "ServiceInfo",
    "ServiceLimits",
    "UpdateOptionsModel",
    "UpdateRequest",
    "UpdateResponse",
    "UpdateStatsModel",
    "describe_options",
]

# Strict: JSON numbers only (integers included), never strings, booleans or null.
# NaN, Infinity and literals beyond float64 (1e999) are rejected by allow_inf_nan=False.
# FailFast stops at a list's first bad entry, so a body of a million strings yields one
# error per field, not a million.
Numbers = Annotated[list[float], FailFast()]
Rows = Annotated[list[Numbers], FailFast()]
OptionalNumbers = Annotated[list[float] | None, FailFast()]
GroupId = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
SequenceLength = Annotated[int, Field(ge=1, le=2**63 - 1)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
# The error type of a `reward_clip` that is neither a number nor a pair of numbers; the
# wire's messages word it.
REWARD_CLIP_ERROR = "reward_clip_type"


def _reward_clip(value: object) -> float | tuple[float, float] | None:
    """A finite number or a pair [low, high] of finite numbers; the core checks the ranges."""
    if value is None or _is_number(value):
        return None if value is None else float(value)  # type: ignore[arg-type]
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value)):
        return float(value[0]), float(value[1])
    raise PydanticCustomError(REWARD_CLIP_ERROR, "expected a number > 0 or [low, high]")


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= 1.7976931348623157e308
    )


RewardClip = Annotated[
    float | tuple[float, float] | None,
    PlainValidator(_reward_clip),
    WithJsonSchema(
        {
            "anyOf": [
                {"exclusiveMinimum": 0, "type": "number"},
                {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                {"type": "null"},
            ]
        }
    ),
]

Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimizerModel(BaseModel):
    """torch.optim's settings of SGD, Adam and AdamW; the top-level `lr` is the learning rate."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    type: OptimizerType = Field(
        default="sgd", description="sgd (torch.optim.SGD), adam (Adam), adamw (AdamW)."
    )
    momentum: NonNegative = Field(default=0.0, description="SGD: the momentum factor mu.")
    dampening: NonNegative = Field(default=0.0, description="SGD: the dampening tau.")
    nesterov: bool = Field(
        default=False, description="SGD: Nesterov momentum (momentum > 0, dampening 0)."
    )
    weight_decay: NonNegative | None = Field(
        default=None,
        description="L2 penalty lambda (SGD, Adam: g + lambda w; AdamW: w (1 - lr lambda)); "
        "default 0, for adamw 0.01.",
    )
    # A list of two, not a tuple: the options are validated from decoded JSON in strict
    # mode, where a tuple field would take only a Python tuple.
    betas: Annotated[list[Beta], Field(min_length=2, max_length=2)] = Field(
        default=[0.9, 0.999], description="Adam, AdamW: [beta1, beta2], each in [0, 1)."
    )
    eps: NonNegative = Field(default=1e-8, description="Adam, AdamW: added to sqrt(v).")
    amsgrad: bool = Field(default=False, description="Adam, AdamW: keep the max of v.")

    def to_core(self) -> Optimizer:
        """The core's view of these settings."""
        values = {name: getattr(self, name) for name in OptimizerModel.model_fields}
        return Optimizer(**values | {"betas": tuple(self.betas)})


class OptimizerStateModel(BaseModel):
    """The optimizer's state, named as torch's ``state_dict()["state"][0]``."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    step: Annotated[int, Field(ge=0, le=2**63 - 1)] = Field(
        default=0, description="Steps taken so far (returned for SGD too)."
    )
    exp_avg: OptionalNumbers = Field(default=None, description="Adam: first moment m, (N,).")
    exp_avg_sq: OptionalNumbers = Field(default=None, description="Adam: second moment v, (N,).")
    max_exp_avg_sq: OptionalNumbers = Field(
        default=None, description="AMSGrad: the running max of v, (N,)."
    )
    momentum_buffer: OptionalNumbers = Field(
        default=None, description="SGD with momentum: the buffer, (N,)."
    )

    def to_core(self) -> OptimizerState:
        """The core's view of this state."""
        return OptimizerState(
            **{name: getattr(self, name) for name in OptimizerStateModel.model_fields}
        )


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
    reward_clip: RewardClip = Field(
        default=None,
        description="Clamp each reward to [-reward_clip, reward_clip] first, or to "
        "[low, high] for a pair (low < high).",
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
        "(group sample std + 1e-4)), reinforce_pp (a - group mean, whitened over the batch), "
        "opo (a - the group mean weighted by sequence_lengths). Groups of one sample get 0.",
    )
    grpo_scale: GrpoScale = Field(
        default="std",
        description='"none" skips grpo\'s division by the group std (Dr. GRPO); "batch" '
        "divides by the sample std of the whole batch's adjusted rewards instead.",
    )
    normalize_advantages: bool = Field(
        default=False,
        description="Whiten the advantages over the batch: (A - mean) / sqrt(var + 1e-8).",
    )
    max_grad_norm: Positive | None = Field(
        default=None,
        description="Scale grad by max_grad_norm / (||grad|| + 1e-6) where that is below 1, "
        "as torch.nn.utils.clip_grad_norm_.",
    )
    target_kl: Positive | None = Field(
        default=None, description="Adaptive KL: the KL to steer towards (with kl_horizon)."
    )
    kl_horizon: Positive | None = Field(
        default=None, description="Adaptive KL: the horizon, in samples (with target_kl)."
    )
    policy_loss: PolicyLoss = Field(
        default="pg",
        description="pg: REINFORCE, coefficient A; ppo_clip: the clipped surrogate on "
        "rho = exp(policy_log_probs - old_log_probs); gspo: the same on rho = exp((policy - "
        "old) / sequence_lengths); cispo: coefficient clip(rho) * A, the clipped ratio held "
        "constant.",
    )
    old_log_probs: OptionalNumbers = Field(
        default=None,
        description="B numbers: each sample's log-prob under the policy that sampled it. "
        "Omitted, every ratio is 1. Sent, the KL in the reward is old_log_probs - "
        "ref_log_probs.",
    )
    clip_eps_low: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.2, description="The ratio's lower clip bound is 1 - clip_eps_low."
    )
    clip_eps_high: NonNegative | None = Field(
        default=None,
        description="The ratio's upper clip bound is 1 + clip_eps_high; default clip_eps_low "
        "(DAPO uses 0.28).",
    )
    dual_clip_c: Annotated[float, Field(gt=1)] | None = Field(
        default=None,
        description="Dual clip for ppo_clip and gspo: samples with A < 0 and rho > "
        "dual_clip_c get no gradient (verl uses 3).",
    )
    log_ratio_clamp: Positive = Field(
        default=20.0,
        description="The log-ratio is clamped to [-log_ratio_clamp, log_ratio_clamp] before "
        "exp; under ppo_clip and gspo a sample beyond it gets no policy gradient.",
    )
    sequence_lengths: Annotated[list[SequenceLength] | None, FailFast()] = Field(
        default=None,
        description="B integers >= 1: the number of tokens of each sample; gspo, the token "
        "aggregations and opo need them.",
    )
    loss_agg: LossAgg | None = Field(
        default=None,
        description="How the per-sample terms add up: seq_mean (1/B; the default, "
        "seq_mean_token_mean for gspo), sum (1), seq_mean_token_mean (1/(B L_i)), "
        "token_mean (1/sum L), constant (1/loss_agg_constant).",
    )
    loss_agg_constant: Positive | None = Field(
        default=None, description='The divisor of loss_agg "constant" (Dr. GRPO).'
    )
    kl_loss_coef: NonNegative = Field(
        default=0.0,
        description="Weight of a KL penalty in the loss, k(policy_log_probs - "
        "ref_log_probs); 0: none.",
    )
    kl_loss_type: KlEstimatorName = Field(
        default="k3", description="The estimator k of the KL in the loss: k1, k2, k3, abs."
    )
    kl_loss_clamp: Positive | None = Field(
        default=None,
        description="Clamp the KL in the loss to [-kl_loss_clamp, kl_loss_clamp], with no "
        "gradient where it clamps (verl and OpenRLHF use 10).",
    )
    behavior_log_probs: OptionalNumbers = Field(
        default=None,
        description="B numbers: each sample's log-prob under the rollout engine, for "
        "truncated importance sampling (with tis_mode).",
    )
    tis_mode: TisMode | None = Field(
        default=None,
        description="Truncated importance sampling: the policy term is multiplied by w = "
        "exp(clamp(old - behavior, -20, 20)), truncated to [tis_min, tis_max] (truncate) or "
        "set to 0 outside it (mask).",
    )
    tis_max: Positive = Field(default=2.0, description="The upper bound of the TIS weight.")
    tis_min: NonNegative | None = Field(
        default=None, description="The lower bound of the TIS weight, below tis_max; none."
    )
    tis_batch_normalize: bool = Field(
        default=False,
        description="Divide the TIS weights by their batch mean after truncation or masking.",
    )

    optimizer: OptimizerModel | None = Field(
        default=None,
        description="The step rule; absent: plain ascent w + lr * grad. Fed g = -grad, "
        "as torch.optim minimises.",
    )
    optimizer_state: OptimizerStateModel | None = Field(
        default=None,
        description="The state the previous answer returned; absent: a fresh optimizer.",
    )
    column_offset: int | None = Field(
        default=None,
        description="A block of a sharded update: the index in the whole vector of the "
        f"block's first column, an integer >= 0 and a multiple of {CHUNK_COLUMNS} (GET /info's "
        "chunk_columns). Errors then name columns by their index in the whole, and the answer "
        "adds the block's norm partials; not with max_grad_norm (use /update/grad and "
        "/update/apply).",
    )

    def to_options(self) -> UpdateOptions:
        """The core's view of these options."""
        values = {name: getattr(self, name) for name in UpdateOptionsModel.model_fields}
        for name in ("optimizer", "optimizer_state"):
            if values[name] is not None:
                values[name] = values[name].to_core()
        return UpdateOptions(**values)


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
    update_norm: float = Field(
        description="L2 norm of the step applied: lr * gradient, or with an optimizer "
        "||new weights - weights||."
    )
    next_beta: float | None = Field(
        default=None,
        description="Adaptive KL controller's next beta; present only with target_kl and "
        "kl_horizon.",
    )
    kl_estimates: KlEstimatesModel = Field(
        description="Batch means of k1, k2 and k3, whatever estimator the update used."
    )
    ratio_mean: float | None = Field(
        default=None,
        description="Mean of the importance ratios rho; this and the statistics down to "
        "approx_kl_old only with a policy_loss other than pg.",
    )
    ratio_min: float | None = Field(default=None, description="Smallest rho (not with pg).")
    ratio_max: float | None = Field(default=None, description="Largest rho (not with pg).")
    clip_frac: float | None = Field(
        default=None,
        description="clip_frac_low + clip_frac_high; for cispo the fraction with rho != clip(rho).",
    )
    clip_frac_low: float | None = Field(
        default=None, description="Fraction of samples with A < 0 and rho < 1 - clip_eps_low."
    )
    clip_frac_high: float | None = Field(
        default=None, description="Fraction of samples with A > 0 and rho > 1 + clip_eps_high."
    )
    dual_clip_frac: float | None = Field(
        default=None,
        description="Fraction with A < 0 and rho > dual_clip_c; only with dual_clip_c.",
    )
    log_ratio_clamped_frac: float | None = Field(
        default=None, description="Fraction whose log-ratio is beyond log_ratio_clamp."
    )
    active_frac: float | None = Field(
        default=None,
        description="Fraction whose policy-loss coefficient is not 0 (A = 0 is inactive).",
    )
    approx_kl_old: float | None = Field(
        default=None, description="Mean of old_log_probs - policy_log_probs."
    )
    kl_loss_mean: float | None = Field(
        default=None,
        description="Mean of the KL estimate in the loss (after kl_loss_clamp); only with "
        "kl_loss_coef > 0.",
    )
    tis_weight_mean: float | None = Field(
        default=None,
        description="Mean TIS weight after truncation or masking and normalisation; only "
        "with tis_mode.",
    )
    tis_weight_min: float | None = Field(
        default=None, description="Smallest TIS weight; only with tis_mode, as the ones below."
    )
    tis_weight_max: float | None = Field(default=None, description="Largest TIS weight.")
    tis_truncated_frac: float | None = Field(
        default=None, description="Fraction of TIS weights changed by tis_max or tis_min."
    )
    tis_masked_frac: float | None = Field(
        default=None, description="Fraction of TIS weights set to 0 by tis_mode mask."
    )
    tis_ess: float | None = Field(
        default=None,
        description="Effective sample size of the TIS weights, 1 / mean((w / "
        "mean w)^2), in (0, 1].",
    )
    optimizer_step: int | None = Field(
        default=None, description="The optimizer's step count after this step; with optimizer."
    )


class UpdateResponse(BaseModel):
    """The updated weights and the diagnostics of the step."""

    weights: list[float] = Field(description="weights + lr * grad, shape (N,).")
    stats: UpdateStatsModel
    optimizer_state: OptimizerStateModel | None = Field(
        default=None, description="The optimizer's new state; only with optimizer."
    )


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


class OptionInfo(BaseModel):
    """One optional field of the request, as GET /info describes it."""

    default: Any = Field(description="The value used when the field is left out.")
    allowed: list[str] | None = Field(
        description="The allowed values of a field with a closed set of them, else null."
    )
    description: str | None = Field(description="What the field does.")


class ServiceLimits(BaseModel):
    """The limits a request meets on this worker, from the service's settings."""

    max_body_size: int = Field(description="Largest request body in bytes (RLHF_MAX_BODY_SIZE).")
    max_elements: int = Field(description="Largest B*N + B + N of an update (RLHF_MAX_ELEMENTS).")
    max_in_flight: int = Field(description="Updates computed at once per worker.")
    max_queue: int = Field(description="Updates that may wait for a compute slot per worker.")
    queue_timeout_seconds: float = Field(description="Longest wait for a compute slot.")
    body_timeout_seconds: float = Field(description="Longest pause in a request body.")


class ServiceInfo(BaseModel):
    """What this service is and accepts: GET /info."""

    service: str = Field(description="The service's name.")
    version: str = Field(description="The service's version.")
    limits: ServiceLimits
    request_media_types: list[str] = Field(description="Content-Types /update reads.")
    response_media_types: list[str] = Field(description="Media types /update can answer in.")
    safetensors_dtypes: list[str] = Field(description="Float dtypes a safetensors body may use.")
    options: dict[str, OptionInfo] = Field(description="Every optional field of the request.")
    chunk_columns: int = Field(
        description="The columns of one norm partial: a sharded update's blocks start at "
        "multiples of it (column_offset), on /update, /update/grad and /update/apply."
    )


def describe_options() -> dict[str, OptionInfo]:
    """Every algorithm option of the request: its default, allowed values and meaning."""
    described = {}
    for name, info in UpdateOptionsModel.model_fields.items():
        allowed = [value for value in get_args(info.annotation) if isinstance(value, str)]
        described[name] = OptionInfo(
            default=info.default,
            allowed=allowed or None,
            description=info.description,
        )
    return described
