"""The service's gradient against torch autograd of the trainers' own loss expressions.

A linear log-prob model ``logp_i(w) = g_i . w + c_i`` has ``grad logp_i = g_i`` exactly,
so the gradient of a loss written over it, as verl, OpenRLHF and TRL write theirs on
(B, T) token tensors, is the update's ``grad``. Each sample's ``L_i`` tokens share its
log-prob equally; a sequence's ratio reaches its tokens as GSPO's does (the value of the
sequence's ratio, the gradient of the token's log-prob). Advantages are data to a loss:
they come from the independent reference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from app.core import UpdateOptions, compute_update
from tests.helpers.policy_batches import batches_with_options
from tests.helpers.reference import OPTION_DEFAULTS, reference_options_update

torch = pytest.importorskip(
    "torch", reason="the autograd cross-check needs torch==2.13.0, which `make test` installs"
)
F64 = torch.float64


def service_grad(args: dict[str, Any], options: dict[str, Any]) -> np.ndarray:
    """The update's grad: weights 0 and lr 1 make the new weights the (clipped) gradient."""
    n = len(args["weights"])
    arrays = {k: v for k, v in args.items() if k not in ("weights", "beta", "lr")}
    result = compute_update(
        np.zeros(n), **arrays, beta=args["beta"], lr=1.0, options=UpdateOptions(**options)
    )
    return np.asarray(result.weights)


def aggregate(loss: Any, mask: Any, mode: str, constant: float | None) -> Any:
    """verl's agg_loss over a (B, T) loss matrix; "constant" is TRL's dr_grpo sum / C."""
    b = loss.shape[0]
    tokens = mask.sum(-1)
    if mode == "token_mean":
        return (loss * mask).sum() / mask.sum()
    if mode == "seq_mean":  # verl's "seq-mean-token-sum"
        return (loss * mask).sum(-1).sum() / b
    if mode == "seq_mean_token_mean":
        return ((loss * mask).sum(-1) / tokens).sum() / b
    if mode == "sum":
        return (loss * mask).sum()
    assert mode == "constant"
    assert constant is not None
    return (loss * mask).sum() / constant


def kl_penalty(delta: Any, kind: str) -> Any:
    """verl's kl_penalty_forward on log-ratios delta = logp - ref_logp."""
    if kind == "k1":
        return delta
    if kind == "k2":
        return 0.5 * delta.square()
    if kind == "abs":
        return delta.abs()
    kl = torch.clamp(-delta, min=-20, max=20)  # ref - logp, bounded
    return torch.exp(kl) - kl - 1


def tis_weights(old: Any, behavior: Any, o: dict[str, Any]) -> Any:
    """Sequence-level truncated importance weights, as verl's rollout correction."""
    raw = torch.exp(torch.clamp(old - behavior, -20, 20))
    high, low = o["tis_max"], o["tis_min"]
    if o["tis_mode"] == "truncate":
        weights = torch.clamp(raw, min=low, max=high)
    else:
        keep = (raw <= high) & ((raw >= low) if low is not None else True)
        weights = torch.where(keep, raw, torch.zeros_like(raw))
    if o["tis_batch_normalize"] and weights.mean() > 0:
        weights = weights / weights.mean()
    return weights


def torch_grad(args: dict[str, Any], options: dict[str, Any]) -> np.ndarray:
    o = {**OPTION_DEFAULTS, **options}
    ref_update = reference_options_update(**args, **options)
    grads = torch.tensor(args["log_prob_grads"], dtype=F64)
    b, n = grads.shape
    policy = torch.tensor(args["policy_log_probs"], dtype=F64)
    ref = torch.tensor(args["ref_log_probs"], dtype=F64)
    old = policy if o["old_log_probs"] is None else torch.tensor(o["old_log_probs"], dtype=F64)
    lengths = torch.tensor(o["sequence_lengths"] or [1] * b, dtype=F64)
    advantage = torch.tensor(ref_update.advantages, dtype=F64)[:, None]
    w = torch.zeros(n, dtype=F64, requires_grad=True)
    logp = grads @ w + policy  # equals policy_log_probs at w = 0; gradient g_i
    t = int(lengths.max())
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(F64)
    token_logp = (logp / lengths)[:, None] * mask

    def carried(sequence_value: Any) -> Any:
        """A sequence's value at each of its tokens, with the token's log-prob gradient."""
        return sequence_value.detach()[:, None] + token_logp - token_logp.detach()

    loss_kind = o["policy_loss"]
    eps_low = o["clip_eps_low"]
    eps_high = eps_low if o["clip_eps_high"] is None else o["clip_eps_high"]
    bound = o["log_ratio_clamp"]
    if loss_kind == "pg":
        pg = -advantage * token_logp
    elif loss_kind == "cispo":
        ratio = torch.exp(torch.clamp(logp - old, -bound, bound))
        clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high).detach()[:, None]
        pg = -clipped * advantage * token_logp
    else:
        log_ratio = (logp - old) / (lengths if loss_kind == "gspo" else 1.0)
        ratio = torch.exp(torch.clamp(carried(log_ratio), -bound, bound))
        pg1 = -advantage * ratio
        pg2 = -advantage * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
        pg = torch.maximum(pg1, pg2)
        if o["dual_clip_c"] is not None:  # Ye et al. 2020, as verl and OpenRLHF
            pg = torch.where(advantage < 0, torch.minimum(-advantage * o["dual_clip_c"], pg), pg)
    if o["tis_mode"] is not None:
        behavior = torch.tensor(o["behavior_log_probs"], dtype=F64)
        pg = pg * tis_weights(old, behavior, o)[:, None]
    mode = o["loss_agg"] or ("seq_mean_token_mean" if loss_kind == "gspo" else "seq_mean")
    loss = aggregate(pg, mask, mode, o["loss_agg_constant"])
    if o["kl_loss_coef"]:
        kl = kl_penalty(carried(logp - ref), o["kl_loss_type"])
        if o["kl_loss_clamp"] is not None:
            kl = torch.clamp(kl, -o["kl_loss_clamp"], o["kl_loss_clamp"])
        loss = loss + o["kl_loss_coef"] * aggregate(kl, mask, mode, o["loss_agg_constant"])
    (gradient,) = torch.autograd.grad(loss, w)
    # The update ascends: the step is minus the loss's gradient, clipped as torch clips.
    w.grad = -gradient
    if o["max_grad_norm"] is not None:
        torch.nn.utils.clip_grad_norm_([w], o["max_grad_norm"])
    return np.asarray(w.grad.numpy())


