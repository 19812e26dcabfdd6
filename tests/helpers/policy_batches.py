"""Random updates with every algorithm option drawn, each combination a valid one."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from tests.helpers.batches import random_batch


def pairs(b: int) -> list[int]:
    """Group ids that put the samples in pairs (B odd: group 0 has three), as "rloo" needs."""
    return [i // 2 for i in range(b - b % 2)] + [0] * (b % 2)


@st.composite
def batches_with_options(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the fields of a random update, its options): B <= 16, N <= 8, every option drawn."""
    b, n = draw(st.integers(1, 16)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    args = random_batch(seed, b, n)
    rng = np.random.default_rng(seed ^ 0x5EED)
    policy = np.asarray(args["policy_log_probs"])
    options: dict[str, Any] = {}
    loss = draw(st.sampled_from(["pg", "ppo_clip", "gspo", "cispo"]))
    with_lengths = loss == "gspo" or draw(st.booleans())
    lengths = rng.integers(1, 40, b) if with_lengths else None
    tokens = ["seq_mean_token_mean", "token_mean"] if with_lengths else []
    aggregation = draw(st.sampled_from([None, "seq_mean", "sum", "constant", *tokens]))
    if loss == "gspo" and not with_lengths:
        aggregation = "seq_mean"
    baselines = ["none", "mean", "grpo", "reinforce_pp"]
    baselines += ["rloo"] if b > 1 else []
    baselines += ["opo"] if with_lengths else []
    options.update(
        policy_loss=loss,
        kl_estimator=draw(st.sampled_from(["k1", "k2", "k3", "abs", "kl", "mse", "low_var_kl"])),
        kl_clamp=draw(st.sampled_from([None, 0.5])),
        reward_clip=draw(st.sampled_from([None, 0.5, [-0.3, 1.2]])),
        baseline=draw(st.sampled_from(baselines)),
        grpo_scale=draw(st.sampled_from(["std", "none", "batch"])),
        normalize_advantages=draw(st.booleans()),
        max_grad_norm=draw(st.sampled_from([None, 0.01, 1.0])),
        clip_eps_low=draw(st.sampled_from([0.0, 0.1, 0.2, 0.5])),
        clip_eps_high=draw(st.sampled_from([None, 0.0, 0.28, 1.0])),
        log_ratio_clamp=draw(st.sampled_from([20.0, 2.0, 0.5])),
        loss_agg=aggregation,
        kl_loss_coef=draw(st.sampled_from([0.0, 0.1, 1.0])),
        kl_loss_type=draw(st.sampled_from(["k1", "k2", "k3", "abs"])),
        kl_loss_clamp=draw(st.sampled_from([None, 0.5, 10.0])),
    )
    if draw(st.booleans()):
        options["group_ids"] = pairs(b)
    if lengths is not None:
        options["sequence_lengths"] = lengths.tolist()
    if loss in ("ppo_clip", "gspo"):
        options["dual_clip_c"] = draw(st.sampled_from([None, 1.5, 3.0]))
    if aggregation == "constant":
        options["loss_agg_constant"] = draw(st.sampled_from([7.0, 1000.0]))
    old = policy
    if draw(st.booleans()):
        spread = draw(st.sampled_from([0.01, 0.3, 3.0]))
        old = policy + spread * rng.standard_normal(b)
        options["old_log_probs"] = old.tolist()
    tis_mode = draw(st.sampled_from([None, "truncate", "mask"]))
    if tis_mode is not None:
        spread = draw(st.sampled_from([0.01, 0.5, 2.0]))
        options.update(
            tis_mode=tis_mode,
            behavior_log_probs=(old + spread * rng.standard_normal(b)).tolist(),
            tis_max=draw(st.sampled_from([2.0, 1.2])),
            tis_min=draw(st.sampled_from([None, 0.5])),
            tis_batch_normalize=draw(st.booleans()),
        )
    return args, options
