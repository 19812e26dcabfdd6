"""The decoders on their own: zero-copy safetensors views, and the JSON fast path's equivalence."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from app import json_codec
from app.errors import InvalidPayloadError, MalformedSafetensorsError, UnsupportedMediaTypeError
from app.json_codec import decode_update_request
from app.media import response_format, wire_format
from app.options import UpdateOptions
from app.safetensors_codec import decode_safetensors
from app.schemas import UpdateRequest
from tests.test_safetensors_api import example_tensors

FIELDS = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


def test_safetensors_arrays_are_read_only_views_on_the_body() -> None:
    tensors = example_tensors() | {"log_prob_grads": np.arange(2000.0).reshape(2, 1000)}
    tensors["weights"] = np.ones(1000)
    body = bytearray(save(tensors))
    payload = decode_safetensors(body)
    whole = np.frombuffer(body, dtype=np.uint8)
    for field in FIELDS:
        array = getattr(payload, field)
        assert np.shares_memory(array, whole), field
        assert not array.flags.writeable
        assert np.array_equal(array, tensors[field])
    assert (payload.beta, payload.lr) == (1.0, 0.1)


def test_safetensors_header_is_read_without_memfd_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Platforms without memfd_create (macOS) show safetensors the header in a temporary file.
    monkeypatch.delattr(os, "memfd_create")
    tensors = example_tensors()
    payload = decode_safetensors(bytearray(save(tensors)))
    for field in FIELDS:
        assert np.array_equal(getattr(payload, field), tensors[field])
    with pytest.raises(MalformedSafetensorsError):
        decode_safetensors(bytearray(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}'))


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
    payload = decode_update_request(body)
    model = UpdateRequest.model_validate_json(body)
    for field in FIELDS:
        expected = np.array(getattr(model, field), dtype=np.float64).ravel()
        got = np.asarray(getattr(payload, field)).ravel()
        assert got.tobytes() == expected.tobytes(), field
    assert struct.pack("<d", payload.beta) == struct.pack("<d", model.beta)


def test_json_duplicate_keys_keep_the_last_value_on_both_paths() -> None:
    body = json.dumps(example_tensors_as_json()).encode()
    body = body.replace(b'"lr": 0.1', b'"lr": 0.5, "lr": 0.1')
    assert decode_update_request(body).lr == UpdateRequest.model_validate_json(body).lr == 0.1


def example_tensors_as_json() -> dict[str, Any]:
    return {name: value.tolist() for name, value in example_tensors().items()}


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, "json"),
        ("application/json", "json"),
        ("application/problem+json; charset=utf-8", "json"),
        ("application/x-safetensors", "safetensors"),
        ("Application/Octet-Stream", "safetensors"),
    ],
)
def test_wire_format(content_type: str | None, expected: str) -> None:
    assert wire_format(content_type) == expected


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-numpy"])
def test_wire_format_refuses_other_media_types(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="application/x-safetensors"):
        wire_format(content_type)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("application/x-safetensors;q=0.1, application/json", "safetensors"),
        ("application/x-safetensors; q=0.0", "json"),
        ("application/x-safetensors; q=bogus", "safetensors"),
    ],
)
def test_response_format(accept: str | None, expected: str) -> None:
    assert response_format(accept) == expected


OPTION_CASES = [
    {"baseline": "grpo", "group_ids": [3, 3], "normalize_advantages": True},
    {"kl_estimator": "low_var_kl", "kl_clamp": 5, "reward_clip": 2.5, "max_grad_norm": 1e-3},
    {"target_kl": 0.1, "kl_horizon": 1000, "grpo_scale": "none", "group_ids": None},
    {"baseline": "rloo", "group_ids": [-(2**63), 2**63 - 1]},
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
    got = decode_update_request(body).options
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
    ],
)
def test_options_the_model_refuses_get_its_worded_errors(options: dict[str, Any]) -> None:
    body = json.dumps(example_tensors_as_json() | options).encode()
    with pytest.raises(InvalidPayloadError) as info:
        decode_update_request(body)
    assert info.value.problems[0].loc[0] == next(iter(options))


def test_json_payloads_are_known_finite_and_binary_ones_are_scanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = json.dumps(example_tensors_as_json()).encode()
    assert decode_update_request(body).finite  # msgspec's fast path
    monkeypatch.setattr(json_codec, "_decode_valid", lambda body: None)
    assert decode_update_request(body).finite  # the Pydantic model's path
    assert not decode_safetensors(bytearray(save(example_tensors()))).finite
