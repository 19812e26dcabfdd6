"""What an update returns: the new weights and typed statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["UpdateResult", "UpdateStats"]

# Present in every version of the service.
_REQUIRED_FLOATS = ("kl_mean", "reward_mean", "adjusted_reward_mean", "grad_norm", "update_norm")
# Added later, or present only with some options: None when the server does not send them.
_OPTIONAL_FLOATS = (
    "kl_max",
    "reward_std",
    "advantage_mean",
    "advantage_std",
    "next_beta",
    # With a policy loss other than "pg", a KL loss, truncated importance sampling.
    "ratio_mean",
    "ratio_min",
    "ratio_max",
    "clip_frac",
    "clip_frac_low",
    "clip_frac_high",
    "dual_clip_frac",
    "log_ratio_clamped_frac",
    "active_frac",
    "approx_kl_old",
    "kl_loss_mean",
    "tis_weight_mean",
    "tis_weight_min",
    "tis_weight_max",
    "tis_truncated_frac",
    "tis_masked_frac",
    "tis_ess",
)


@dataclass(frozen=True, slots=True)
class UpdateStats:
    """The server's diagnostics of one update.

    Statistics this client does not know are kept in `extra`, so a newer server never breaks
    an older client; known ones an older server does not send are None.
    """

    kl_mean: float
    reward_mean: float
    adjusted_reward_mean: float
    grad_norm: float
    update_norm: float
    kl_max: float | None = None
    reward_std: float | None = None
    advantage_mean: float | None = None
    advantage_std: float | None = None
    clipped: bool | None = None
    next_beta: float | None = None
    ratio_mean: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    clip_frac: float | None = None
    clip_frac_low: float | None = None
    clip_frac_high: float | None = None
    dual_clip_frac: float | None = None
    log_ratio_clamped_frac: float | None = None
    active_frac: float | None = None
    approx_kl_old: float | None = None
    kl_loss_mean: float | None = None
    tis_weight_mean: float | None = None
    tis_weight_min: float | None = None
    tis_weight_max: float | None = None
    tis_truncated_frac: float | None = None
    tis_masked_frac: float | None = None
    tis_ess: float | None = None
    # An estimate is None when its batch mean overflows float64 (the server sends null).
    kl_estimates: Mapping[str, float | None] | None = None
    # With an optimizer: its step count after this update.
    optimizer_step: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, stats: Mapping[str, Any]) -> UpdateStats:
        """Read the `stats` object of a response; raises ValueError if a required key is bad."""
        known: dict[str, Any] = {}
        for name in _REQUIRED_FLOATS:
            if name not in stats:
                msg = f"stats has no {name!r}"
                raise ValueError(msg)
            known[name] = _number(stats, name)
        for name in _OPTIONAL_FLOATS:
            if stats.get(name) is not None:
                known[name] = _number(stats, name)
        if stats.get("clipped") is not None:
            known["clipped"] = bool(stats["clipped"])
        step = stats.get("optimizer_step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, int):
                msg = f"stats['optimizer_step'] is {step!r}; expected an integer"
                raise ValueError(msg)
            known["optimizer_step"] = step
        estimates = stats.get("kl_estimates")
        if isinstance(estimates, Mapping):
            known["kl_estimates"] = {
                str(k): None if estimates[k] is None else _number(estimates, k) for k in estimates
            }
        extra = {
            k: v
            for k, v in stats.items()
            if k not in known
            and k not in ("clipped", "kl_estimates", "optimizer_step", *_OPTIONAL_FLOATS)
        }
        return cls(**known, extra=extra)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The new weights (in the dtype of the weights sent), the statistics, the request id,
    and, with an optimizer, its new state: ``{"step": int, "exp_avg": array, ...}`` (float64
    arrays, named as torch's ``state_dict()["state"][0]``); pass it as the next call's
    `optimizer_state`."""

    weights: NDArray[np.floating[Any]]
    stats: UpdateStats
    request_id: str | None = None
    optimizer_state: Mapping[str, Any] | None = None


def _number(mapping: Mapping[str, Any], name: str) -> float:
    value = mapping[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"stats[{name!r}] is {value!r}; expected a number"
        raise ValueError(msg)
    return float(value)
