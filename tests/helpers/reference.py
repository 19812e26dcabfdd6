"""An independent pure-Python reference of the update: exact sums with `math.fsum`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def reference_weights(arrays: Mapping[str, Any], beta: float, lr: float) -> list[float]:
    """`reference_update`'s new weights for NumPy arrays named as /update's fields.

    `tolist()` turns float32 and float64 entries alike into exactly equal Python floats.
    """
    values = {name: arrays[name].tolist() for name in _ARRAY_NAMES}
    return reference_update(**values, beta=beta, lr=lr).weights


_ARRAY_NAMES = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


# The optional settings of an update, as the issue states them, in plain Python.
OPTION_DEFAULTS: dict[str, Any] = {
    "kl_estimator": "k1",
    "kl_clamp": None,
    "reward_clip": None,
    "group_ids": None,
    "baseline": "none",
    "grpo_scale": "std",
    "normalize_advantages": False,
    "max_grad_norm": None,
    "target_kl": None,
    "kl_horizon": None,
}
_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}


@dataclass(frozen=True)
class ReferenceOptionsUpdate:
    weights: list[float]
    grad: list[float]
    kl: list[float]
    rewards: list[float]
    adjusted: list[float]
    advantages: list[float]
    grad_norm: float
    clipped: bool
    next_beta: float | None
    kl_estimates: dict[str, float]


def _kl(d: float, estimator: str) -> float:
    if estimator == "k1":
        return d
    if estimator == "k2":
        return d * d / 2
    if estimator == "k3":
        bounded = min(max(d, -20.0), 20.0)
        return math.exp(-bounded) - 1 + bounded
    assert estimator == "abs"
    return abs(d)


def _fmean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _stdev(values: Sequence[float]) -> float:
    """Sample standard deviation, exact sums; 0 for one value."""
    if len(values) < 2:
        return 0.0
    mean = _fmean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def reference_options_update(
    weights: Sequence[float],
    rewards: Sequence[float],
    policy_log_probs: Sequence[float],
    ref_log_probs: Sequence[float],
    log_prob_grads: Sequence[Sequence[float]],
    beta: float,
    lr: float,
    **options: Any,
) -> ReferenceOptionsUpdate:
    """Steps 0-7 of the README, one formula at a time, sums with `math.fsum`."""
    opts = {**OPTION_DEFAULTS, **options}
    b = len(rewards)
    # 0. reward clipping
    r = list(rewards)
    if opts["reward_clip"] is not None:
        c = opts["reward_clip"]
        r = [min(max(x, -c), c) for x in r]
    # 1. KL estimate, optionally clamped
    estimator = _ALIASES.get(opts["kl_estimator"], opts["kl_estimator"])
    d = [p - q for p, q in zip(policy_log_probs, ref_log_probs, strict=True)]
    kl = [_kl(x, estimator) for x in d]
    if opts["kl_clamp"] is not None:
        c = opts["kl_clamp"]
        kl = [min(max(x, -c), c) for x in kl]
    # 2. adjusted reward
    a = [x - beta * k for x, k in zip(r, kl, strict=True)]
    # 3. baseline within groups
    ids = opts["group_ids"] if opts["group_ids"] is not None else [0] * b
    members: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    adv = list(a)
    for group in members.values():
        values = [a[i] for i in group]
        n, total, mean = len(values), math.fsum(values), _fmean(values)
        for i in group:
            if opts["baseline"] == "mean":
                adv[i] = a[i] - mean
            elif opts["baseline"] == "rloo":
                adv[i] = a[i] - (total - a[i]) / (n - 1)
            elif opts["baseline"] == "grpo":
                centred = a[i] - mean
                if opts["grpo_scale"] == "std":
                    centred = centred / (_stdev(values) + 1e-4) if n > 1 else 0.0
                adv[i] = centred
    # 4. whitening over the batch
    if opts["normalize_advantages"]:
        mean = _fmean(adv)
        var = _stdev(adv) ** 2
        adv = [(x - mean) / math.sqrt(var + 1e-8) for x in adv]
    # 5. gradient
    columns = list(zip(*log_prob_grads, strict=True))
    grad = [math.fsum(x * g for x, g in zip(adv, col, strict=True)) / b for col in columns]
    # 6. clipping by norm
    norm = math.hypot(*grad)
    m = opts["max_grad_norm"]
    clipped = m is not None and norm > m
    if clipped:
        grad = [g * m / (norm + 1e-6) for g in grad]
    # 7. step
    new_weights = [w + lr * g for w, g in zip(weights, grad, strict=True)]
    next_beta = None
    if opts["target_kl"] is not None:
        error = min(max(_fmean(kl) / opts["target_kl"] - 1, -0.2), 0.2)
        next_beta = beta * (1 + error * b / opts["kl_horizon"])
    estimates = {name: _fmean([_kl(x, name) for x in d]) for name in ("k1", "k2", "k3")}
    return ReferenceOptionsUpdate(
        new_weights, grad, kl, r, a, adv, norm, clipped, next_beta, estimates
    )
