"""An independent pure-Python reference of the update: exact sums with `math.fsum`."""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


# The optional settings of an update, as the issues state them, in plain Python.
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
    "policy_loss": "pg",
    "old_log_probs": None,
    "clip_eps_low": 0.2,
    "clip_eps_high": None,
    "dual_clip_c": None,
    "log_ratio_clamp": 20.0,
    "sequence_lengths": None,
    "loss_agg": None,
    "loss_agg_constant": None,
    "kl_loss_coef": 0.0,
    "kl_loss_type": "k3",
    "kl_loss_clamp": None,
    "behavior_log_probs": None,
    "tis_mode": None,
    "tis_max": 2.0,
    "tis_min": None,
    "tis_batch_normalize": False,
}
_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
# High enough that exp(-d) - 1 + d keeps every digit of float64 for |d| >= 1e-150.
_K3_CONTEXT = decimal.Context(prec=400)


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
    # c_i * coef_i: what multiplies log_prob_grads[i] in the gradient, before clipping.
    weighted: list[float] = field(default_factory=list)
    # Per column, the sum of |c_i coef_i g_ij|: bounds the error of any summation order.
    abs_terms: list[float] = field(default_factory=list)
    # The statistics present only with their feature, by their wire names.
    extra_stats: dict[str, float] = field(default_factory=dict)


def k3_exact(d: float) -> float:
    """exp(-d) - 1 + d, d bounded to [-20, 20], rounded once from 400 digits.

    Below |d| = 1e-100 the series' third term is beyond float64's reach: d^2/2 - d^3/6.
    """
    if abs(d) < 1e-100:
        return d * d / 2 - d * d * d / 6
    bounded = decimal.Decimal(min(max(d, -20.0), 20.0))
    ctx = _K3_CONTEXT
    return float(ctx.add(ctx.subtract(ctx.exp(ctx.minus(bounded)), 1), bounded))


def _kl(d: float, estimator: str) -> float:
    if estimator == "k1":
        return d
    if estimator == "k2":
        return d * d / 2
    if estimator == "k3":
        return k3_exact(d)
    assert estimator == "abs"
    return abs(d)


def _kl_derivative(d: float, estimator: str) -> float:
    """d k / d logp, zero where the estimator's bound holds d (k3 beyond +-20)."""
    if estimator == "k1":
        return 1.0
    if estimator == "k2":
        return d
    if estimator == "k3":
        return 1 - math.exp(-d) if abs(d) <= 20 else 0.0
    assert estimator == "abs"
    return math.copysign(1.0, d) if d else 0.0


def _fmean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _stdev(values: Sequence[float]) -> float:
    """Sample standard deviation, exact sums; 0 for one value."""
    if len(values) < 2:
        return 0.0
    mean = _fmean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _whiten(values: Sequence[float]) -> list[float]:
    mean = _fmean(values)
    var = _stdev(values) ** 2
    return [(x - mean) / math.sqrt(var + 1e-8) for x in values]


def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


