"""The safetensors decoder on its own: the arrays are read-only views on the body."""

from __future__ import annotations

import json
import os
import struct
import time

import numpy as np
import pytest
from safetensors.numpy import load, save

from app.errors import InvalidPayloadError, MalformedSafetensorsError
from app.wire.safetensors_codec import MAX_HEADER_BYTES, MAX_HEADER_ENTRIES, decode_request
from tests.helpers.tensors import example_tensors

FIELDS = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


def test_safetensors_arrays_are_read_only_views_on_the_body() -> None:
    tensors = example_tensors() | {"log_prob_grads": np.arange(2000.0).reshape(2, 1000)}
    tensors["weights"] = np.ones(1000)
    body = bytearray(save(tensors))
    payload = decode_request(body)
    whole = np.frombuffer(body, dtype=np.uint8)
    for field in FIELDS:
        array = getattr(payload, field)
        assert np.shares_memory(array, whole), field
        assert not array.flags.writeable
        assert np.array_equal(array, tensors[field])
    assert (payload.beta, payload.lr) == (1.0, 0.1)


def _validated_by_safetensors(body: bytes) -> bytearray:
    """The same file with its header's tensors written twice (the later copy of a name
    wins), which the service leaves to `safetensors.safe_open` to read; a plain header it
    reads itself."""
    length = struct.unpack("<Q", body[:8])[0]
    header = json.loads(body[8 : 8 + length])
    entries = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in header.items()]
    tensors = [entry for entry, name in zip(entries, header, strict=True) if name != "__metadata__"]
    text = ("{" + ", ".join([*tensors, *entries]) + "}").encode()
    text += b" " * (-len(text) % 8)
    return bytearray(struct.pack("<Q", len(text)) + text + body[8 + length :])


