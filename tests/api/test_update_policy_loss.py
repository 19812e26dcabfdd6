"""The policy-loss options over HTTP, in both wire formats: passed through, and every rule
a 422 naming the field (and index)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save

from app.core import UpdateOptions, compute_update
from tests.helpers.batches import random_batch
from tests.helpers.problems import assert_problem
from tests.helpers.reference import reference_options_update
from tests.helpers.tensors import BINARY, as_safetensors

B = 4
BASE = random_batch(40, B, 2)
OLD = [x + 0.3 for x in BASE["policy_log_probs"]]
BEHAVIOR = [x - 0.2 for x in OLD]

# (changes to BASE, loc in JSON, loc in safetensors, a phrase of the message)
RULES = [
    pytest.param(
        {"old_log_probs": OLD[:3]},
        ["old_log_probs"],
        None,
        "has 3 entries; expected 4",
        id="old-length",
    ),
    pytest.param(
        {"tis_mode": "truncate", "behavior_log_probs": [*BEHAVIOR, 0.0]},
        ["behavior_log_probs"],
        None,
        "has 5 entries; expected 4",
        id="behavior-length",
    ),
    pytest.param(
        {"sequence_lengths": [1, 2, 3]},
        ["sequence_lengths"],
        None,
        "has 3 entries; expected 4",
        id="lengths-length",
    ),
    pytest.param(
        {"sequence_lengths": [1, 2.5, 3, 4]},
        ["sequence_lengths", 1],
        ["sequence_lengths"],
        "expected an integer",
        id="lengths-non-integer",
    ),
    pytest.param(
        {"sequence_lengths": [1, 0, 3, 4]},
        ["sequence_lengths", 1],
        None,
        "sequence_lengths[1] is 0; expected an integer >= 1",
        id="lengths-below-one",
    ),
    pytest.param(
        {"clip_eps_low": 1.0},
        ["clip_eps_low"],
        "meta",
        "clip_eps_low is 1.0; expected a number < 1",
        id="eps-low-one",
    ),
    pytest.param(
        {"clip_eps_low": -0.1},
        ["clip_eps_low"],
        "meta",
        "clip_eps_low is -0.1; expected a number >= 0",
        id="eps-low-negative",
    ),
    pytest.param(
        {"clip_eps_high": -0.1},
        ["clip_eps_high"],
        "meta",
        "clip_eps_high is -0.1; expected a number >= 0",
        id="eps-high-negative",
    ),
    pytest.param(
        {"policy_loss": "ppo_clip", "dual_clip_c": 1.0},
        ["dual_clip_c"],
        "meta",
        "dual_clip_c is 1.0; expected a finite number > 1",
        id="dual-at-one",
    ),
    pytest.param({"dual_clip_c": 3.0}, ["dual_clip_c"], None, "not 'pg'", id="dual-with-pg"),
    pytest.param(
        {"policy_loss": "cispo", "dual_clip_c": 3.0},
        ["dual_clip_c"],
        None,
        "not 'cispo'",
        id="dual-with-cispo",
    ),
    pytest.param(
        {"policy_loss": "gspo"},
        ["sequence_lengths"],
        None,
        "policy_loss 'gspo' and loss_agg 'seq_mean_token_mean' needs sequence_lengths",
        id="gspo-without-lengths",
    ),
    pytest.param(
        {"loss_agg": "token_mean"},
        ["sequence_lengths"],
        None,
        "loss_agg 'token_mean' needs sequence_lengths",
        id="token-mean-without-lengths",
    ),
    pytest.param(
        {"loss_agg": "seq_mean_token_mean"},
        ["sequence_lengths"],
        None,
        "loss_agg 'seq_mean_token_mean' needs sequence_lengths",
        id="seq-token-mean-without-lengths",
    ),
    pytest.param(
        {"baseline": "opo"},
        ["sequence_lengths"],
        None,
        "baseline 'opo' needs sequence_lengths",
        id="opo-without-lengths",
    ),
    pytest.param(
        {"tis_mode": "mask"},
        ["behavior_log_probs"],
        None,
        "tis_mode is 'mask' but behavior_log_probs is not sent",
        id="tis-without-behavior",
    ),
    pytest.param(
        {"behavior_log_probs": BEHAVIOR},
        ["tis_mode"],
        None,
        "tis_mode is not",
        id="behavior-without-tis",
    ),
    pytest.param(
        {"tis_mode": "truncate", "behavior_log_probs": BEHAVIOR, "tis_max": 0},
        ["tis_max"],
        "meta",
        "tis_max is 0; expected a finite number > 0",
        id="tis-max-zero",
    ),
    pytest.param(
        {"tis_mode": "truncate", "behavior_log_probs": BEHAVIOR, "tis_min": 2.0},
        ["tis_min"],
        None,
        "tis_min is 2.0; expected a number below tis_max",
        id="tis-min-at-max",
    ),
    pytest.param(
        {"tis_mode": "truncate", "behavior_log_probs": BEHAVIOR, "tis_min": -0.5},
        ["tis_min"],
        "meta",
        "tis_min is -0.5; expected a number >= 0",
        id="tis-min-negative",
    ),
    pytest.param(
        {"kl_loss_coef": -0.1},
        ["kl_loss_coef"],
        "meta",
        "kl_loss_coef is -0.1; expected a number >= 0",
        id="kl-loss-negative",
    ),
    pytest.param(
        {"policy_loss": "ppo"},
        ["policy_loss"],
        "meta",
        "policy_loss is 'ppo'; expected one of 'pg', 'ppo_clip', 'gspo', 'cispo'",
        id="unknown-loss",
    ),
    pytest.param(
        {"loss_agg": "mean"},
        ["loss_agg"],
        "meta",
        "loss_agg is 'mean'; expected one of 'seq_mean', 'sum', 'seq_mean_token_mean', "
        "'token_mean', 'constant'",
        id="unknown-aggregation",
    ),
    pytest.param(
        {"kl_loss_type": "low_var_kl"},
        ["kl_loss_type"],
        "meta",
        "kl_loss_type is 'low_var_kl'; expected one of 'k1', 'k2', 'k3', 'abs'",
        id="unknown-kl-loss-type",
    ),
    pytest.param(
        {"tis_mode": "clip", "behavior_log_probs": BEHAVIOR},
        ["tis_mode"],
        "meta",
        "tis_mode is 'clip'; expected one of 'truncate', 'mask'",
        id="unknown-tis-mode",
    ),
    pytest.param(
        {"baseline": "rf++"},
        ["baseline"],
        "meta",
        "expected one of 'none', 'mean', 'rloo', 'grpo', 'reinforce_pp', 'opo'",
        id="unknown-baseline",
    ),
    pytest.param(
        {"grpo_scale": "group"},
        ["grpo_scale"],
        "meta",
        "expected one of 'std', 'none', 'batch'",
        id="unknown-scale",
    ),
    pytest.param(
        {"loss_agg": "constant"},
        ["loss_agg_constant"],
        None,
        "loss_agg 'constant' needs loss_agg_constant",
        id="constant-without-constant",
    ),
    pytest.param(
        {"loss_agg": "constant", "loss_agg_constant": 0},
        ["loss_agg_constant"],
        "meta",
        "loss_agg_constant is 0; expected a finite number > 0",
        id="constant-zero",
    ),
    pytest.param(
        {"log_ratio_clamp": 0},
        ["log_ratio_clamp"],
        "meta",
        "log_ratio_clamp is 0; expected a finite number > 0",
        id="log-ratio-clamp-zero",
    ),
    pytest.param(
        {"kl_loss_clamp": -1},
        ["kl_loss_clamp"],
        "meta",
        "kl_loss_clamp is -1; expected a finite number > 0",
        id="kl-loss-clamp-negative",
    ),
    pytest.param(
        {"reward_clip": [2, 1]},
        ["reward_clip"],
        None,
        "reward_clip is [2.0, 1.0]; expected [low, high]",
        id="reward-clip-reversed",
    ),
    pytest.param(
        {"reward_clip": [1, 2, 3]},
        ["reward_clip"],
        "meta",
        "expected a JSON number > 0, or an array [low, high]",
        id="reward-clip-triple",
    ),
    pytest.param(
        {"policy_log_probs": [[-1.0, -2.0]] * B},
        ["policy_log_probs", 0],
        ["policy_log_probs"],
        "needs per-token data",
        id="per-token-log-probs",
    ),
    pytest.param(
        {"policy_loss": "ppo_clip", "old_log_probs": [[-1.0, -2.0]] * B},
        ["old_log_probs", 0],
        ["old_log_probs"],
        "needs per-token data",
        id="per-token-old-log-probs",
    ),
    pytest.param(
        {"entropy_coef": 0.01},
        ["entropy_coef"],
        "meta",
        "entropy_coef is not an option here: it needs per-token data",
        id="entropy-coef",
    ),
    pytest.param(
        {"importance_sampling_level": "token"},
        ["importance_sampling_level"],
        "meta",
        "importance_sampling_level is not an option here: it needs per-token data",
        id="token-level-ratios",
    ),
]


def post(client: TestClient, wire: str, fields: dict[str, Any]) -> Any:
    if wire == "json":
        return client.post("/update", json=fields)
    tensors, metadata = as_safetensors(fields)
    return client.post("/update", content=save(tensors, metadata=metadata or None), headers=BINARY)


@pytest.mark.parametrize("wire", ["json", "safetensors"])
@pytest.mark.parametrize(("changes", "json_loc", "binary_loc", "phrase"), RULES)
def test_every_rule_is_a_422_naming_the_field(
    client: TestClient,
    wire: str,
    changes: dict[str, Any],
    json_loc: list[Any],
    binary_loc: list[Any] | str | None,
    phrase: str,
) -> None:
    problem = assert_problem(post(client, wire, {**BASE, **changes}), 422)
    assert problem["type"] == "urn:rlhf-update:problem:invalid-payload"
    loc = json_loc
    if wire == "safetensors" and binary_loc == "meta":
        loc = ["__metadata__", *json_loc]
    elif wire == "safetensors" and binary_loc is not None:
        loc = binary_loc  # type: ignore[assignment]
    assert problem["errors"][0]["loc"] == loc, problem
    if wire == "json" or binary_loc is None or binary_loc == "meta":
        assert phrase in problem["detail"], problem["detail"]


EVERYTHING: dict[str, Any] = {
    "policy_loss": "ppo_clip",
    "old_log_probs": OLD,
    "clip_eps_low": 0.1,
    "clip_eps_high": 0.28,
    "dual_clip_c": 2.0,
    "log_ratio_clamp": 5.0,
    "sequence_lengths": [3, 1, 4, 1],
    "loss_agg": "token_mean",
    "kl_loss_coef": 0.05,
    "kl_loss_type": "k2",
    "kl_loss_clamp": 10.0,
    "behavior_log_probs": BEHAVIOR,
    "tis_mode": "truncate",
    "tis_max": 1.1,
    "tis_min": 0.9,
    "tis_batch_normalize": True,
    "baseline": "opo",
    "group_ids": [0, 0, 1, 1],
    "reward_clip": [-0.5, 1.0],
}


@pytest.mark.parametrize("wire", ["json", "safetensors"])
def test_every_new_field_reaches_the_core(client: TestClient, wire: str) -> None:
    body = post(client, wire, {**BASE, **EVERYTHING}).json()
    arrays = {k: np.asarray(v) for k, v in BASE.items() if k not in ("beta", "lr")}
    options: dict[str, Any] = {
        k: tuple(v) if k == "reward_clip" else v for k, v in EVERYTHING.items()
    }
    direct = compute_update(
        **arrays, beta=BASE["beta"], lr=BASE["lr"], options=UpdateOptions(**options)
    )
    assert body["weights"] == direct.weights.tolist()
    ref = reference_options_update(**BASE, **EVERYTHING)
    assert body["weights"] == pytest.approx(ref.weights, rel=1e-12)
    for name, want in ref.extra_stats.items():
        assert body["stats"][name] == pytest.approx(want, rel=1e-12, abs=1e-15), name


def test_both_formats_answer_the_same_bits(client: TestClient) -> None:
    from_json = post(client, "json", {**BASE, **EVERYTHING})
    binary = post(client, "safetensors", {**BASE, **EVERYTHING})
    assert binary.content == from_json.content


def test_reward_clip_pair_travels_as_json_text_in_metadata(client: TestClient) -> None:
    tensors, _ = as_safetensors(BASE)
    binary = client.post(
        "/update", content=save(tensors, metadata={"reward_clip": "[-0.5, 1]"}), headers=BINARY
    )
    from_json = client.post("/update", json={**BASE, "reward_clip": [-0.5, 1]})
    assert binary.status_code == 200
    assert binary.content == from_json.content
    bad = client.post(
        "/update", content=save(tensors, metadata={"reward_clip": "[1, -1]"}), headers=BINARY
    )
    assert assert_problem(bad, 422)["errors"][0]["loc"] == ["reward_clip"]


NEUTRAL: dict[str, Any] = {
    "policy_loss": "pg",
    "old_log_probs": None,
    "clip_eps_low": 0.2,
    "clip_eps_high": None,
    "dual_clip_c": None,
    "log_ratio_clamp": 20.0,
    "sequence_lengths": None,
    "loss_agg": "seq_mean",
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


@pytest.mark.parametrize("seed", range(5))
def test_the_new_fields_left_out_or_neutral_give_the_same_bytes(
    client: TestClient, seed: int
) -> None:
    args = random_batch(seed, 9, 7)
    plain = client.post("/update", json=args)
    explicit = client.post("/update", json={**args, **NEUTRAL})
    assert plain.status_code == 200
    assert explicit.content == plain.content
    stats = json.loads(plain.content)["stats"]
    assert set(stats) == {
        "kl_mean",
        "kl_max",
        "reward_mean",
        "reward_std",
        "adjusted_reward_mean",
        "advantage_mean",
        "advantage_std",
        "grad_norm",
        "clipped",
        "update_norm",
        "kl_estimates",
    }
    # The seed formula of the product, in the same operations: the rows summed in order.
    w, r = np.asarray(args["weights"]), np.asarray(args["rewards"])
    p, q = np.asarray(args["policy_log_probs"]), np.asarray(args["ref_log_probs"])
    grads = np.asarray(args["log_prob_grads"])
    coefficient = r - args["beta"] * (p - q)
    total = coefficient[0] * grads[0]
    for c, row in zip(coefficient[1:], grads[1:], strict=True):
        total = total + c * row
    seed_formula = w + args["lr"] * (total / r.size)
    assert json.loads(plain.content)["weights"] == seed_formula.tolist()


def test_feature_stats_appear_with_their_feature(client: TestClient) -> None:
    ppo = client.post("/update", json={**BASE, "policy_loss": "ppo_clip"}).json()["stats"]
    assert {"ratio_mean", "clip_frac", "active_frac", "approx_kl_old"} <= set(ppo)
    assert "dual_clip_frac" not in ppo
    assert "kl_loss_mean" not in ppo
    assert "tis_ess" not in ppo
    both = client.post(
        "/update",
        json={**BASE, "kl_loss_coef": 0.1, "tis_mode": "mask", "behavior_log_probs": BEHAVIOR},
    ).json()["stats"]
    assert "ratio_mean" not in both
    assert {"kl_loss_mean", "tis_weight_mean", "tis_masked_frac", "tis_ess"} <= set(both)