def _fraction(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags)


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
    extra: dict[str, float] = {}
    lengths = opts["sequence_lengths"]
    # 0. reward clipping
    r = list(rewards)
    clip = opts["reward_clip"]
    if clip is not None:
        low, high = (-clip, clip) if isinstance(clip, int | float) else clip
        r = [_clip(x, low, high) for x in r]
    # 1. KL estimate, of the old policy when it is given, optionally clamped
    estimator = _ALIASES.get(opts["kl_estimator"], opts["kl_estimator"])
    old = opts["old_log_probs"]
    d = [p - q for p, q in zip(old or policy_log_probs, ref_log_probs, strict=True)]
    kl = [_kl(x, estimator) for x in d]
    bound = opts["kl_clamp"]
    if bound is None and opts["kl_estimator"] == "low_var_kl":
        bound = 10.0
    if bound is not None:
        kl = [_clip(x, -bound, bound) for x in kl]
    # 2. adjusted reward
    a = [x - beta * k for x, k in zip(r, kl, strict=True)]
    # 3. baseline within groups
    adv = _advantages(a, opts)
    # 4. whitening over the batch
    if opts["normalize_advantages"]:
        adv = _whiten(adv)
    # 5. per-sample coefficients and their aggregation weights
    coefficients = _policy_coefficients(adv, list(policy_log_probs), opts, extra)
    if opts["tis_mode"] is not None:
        tis = _tis_weights(old or list(policy_log_probs), opts, extra)
        coefficients = [c * w for c, w in zip(coefficients, tis, strict=True)]
    if opts["kl_loss_coef"]:
        delta = [p - q for p, q in zip(policy_log_probs, ref_log_probs, strict=True)]
        values = [_kl(x, opts["kl_loss_type"]) for x in delta]
        slopes = [_kl_derivative(x, opts["kl_loss_type"]) for x in delta]
        held = opts["kl_loss_clamp"]
        if held is not None:
            slopes = [0.0 if abs(v) > held else s for v, s in zip(values, slopes, strict=True)]
            values = [_clip(v, -held, held) for v in values]
        extra["kl_loss_mean"] = _fmean(values)
        coefficients = [
            c - opts["kl_loss_coef"] * s for c, s in zip(coefficients, slopes, strict=True)
        ]
    agg = opts["loss_agg"] or (
        "seq_mean_token_mean" if opts["policy_loss"] == "gspo" else "seq_mean"
    )
    if agg == "seq_mean":
        weighted = [c / b for c in coefficients]
    elif agg == "sum":
        weighted = list(coefficients)
    elif agg == "seq_mean_token_mean":
        weighted = [c / (b * n) for c, n in zip(coefficients, lengths, strict=True)]
    elif agg == "token_mean":
        weighted = [c / math.fsum(lengths) for c in coefficients]
    else:
        assert agg == "constant"
        weighted = [c / opts["loss_agg_constant"] for c in coefficients]
    columns = list(zip(*log_prob_grads, strict=True))
    grad = [math.fsum(x * g for x, g in zip(weighted, col, strict=True)) for col in columns]
    abs_terms = [
        math.fsum(abs(x * g) for x, g in zip(weighted, col, strict=True)) for col in columns
    ]
    # 6. clipping by norm, as torch.nn.utils.clip_grad_norm_: by min(m / (norm + 1e-6), 1)
    norm = math.sqrt(math.fsum(g * g for g in grad))
    m = opts["max_grad_norm"]
    clipped = m is not None and m / (norm + 1e-6) < 1
    if clipped:
        grad = [g * (m / (norm + 1e-6)) for g in grad]
    # 7. step
    new_weights = [w + lr * g for w, g in zip(weights, grad, strict=True)]
    next_beta = None
    if opts["target_kl"] is not None:
        error = min(max(_fmean(kl) / opts["target_kl"] - 1, -0.2), 0.2)
        next_beta = beta * (1 + error * b / opts["kl_horizon"])
    estimates = {name: _fmean([_kl(x, name) for x in d]) for name in ("k1", "k2", "k3")}
    return ReferenceOptionsUpdate(
        new_weights,
        grad,
        kl,
        r,
        a,
        adv,
        norm,
        clipped,
        next_beta,
        estimates,
        weighted,
        abs_terms,
        extra,
    )


def _advantages(a: list[float], opts: dict[str, Any]) -> list[float]:
    b = len(a)
    ids = opts["group_ids"] if opts["group_ids"] is not None else [0] * b
    members: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    baseline = opts["baseline"]
    adv = list(a)
    for group in members.values():
        values = [a[i] for i in group]
        n, total, mean = len(values), math.fsum(values), _fmean(values)
        for i in group:
            if baseline in ("mean", "reinforce_pp"):
                adv[i] = a[i] - mean
            elif baseline == "rloo":
                adv[i] = a[i] - (total - a[i]) / (n - 1)
            elif baseline == "grpo":
                centred = a[i] - mean
                if opts["grpo_scale"] == "std":
                    centred = centred / (_stdev(values) + 1e-4) if n > 1 else 0.0
                elif opts["grpo_scale"] == "batch":
                    centred = centred / (_stdev(a) + 1e-4)
                adv[i] = centred
            elif baseline == "opo":
                lengths = [opts["sequence_lengths"][j] for j in group]
                weighted = math.fsum(n_j * a[j] for n_j, j in zip(lengths, group, strict=True))
                adv[i] = a[i] - weighted / math.fsum(lengths) if n > 1 else 0.0
    if baseline == "reinforce_pp":
        adv = _whiten(adv)
    return adv