def test_safetensors_header_is_read_without_memfd_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Platforms without memfd_create (macOS) show safetensors the header in a temporary file.
    monkeypatch.delattr(os, "memfd_create")
    tensors = example_tensors()
    payload = decode_request(_validated_by_safetensors(save(tensors)))
    for field in FIELDS:
        assert np.array_equal(getattr(payload, field), tensors[field])
    with pytest.raises(MalformedSafetensorsError):
        decode_request(bytearray(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}'))


@pytest.mark.parametrize(
    ("extra", "metadata", "options"),
    [
        pytest.param({}, None, {}, id="plain"),
        pytest.param(
            {"weights": np.ones(2, np.float32)},
            {"baseline": "rloo"},
            {"baseline": "rloo"},
            id="f32-options",
        ),
        pytest.param(
            {"group_ids": np.array([3, 3], np.int16), "old_log_probs": np.array([-1.0, -2.0])},
            {"reward_clip": "[-1, 2]", "kl_estimator": "k3"},
            {"reward_clip": (-1.0, 2.0), "kl_estimator": "k3"},
            id="per-sample",
        ),
    ],
)
def test_a_header_read_by_the_service_is_read_as_safetensors_reads_it(
    extra: dict[str, np.ndarray], metadata: dict[str, str] | None, options: dict[str, object]
) -> None:
    body = save(example_tensors() | extra, metadata=metadata)
    reference = load(body)  # the library's own reader, a copy of every tensor
    for payload in (
        decode_request(bytearray(body)),
        decode_request(_validated_by_safetensors(body)),
    ):
        for name, tensor in reference.items():
            value = getattr(payload, name) if hasattr(payload, name) else None
            if value is None or name in ("beta", "lr"):
                value = getattr(payload.options, name, value)
            value = np.asarray(value)
            assert value.dtype == tensor.dtype, name
            assert np.array_equal(value.reshape(tensor.shape), tensor), name
        for name, expected in options.items():
            assert getattr(payload.options, name) == expected, name


def test_per_sample_options_are_tensors_of_any_float_or_integer_dtype() -> None:
    tensors = example_tensors() | {
        "old_log_probs": np.array([-1.0, -2.0], np.float32),
        "behavior_log_probs": np.array([-1.5, -2.5]),
        "sequence_lengths": np.array([3, 4], np.uint16),
        "group_ids": np.array([7, 7], np.int8),
    }
    payload = decode_request(bytearray(save(tensors, metadata={"reward_clip": "[-1, 2]"})))
    options = payload.options
    for name in ("old_log_probs", "behavior_log_probs", "sequence_lengths", "group_ids"):
        value = getattr(options, name)
        assert np.array_equal(value, tensors[name]), name
        assert value.dtype == tensors[name].dtype
    assert options.reward_clip == (-1.0, 2.0)


@pytest.mark.parametrize(
    ("tensor", "value", "phrase"),
    [
        (
            "old_log_probs",
            np.array([1, 2]),
            "old_log_probs has dtype I64; expected one of F64, F32, F16, BF16",
        ),
        ("sequence_lengths", np.array([1.0, 2.0]), "expected an integer dtype"),
    ],
)
def test_per_sample_tensors_of_the_wrong_kind_are_named(
    tensor: str, value: np.ndarray, phrase: str
) -> None:
    with pytest.raises(InvalidPayloadError, match=phrase) as info:
        decode_request(bytearray(save(example_tensors() | {tensor: value})))
    assert info.value.problems[0].loc == (tensor,)


@pytest.mark.parametrize(
    ("key", "phrase"),
    [
        ("sequence_lengths", "send it as an integer tensor of shape (B,)"),
        ("old_log_probs", "send it as a float tensor of shape (B,)"),
        ("entropy_coef", "needs per-token data"),
    ],
)
def test_per_sample_options_and_per_token_ones_are_refused_in_metadata(
    key: str, phrase: str
) -> None:
    with pytest.raises(InvalidPayloadError) as info:
        decode_request(bytearray(save(example_tensors(), metadata={key: "[1, 2]"})))
    assert info.value.problems[0].loc == ("__metadata__", key)
    assert phrase in info.value.problems[0].msg


def _header_only(header: dict[str, object]) -> bytearray:
    text = json.dumps(header).encode()
    return bytearray(struct.pack("<Q", len(text)) + text)


def _tensors(count: int) -> dict[str, object]:
    return {f"t{i}": {"dtype": "F64", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}


@pytest.mark.parametrize(
    ("header", "phrase"),
    [
        pytest.param(_tensors(300_000), f"at most {MAX_HEADER_BYTES}", id="300k-tensors"),
        pytest.param(
            {"__metadata__": {f"k{i}": "v" for i in range(400_000)}},
            f"at most {MAX_HEADER_BYTES}",
            id="400k-metadata-keys",
        ),
        pytest.param(
            {"__metadata__": {"baseline": "x" * MAX_HEADER_BYTES}},
            f"at most {MAX_HEADER_BYTES}",
            id="long-value",
        ),
        pytest.param(
            _tensors(MAX_HEADER_ENTRIES + 1), f"at most {MAX_HEADER_ENTRIES} in all", id="entries"
        ),
        pytest.param(
            _tensors(MAX_HEADER_ENTRIES // 2)
            | {"__metadata__": {f"k{i}": "v" for i in range(MAX_HEADER_ENTRIES // 2 + 1)}},
            f"at most {MAX_HEADER_ENTRIES} in all",
            id="tensors-and-metadata",
        ),
    ],
)
def test_a_header_beyond_the_limits_is_refused_at_once(
    header: dict[str, object], phrase: str
) -> None:
    body = _header_only(header)
    start = time.perf_counter()
    with pytest.raises(MalformedSafetensorsError, match="safetensors header too large") as info:
        decode_request(body)
    assert time.perf_counter() - start < 0.05  # 12 s on the event loop before
    assert phrase in info.value.detail
    assert len(info.value.detail) < 200


def test_a_header_at_the_limits_is_read_and_its_names_judged() -> None:
    # Right at the entry limit the header is read: its problems are the payload's (422).
    with pytest.raises(InvalidPayloadError) as info:
        decode_request(_header_only(_tensors(MAX_HEADER_ENTRIES)))
    assert info.value.problems[0].loc == ("weights",)