def assert_close(got: np.ndarray, want: np.ndarray, args: dict[str, Any]) -> None:
    # Relative to the size of the terms summed: |g_ij| times the largest coefficient.
    scale = float(np.abs(np.asarray(args["log_prob_grads"])).sum(0).max()) * max(
        1.0, float(np.abs(want).max())
    )
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * scale)


@settings(max_examples=150, deadline=None)
@given(batches_with_options())
def test_the_gradient_is_autograd_of_the_trainers_loss(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    args, options = case
    assert_close(service_grad(args, options), torch_grad(args, options), args)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"policy_loss": "ppo_clip", "dual_clip_c": 1.5}, id="ppo-dual"),
        pytest.param({"policy_loss": "gspo", "loss_agg": "token_mean"}, id="gspo-token-mean"),
        pytest.param({"policy_loss": "cispo", "log_ratio_clamp": 0.2}, id="cispo-clamped"),
        pytest.param({"kl_loss_coef": 0.5, "kl_loss_type": "k3", "kl_loss_clamp": 0.3}, id="k3"),
        pytest.param({"tis_mode": "mask", "tis_min": 0.8, "tis_max": 1.3}, id="tis-mask"),
    ],
)
def test_off_policy_cases_agree_with_autograd(options: dict[str, Any]) -> None:
    # Ratios far from 1 and lengths of up to 6 tokens, so that every clip is in play.
    rng = np.random.default_rng(7)
    b, n = 12, 3
    policy = rng.standard_normal(b) - 3
    old = policy + 0.6 * rng.standard_normal(b)
    args: dict[str, Any] = {
        "weights": [0.0] * n,
        "rewards": rng.standard_normal(b).tolist(),
        "policy_log_probs": policy.tolist(),
        "ref_log_probs": (policy + rng.standard_normal(b)).tolist(),
        "log_prob_grads": rng.standard_normal((b, n)).tolist(),
        "beta": 0.1,
        "lr": 1.0,
    }
    full = {
        "old_log_probs": old.tolist(),
        "sequence_lengths": rng.integers(1, 7, b).tolist(),
        "behavior_log_probs": (old + 0.5 * rng.standard_normal(b)).tolist(),
        "baseline": "mean",
        **options,
    }
    if "tis_mode" not in full:
        del full["behavior_log_probs"]
    assert_close(service_grad(args, full), torch_grad(args, full), args)


def test_clipping_is_torchs_to_the_bit() -> None:
    # The case: ||g|| = max_grad_norm = 1; torch scales by 1 / (1 + 1e-6).
    for norm in (1.0, 1.0 - 1e-7, 1.0 + 1e-7, 3.0, 0.5):
        got = compute_update(
            [0.0],
            [norm],
            [0.0],
            [0.0],
            [[1.0]],
            beta=0,
            lr=1,
            options=UpdateOptions(max_grad_norm=1),
        )
        param = torch.zeros(1, dtype=F64, requires_grad=True)
        param.grad = torch.tensor([norm], dtype=F64)
        torch.nn.utils.clip_grad_norm_([param], 1.0)
        assert got.weights.tolist() == param.grad.tolist(), norm
        assert got.stats.clipped is (1.0 / (norm + 1e-6) < 1), norm
    assert math.isclose(param.grad.item(), 0.5)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3", "abs"])
def test_kl_loss_beyond_the_k3_bound_agrees_with_autograd(kind: str) -> None:
    # delta = +-25 lies beyond k3's +-20 bound, where torch.clamp passes no gradient.
    args: dict[str, Any] = {
        "weights": [0.0, 0.0],
        "rewards": [0.5, -0.25, 1.0],
        "policy_log_probs": [-1.0, -30.0, -2.0],
        "ref_log_probs": [-26.0, -5.0, -2.5],
        "log_prob_grads": [[1.0, 0.5], [-0.25, 2.0], [0.75, -1.0]],
        "beta": 0.0,
        "lr": 1.0,
    }
    options = {"kl_loss_coef": 0.5, "kl_loss_type": kind}
    assert_close(service_grad(args, options), torch_grad(args, options), args)
