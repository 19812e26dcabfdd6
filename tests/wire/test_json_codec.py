"""The JSON decoder on its own: the fast path reads bodies exactly as the Pydantic model does."""

from __future__ import annotations

import json
import struct
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import UpdateOptions
from app.errors import InvalidPayloadError
from app.wire.json_codec import decode_request
from app.wire.schemas import UpdateRequest
from tests.helpers.tensors import example_tensors

FIELDS = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70)


@settings(deadline=None)  # no wall-clock limit on a shared machine
@given(
    weights=st.lists(finite, min_size=1, max_size=5),
    rows=st.integers(1, 3),
    beta=finite.filter(lambda x: x >= 0),
)
def test_json_fast_path_equals_the_pydantic_model_bit_for_bit(
    weights: list[Any], rows: int, beta: float
) -> None:
    fields = {
        "weights": weights,
        "rewards": weights[:1] * rows,
        "policy_log_probs": [-0.0] * rows,
        "ref_log_probs": [0] * rows,
        "log_prob_grads": [weights[::-1]] * rows,
        "beta": beta,
        "lr": 0,
    }
    body = json.dumps(fields).encode()
    payload = decode_request(body)
    model = UpdateRequest.model_validate_json(body)
    for field in FIELDS:
        expected = np.array(getattr(model, field), dtype=np.float64).ravel()
        got = np.asarray(getattr(payload, field)).ravel()
        assert got.tobytes() == expected.tobytes(), field
    assert struct.pack("<d", payload.beta) == struct.pack("<d", model.beta)


def test_json_duplicate_keys_keep_the_last_value_on_both_paths() -> None:
    body = json.dumps(example_tensors_as_json()).encode()
    body = body.replace(b'"lr": 0.1', b'"lr": 0.5, "lr": 0.1')
    assert decode_request(body).lr == UpdateRequest.model_validate_json(body).lr == 0.1


def example_tensors_as_json() -> dict[str, Any]:
    return {name: value.tolist() for name, value in example_tensors().items()}


OPTION_CASES = [
    {"baseline": "grpo", "group_ids": [3, 3], "normalize_advantages": True},
    {"kl_estimator": "low_var_kl", "kl_clamp": 5, "reward_clip": 2.5, "max_grad_norm": 1e-3},
    {"target_kl": 0.1, "kl_horizon": 1000, "grpo_scale": "none", "group_ids": None},
    {"baseline": "rloo", "group_ids": [-(2**63), 2**63 - 1]},
    {
        "policy_loss": "gspo",
        "old_log_probs": [-1.0, -2.5],
        "sequence_lengths": [3, 2**63 - 1],
        "dual_clip_c": 3,
        "clip_eps_low": 0,
        "clip_eps_high": 0.28,
        "loss_agg": "constant",
        "loss_agg_constant": 512,
        "kl_loss_coef": 0.001,
        "kl_loss_type": "abs",
        "kl_loss_clamp": 10,
        "behavior_log_probs": [-1.25, -2.0],
        "tis_mode": "mask",
        "tis_max": 3,
        "tis_min": 0,
        "tis_batch_normalize": True,
        "reward_clip": [-1, 2.5],
        "baseline": "opo",
        "grpo_scale": "batch",
    },
    {"reward_clip": [-1e308, 1e308], "loss_agg": None, "tis_mode": None, "log_ratio_clamp": 1},
]


@pytest.mark.parametrize("options", OPTION_CASES)
def test_options_take_the_fast_path_and_read_as_the_model_reads_them(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps(example_tensors_as_json() | options).encode()
    expected = UpdateRequest.model_validate_json(body).to_options()

    def refuse(*_: object, **__: object) -> None:
        msg = "the whole body went through the Pydantic model"
        raise AssertionError(msg)

    monkeypatch.setattr(UpdateRequest, "model_validate_json", refuse)
    got = decode_request(body).options
    assert [getattr(got, f.name) for f in fields(UpdateOptions)] == [
        getattr(expected, f.name) for f in fields(UpdateOptions)
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"baseline": "ppo"},
        {"max_grad_norm": 0},
        {"normalize_advantages": 1},
        {"group_ids": [1.5, 2]},
        {"group_ids": [2**63, 1]},
        {"kl_clamp": "1"},
        {"sequence_lengths": [1, 0]},
        {"sequence_lengths": [1.0, 2]},
        {"old_log_probs": [[-1.0], [-2.0]]},
        {"reward_clip": [1, "2"]},
        {"reward_clip": True},
        {"dual_clip_c": 1},
        {"clip_eps_low": 1},
        {"loss_agg": "mean"},
        {"entropy_coef": 0.01},
    ],
)
def test_options_the_model_refuses_get_its_worded_errors(options: dict[str, Any]) -> None:
    body = json.dumps(example_tensors_as_json() | options).encode()
    with pytest.raises(InvalidPayloadError) as info:
        decode_request(body)
    assert info.value.problems[0].loc[0] == next(iter(options))