def _policy_coefficients(
    adv: list[float], policy: list[float], opts: dict[str, Any], extra: dict[str, float]
) -> list[float]:
    """coef_i of the policy loss; its statistics go to `extra`."""
    loss = opts["policy_loss"]
    if loss == "pg":
        return list(adv)
    old = opts["old_log_probs"] or policy
    eps_low = opts["clip_eps_low"]
    eps_high = eps_low if opts["clip_eps_high"] is None else opts["clip_eps_high"]
    low, high, c, bound = 1 - eps_low, 1 + eps_high, opts["dual_clip_c"], opts["log_ratio_clamp"]
    coefficients, ratios, active, beyond, high_clip, low_clip, dual, changed = (
        [] for _ in range(8)
    )
    for i, (A, p, q) in enumerate(zip(adv, policy, old, strict=True)):
        log_ratio = p - q
        if loss == "gspo":
            log_ratio /= opts["sequence_lengths"][i]
        rho = math.exp(_clip(log_ratio, -bound, bound))
        ratios.append(rho)
        beyond.append(abs(log_ratio) > bound)
        high_clip.append(A > 0 and rho > high)
        low_clip.append(A < 0 and rho < low)
        dual.append(c is not None and A < 0 and rho > c)
        if loss == "cispo":
            coefficients.append(A * _clip(rho, low, high))
            active.append(A != 0)
            changed.append(_clip(rho, low, high) != rho)
            continue
        if A > 0:
            on = rho <= high
        elif A < 0:
            on = rho >= low and (c is None or rho <= c)
        else:
            on = False
        on = on and not beyond[-1]
        active.append(on)
        coefficients.append(A * rho if on else 0.0)
    extra.update(
        ratio_mean=_fmean(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        clip_frac=_fraction(changed)
        if loss == "cispo"
        else _fraction(high_clip) + _fraction(low_clip),
        clip_frac_low=_fraction(low_clip),
        clip_frac_high=_fraction(high_clip),
        log_ratio_clamped_frac=_fraction(beyond),
        active_frac=_fraction(active),
        approx_kl_old=_fmean([q - p for p, q in zip(policy, old, strict=True)]),
    )
    if c is not None:
        extra["dual_clip_frac"] = _fraction(dual)
    return coefficients


def _tis_weights(old: list[float], opts: dict[str, Any], extra: dict[str, float]) -> list[float]:
    high, low = opts["tis_max"], opts["tis_min"]
    raw = [
        math.exp(_clip(q - v, -20.0, 20.0))
        for q, v in zip(old, opts["behavior_log_probs"], strict=True)
    ]
    outside = [x > high or (low is not None and x < low) for x in raw]
    if opts["tis_mode"] == "mask":
        weights = [0.0 if out else x for x, out in zip(raw, outside, strict=True)]
    else:
        weights = [_clip(x, -math.inf if low is None else low, high) for x in raw]
    mean = _fmean(weights)
    if opts["tis_batch_normalize"] and mean > 0:
        weights = [x / mean for x in weights]
        mean = _fmean(weights)
    extra.update(
        tis_weight_mean=mean,
        tis_weight_min=min(weights),
        tis_weight_max=max(weights),
        tis_truncated_frac=_fraction(outside) if opts["tis_mode"] == "truncate" else 0.0,
        tis_masked_frac=_fraction(outside) if opts["tis_mode"] == "mask" else 0.0,
        tis_ess=1 / _fmean([(x / mean) ** 2 for x in weights]) if mean > 0 else 0.0,
    )
    return weights
