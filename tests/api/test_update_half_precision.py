"""Safetensors F16 and BF16: widened exactly to float64, answered in the weights' dtype.

The references are built from the bit fields with Python's own arithmetic, independent of
NumPy's and ml_dtypes' casts: F16 as sign, 5-bit exponent and 10-bit fraction through
`math.ldexp`; BF16 as the upper half of a float32, read by `struct`.
"""

from __future__ import annotations

import json
import math
import struct
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from safetensors.numpy import save

from app.wire.safetensors_codec import decode_request
from tests.helpers.problems import assert_problem
from tests.helpers.tensors import BINARY, BINARY_BOTH_WAYS, example_tensors

ALL_PATTERNS = np.arange(2**16, dtype=np.uint32)


def f16_reference(pattern: int) -> float:
    sign = -1.0 if pattern >> 15 else 1.0
    exponent, fraction = (pattern >> 10) & 0x1F, pattern & 0x3FF
    if exponent == 0x1F:
        return sign * math.inf if fraction == 0 else math.nan
    if exponent == 0:
        return sign * math.ldexp(fraction, -24)
    return sign * math.ldexp(1024 + fraction, exponent - 25)


def bf16_reference(pattern: int) -> float:
    value: float = struct.unpack("<f", struct.pack("<I", pattern << 16))[0]
    return value


REFERENCES = {"F16": f16_reference, "BF16": bf16_reference}


