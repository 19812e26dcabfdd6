"""The safetensors decoder on its own: the arrays are read-only views on the body."""

from __future__ import annotations

import os

import numpy as np
import pytest
from safetensors.numpy import save

from app.errors import MalformedSafetensorsError
from app.wire.safetensors_codec import decode_request
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


def test_safetensors_header_is_read_without_memfd_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Platforms without memfd_create (macOS) show safetensors the header in a temporary file.
    monkeypatch.delattr(os, "memfd_create")
    tensors = example_tensors()
    payload = decode_request(bytearray(save(tensors)))
    for field in FIELDS:
        assert np.array_equal(getattr(payload, field), tensors[field])
    with pytest.raises(MalformedSafetensorsError):
        decode_request(bytearray(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}'))