def laid_out(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytearray:
    """A safetensors file of (dtype, shape, bytes), whatever NumPy can write."""
    header: dict[str, Any] = {}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    return bytearray(struct.pack("<Q", len(text)) + text + data)


def tensor_of(body: bytes, name: str) -> tuple[str, bytes]:
    """The dtype code and the raw bytes of one tensor of a safetensors file."""
    length = int.from_bytes(body[:8], "little")
    entry = json.loads(body[8 : 8 + length])[name]
    start, end = entry["data_offsets"]
    return entry["dtype"], body[8 + length + start : 8 + length + end]


def half_body(code: str, patterns: NDArray[np.uint16], **others: NDArray[Any]) -> bytearray:
    """The reference example with `weights` (and its gradient rows) as `patterns` of `code`."""
    n = patterns.size
    tensors = example_tensors()
    fields: dict[str, tuple[str, list[int], bytes]] = {
        name: ("F64", list(value.shape), value.tobytes())
        for name, value in tensors.items()
        if name not in ("weights", "log_prob_grads")
    }
    fields["weights"] = (code, [n], patterns.astype("<u2").tobytes())
    grads = others.get("log_prob_grads")
    fields["log_prob_grads"] = (
        (code, [2, n], bytes(4 * n))  # zeros, in the weights' dtype
        if grads is None
        else ("F64", list(grads.shape), grads.astype("<f8").tobytes())
    )
    for name, value in others.items():
        if name != "log_prob_grads":
            fields[name] = ("F64", list(value.shape), value.astype("<f8").tobytes())
    return laid_out(fields)


@pytest.mark.parametrize("code", ["F16", "BF16"])
def test_every_bit_pattern_widens_exactly_to_float64(code: str) -> None:
    payload = decode_request(half_body(code, ALL_PATTERNS.astype(np.uint16)))
    with np.errstate(invalid="ignore"):  # ml_dtypes flags the NaN patterns' cast
        widened = np.asarray(payload.weights, dtype=np.float64)
    expected = np.array([REFERENCES[code](int(p)) for p in ALL_PATTERNS])
    finite = np.isfinite(expected)
    assert widened[finite].tobytes() == expected[finite].tobytes()
    assert np.array_equal(np.isnan(widened), np.isnan(expected))
    assert np.array_equal(widened[np.isinf(expected)], expected[np.isinf(expected)])


@pytest.mark.parametrize("code", ["F16", "BF16"])
def test_every_finite_pattern_comes_back_bit_for_bit_with_lr_0(
    client: TestClient, code: str
) -> None:
    reference = REFERENCES[code]
    finite = np.array([p for p in ALL_PATTERNS if math.isfinite(reference(int(p)))], np.uint16)
    body = half_body(code, finite, lr=np.array(0.0))
    response = client.post("/update", content=bytes(body), headers=BINARY_BOTH_WAYS)
    assert response.status_code == 200, response.text
    dtype, raw = tensor_of(response.content, "weights")
    assert dtype == code
    assert raw == finite.astype("<u2").tobytes()
    # As JSON, the same weights widened to float64: each reads back to its exact value.
    response = client.post("/update", content=bytes(body), headers=BINARY)
    got = np.array(response.json()["weights"], dtype=np.float64)
    assert got.tobytes() == np.array([reference(int(p)) for p in finite]).tobytes()


def nearest_even(value: Fraction, candidates: list[float]) -> float:
    """The candidate nearest `value`, the one with the even last bit on a tie."""
    ranked = sorted(candidates, key=lambda c: (abs(Fraction(c) - value), 0))
    best = [c for c in ranked if abs(Fraction(c) - value) == abs(Fraction(ranked[0]) - value)]
    return best[0] if len(best) == 1 else min(best, key=lambda c: _pattern_parity(c))


def _pattern_parity(value: float) -> int:
    bits: int = struct.unpack("<I", struct.pack("<f", value))[0]
    return (bits >> 16) & 1


def test_new_bf16_weights_are_rounded_once_from_float64(client: TestClient) -> None:
    # weights + lr * grad lands between two BF16 values: 1 + 2**-8 + 2**-30 is above the
    # tie 1 + 2**-8, so it rounds up; rounding to float32 first would make it a tie, down.
    steps = [2.0**-8 + 2.0**-30, 2.0**-8, 3 * 2.0**-8, -(2.0**-9) - 2.0**-40]
    n = len(steps)
    ones = np.full(n, 0x3F80, np.uint16)  # 1.0 in BF16
    grads = np.array([steps, steps])  # the rows are equal, so grad = steps (rewards are 1)
    body = half_body("BF16", ones, log_prob_grads=grads, lr=np.array(1.0), beta=np.array(0.0))
    response = client.post("/update", content=bytes(body), headers=BINARY_BOTH_WAYS)
    assert response.status_code == 200, response.text
    _, raw = tensor_of(response.content, "weights")
    got = [bf16_reference(int(p)) for p in np.frombuffer(raw, "<u2")]
    near_one = [bf16_reference(p) for p in range(0x3F70, 0x3F90)]
    assert got == [nearest_even(1 + Fraction(step), near_one) for step in steps]
    assert got[0] == 1 + 2**-7


@pytest.mark.parametrize(
    ("code", "name", "largest"), [("F16", "float16", 0x7BFF), ("BF16", "bfloat16", 0x7F7F)]
)
def test_a_new_weight_beyond_the_half_range_is_422_naming_it(
    client: TestClient, code: str, name: str, largest: int
) -> None:
    patterns = np.array([0x3C00 if code == "F16" else 0x3F80, largest], np.uint16)
    top = REFERENCES[code](largest)
    grads = np.array([[0.0, top], [0.0, top]])
    body = half_body(code, patterns, log_prob_grads=grads, lr=np.array(1.0), beta=np.array(0.0))
    response = client.post("/update", content=bytes(body), headers=BINARY)
    problem = assert_problem(response, 422, "weights[1]", f"overflows {name}")
    assert problem["type"] == "urn:rlhf-update:problem:update-overflow"
    assert problem["errors"][0]["loc"] == ["new_weights", 1]


def test_half_precision_gradients_give_the_float64_answer_of_their_values(
    client: TestClient,
) -> None:
    rng = np.random.default_rng(3)
    grads16 = rng.standard_normal((2, 8)).astype(np.float16)
    tensors = example_tensors()
    tensors["weights"] = rng.standard_normal(8)
    tensors["log_prob_grads"] = grads16
    as_float64 = tensors | {"log_prob_grads": grads16.astype(np.float64)}
    half = client.post("/update", content=save(tensors), headers=BINARY)
    full = client.post("/update", content=save(as_float64), headers=BINARY)
    assert half.status_code == full.status_code == 200
    assert half.json() == full.json()


@pytest.mark.parametrize(("code", "pattern"), [("F16", 0x7E00), ("BF16", 0x7FC0), ("BF16", 0xFF80)])
def test_a_non_finite_half_value_is_422_naming_it(
    client: TestClient, code: str, pattern: int
) -> None:
    body = half_body(code, np.array([0, pattern], np.uint16))
    problem = assert_problem(client.post("/update", content=bytes(body), headers=BINARY), 422)
    assert problem["errors"][0]["loc"] == ["weights", 1]
    assert "finite" in problem["detail"]
