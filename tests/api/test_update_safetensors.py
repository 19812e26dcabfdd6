"""POST /update with safetensors bodies: the same rules and results as JSON, in binary."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from safetensors.numpy import load, save

from app.core import rlhf_weight_update
from tests.helpers.asgi import body_chunks, raw_post
from tests.helpers.problems import assert_problem
from tests.helpers.reference import reference_weights
from tests.helpers.tensors import BINARY, BINARY_BOTH_WAYS, SAFETENSORS, example_tensors


def random_tensors(rng: np.random.Generator, b: int, n: int) -> dict[str, NDArray[Any]]:
    scale = 10.0 ** rng.integers(-200, 200, n)
    return {
        "weights": rng.standard_normal(n) * scale,
        "rewards": rng.standard_normal(b) * 10,
        "policy_log_probs": rng.standard_normal(b) - 2,
        "ref_log_probs": rng.standard_normal(b) - 2,
        "log_prob_grads": rng.standard_normal((b, n)),
        "beta": np.array(rng.uniform(0, 1)),
        "lr": np.array(rng.uniform(0, 1e-2)),
    }


def as_json(tensors: dict[str, NDArray[Any]]) -> bytes:
    return json.dumps({name: value.tolist() for name, value in tensors.items()}).encode()


def raw_safetensors(header: Any, data: bytes) -> bytes:
    """A safetensors file with a hand-written header, for bodies the writer would refuse."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def laid_out(tensors: dict[str, NDArray[Any] | tuple[str, list[int], bytes]]) -> bytes:
    """A safetensors file of arrays and of (dtype, shape, bytes) the NumPy writer lacks."""
    header: dict[str, Any] = {}
    data = b""
    for name, tensor in tensors.items():
        if isinstance(tensor, tuple):
            dtype, shape, raw = tensor
        else:
            dtype, shape, raw = (
                {8: "F64", 4: "F32"}[tensor.itemsize],
                list(tensor.shape),
                tensor.tobytes(),
            )
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    return raw_safetensors(header, data)


def bits(values: NDArray[Any]) -> list[int]:
    as_ints: list[int] = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64).tolist()
    return as_ints


def test_reference_example_in_binary_both_ways(client: TestClient) -> None:
    response = client.post("/update", content=save(example_tensors()), headers=BINARY_BOTH_WAYS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == SAFETENSORS
    answer = load(response.content)
    assert list(answer) == ["weights"]
    assert answer["weights"].dtype == np.float64
    np.testing.assert_allclose(answer["weights"], [1.05, 0.95], rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_binary_and_json_give_identical_float64_results(client: TestClient, seed: int) -> None:
    rng = np.random.default_rng(seed)
    b, n = int(rng.integers(1, 9)), int(rng.integers(1, 300))
    tensors = random_tensors(rng, b, n)
    from_json = client.post("/update", content=as_json(tensors)).json()
    binary = client.post("/update", content=save(tensors), headers=BINARY_BOTH_WAYS)
    from_binary = load(binary.content)["weights"]
    # The stats ride in the safetensors metadata as the same JSON object.
    metadata = json.loads(binary.content[8 : 8 + int.from_bytes(binary.content[:8], "little")])
    expected = rlhf_weight_update(
        **{k: v for k, v in tensors.items() if k not in {"beta", "lr"}},
        beta=float(tensors["beta"]),
        lr=float(tensors["lr"]),
    )
    assert bits(from_binary) == bits(np.array(from_json["weights"])) == bits(expected)
    assert json.loads(metadata["__metadata__"]["stats"]) == from_json["stats"]
    # And both are the update itself, by the independent pure-Python reference.
    np.testing.assert_allclose(
        from_binary,
        reference_weights(tensors, float(tensors["beta"]), float(tensors["lr"])),
        rtol=1e-12,
        atol=0,
    )


def test_scalars_may_be_one_element_tensors(client: TestClient) -> None:
    tensors = example_tensors() | {"beta": np.array([1.0]), "lr": np.array([0.1])}
    response = client.post("/update", content=save(tensors), headers=BINARY)
    assert response.json()["weights"] == pytest.approx([1.05, 0.95], abs=1e-15)


def test_float32_in_float32_out(client: TestClient) -> None:
    rng = np.random.default_rng(7)
    tensors = {
        name: value.astype(np.float32)
        for name, value in random_tensors(rng, 5, 40).items()
        if name != "weights"  # spread over float64's range, beyond float32's
    }
    tensors["weights"] = rng.standard_normal(40).astype(np.float32)
    response = client.post("/update", content=save(tensors), headers=BINARY_BOTH_WAYS)
    weights = load(response.content)["weights"]
    assert weights.dtype == np.float32
    # Computed in float64 from the float32 inputs, then rounded once to float32.
    expected = rlhf_weight_update(
        **{k: v.astype(np.float64) for k, v in tensors.items() if k not in {"beta", "lr"}},
        beta=float(tensors["beta"]),
        lr=float(tensors["lr"]),
    ).astype(np.float32)
    assert weights.tobytes() == expected.tobytes()
    np.testing.assert_allclose(
        weights,
        reference_weights(tensors, float(tensors["beta"]), float(tensors["lr"])),
        rtol=1e-6,
        atol=0,
    )
    # As JSON, each float32 prints as its shortest decimal, which reads back to the same float32.
    as_json_answer = client.post("/update", content=save(tensors), headers=BINARY).json()
    assert np.array(as_json_answer["weights"], dtype=np.float32).tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("weights_dtype", "other_dtype"),
    [(np.float32, np.float64), (np.float64, np.float32)],
    ids=["f32-weights", "f64-weights"],
)
def test_answer_has_the_dtype_of_the_weights(
    client: TestClient, weights_dtype: type[np.floating[Any]], other_dtype: type[np.floating[Any]]
) -> None:
    tensors = example_tensors(other_dtype)
    tensors["weights"] = tensors["weights"].astype(weights_dtype)
    response = client.post("/update", content=save(tensors), headers=BINARY_BOTH_WAYS)
    assert load(response.content)["weights"].dtype == weights_dtype


def test_float32_overflow_is_422_naming_the_weight(client: TestClient) -> None:
    tensors = example_tensors(np.float32)
    tensors["weights"] = np.array([1.0, 3.3e38], np.float32)
    tensors["log_prob_grads"] = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
    tensors["lr"] = np.array(1e38, np.float32)
    response = client.post("/update", content=save(tensors), headers=BINARY)
    problem = assert_problem(response, 422, "weights[1]", "overflows float32")
    assert problem["type"] == "urn:rlhf-update:problem:update-overflow"
    assert problem["errors"][0]["loc"] == ["new_weights", 1]


# -- negotiation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(None, "application/json", id="none"),
        pytest.param("application/json", "application/json", id="json"),
        pytest.param("*/*", "application/json", id="any"),
        pytest.param(SAFETENSORS, SAFETENSORS, id="safetensors"),
        pytest.param(f"application/json, {SAFETENSORS};q=0.5", "application/json", id="listed"),
        pytest.param(f"application/json;q=0.5, {SAFETENSORS}", SAFETENSORS, id="preferred"),
        pytest.param(f"{SAFETENSORS}, */*;q=0.1", SAFETENSORS, id="over-any"),
        pytest.param(f"{SAFETENSORS.upper()}", SAFETENSORS, id="any-case"),
        pytest.param(f"{SAFETENSORS};q=0, application/json", "application/json", id="q0"),
    ],
)
@pytest.mark.parametrize("request_format", ["json", "safetensors"])
def test_accept_picks_the_answer_format_for_either_request_format(
    client: TestClient, accept: str | None, expected: str, request_format: str
) -> None:
    tensors = example_tensors()
    if request_format == "json":
        headers, body = {"content-type": "application/json"}, as_json(tensors)
    else:
        headers, body = dict(BINARY), save(tensors)
    if accept is not None:
        headers["accept"] = accept
    response = client.post("/update", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == expected
    weights = (
        load(response.content)["weights"]
        if expected == SAFETENSORS
        else np.array(response.json()["weights"])
    )
    np.testing.assert_allclose(weights, [1.05, 0.95], rtol=0, atol=1e-15)


def test_octet_stream_is_read_as_safetensors(client: TestClient) -> None:
    headers = {"content-type": "application/octet-stream"}
    response = client.post("/update", content=save(example_tensors()), headers=headers)
    assert response.status_code == 200, response.text


def test_errors_are_problem_json_whatever_the_accept_header(client: TestClient) -> None:
    tensors = example_tensors() | {"beta": np.array(-1.0)}
    response = client.post("/update", content=save(tensors), headers=BINARY_BOTH_WAYS)
    assert_problem(response, 422, "beta is -1.0")


# -- malformed bodies: 400 ------------------------------------------------------------------

F64_2 = {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        pytest.param(b"", "the body has 0 bytes", id="empty"),
        pytest.param(b"\x10\x00\x00", "starts with an 8-byte header length", id="short"),
        pytest.param(b"\xff" * 8 + b"{}", "runs past the end", id="huge-header-length"),
        pytest.param(struct.pack("<Q", 100) + b"{}", "runs past the end", id="header-past-body"),
        pytest.param(struct.pack("<Q", 5) + b"{abc}", "invalid JSON", id="not-json"),
        pytest.param(struct.pack("<Q", 2) + b"\xff\xfe", "invalid UTF-8", id="not-utf8"),
        pytest.param(raw_safetensors([1, 2], b""), "invalid JSON", id="header-not-object"),
        pytest.param(save(example_tensors())[:-3], "not fully covered", id="truncated-data"),
        pytest.param(save(example_tensors()) + b"\0" * 8, "not fully covered", id="trailing"),
        pytest.param(raw_safetensors({"a": F64_2}, b"\0" * 8), "not fully covered", id="oob"),
        pytest.param(
            raw_safetensors(
                {"a": F64_2, "b": {"dtype": "F64", "shape": [1], "data_offsets": [8, 16]}},
                b"\0" * 16,
            ),
            "invalid offset",
            id="overlapping",
        ),
        pytest.param(
            raw_safetensors(
                {"a": F64_2, "b": {"dtype": "F64", "shape": [1], "data_offsets": [24, 32]}},
                b"\0" * 32,
            ),
            "invalid offset",
            id="gap",
        ),
        pytest.param(
            raw_safetensors(
                {"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16
            ),
            "invalid shape, data type, or offset",
            id="shape-disagrees-with-offsets",
        ),
        pytest.param(
            raw_safetensors(
                {"a": {"dtype": "X" * 5000, "shape": [2], "data_offsets": [0, 2]}}, b"\0\0"
            ),
            "unknown variant",
            id="unknown-dtype",
        ),
        pytest.param(
            raw_safetensors({"a": {"dtype": "F64", "shape": [-2], "data_offsets": [0, 16]}}, b""),
            "invalid JSON",
            id="negative-dimension",
        ),
        pytest.param(
            raw_safetensors({"__metadata__": {"k": 1}}, b""), "expected a string", id="meta-int"
        ),
    ],
)
def test_malformed_safetensors_is_400(client: TestClient, body: bytes, phrase: str) -> None:
    problem = assert_problem(client.post("/update", content=body, headers=BINARY), 400, phrase)
    assert problem["type"] == "urn:rlhf-update:problem:malformed-safetensors"
    assert problem["detail"].startswith("malformed safetensors: ")
    assert len(problem["detail"]) < 400


# -- invalid payloads: 422 -----------------------------------------------------------------


def _with(**changes: NDArray[Any] | None) -> bytes:
    tensors = example_tensors() | {k: v for k, v in changes.items() if v is not None}
    return save({k: v for k, v in tensors.items() if k not in changes or changes[k] is not None})


@pytest.mark.parametrize(
    ("body", "loc", "phrase"),
    [
        pytest.param(_with(lr=None), ["lr"], "lr is missing; expected a scalar", id="missing"),
        pytest.param(
            _with(betta=np.array(1.0)),
            ["betta"],
            "unknown tensor 'betta' (did you mean 'beta'?)",
            id="extra",
        ),
        pytest.param(
            _with(rewards=np.array([1, 1])),
            ["rewards"],
            "rewards has dtype I64; expected one of F64, F32, F16, BF16",
            id="int-dtype",
        ),
        pytest.param(
            _with(weights=np.array([1, 1], np.uint8)),
            ["weights"],
            "weights has dtype U8; expected one of F64, F32, F16, BF16",
            id="u8",
        ),
        pytest.param(
            _with(beta=np.array(True)),
            ["beta"],
            "beta has dtype BOOL; expected one of F64, F32, F16, BF16",
            id="bool-dtype",
        ),
        pytest.param(
            laid_out(example_tensors() | {"weights": ("F8_E5M2", [2], b"\x3c" * 2)}),
            ["weights"],
            "weights has dtype F8_E5M2",
            id="f8",
        ),
        pytest.param(
            _with(weights=np.ones((1, 2))),
            ["weights"],
            "weights is 2-D; expected 1-D, shape (N,)",
            id="weights-2d",
        ),
        pytest.param(
            _with(log_prob_grads=np.ones(4)),
            ["log_prob_grads"],
            "log_prob_grads is 1-D; expected 2-D",
            id="grads-1d",
        ),
        pytest.param(
            _with(log_prob_grads=np.ones((2, 3))),
            ["log_prob_grads"],
            "log_prob_grads has rows of 3 entries; expected 2 (= len(weights))",
            id="grads-columns",
        ),
        pytest.param(
            _with(ref_log_probs=np.ones(3)),
            ["ref_log_probs"],
            "ref_log_probs has 3 entries; expected 2 (= len(rewards))",
            id="short-ref",
        ),
        pytest.param(
            _with(weights=np.ones(0), log_prob_grads=np.ones((2, 0))),
            ["weights"],
            "weights is empty",
            id="empty-weights",
        ),
        pytest.param(
            _with(beta=np.ones(2)), ["beta"], "beta has shape (2,); expected a scalar", id="beta-2"
        ),
        pytest.param(
            _with(lr=np.array(-0.5)), ["lr"], "lr is -0.5; expected a finite number >= 0", id="neg"
        ),
        pytest.param(
            _with(log_prob_grads=np.array([[0.5, -0.5], [0.5, np.nan]])),
            ["log_prob_grads", 1, 1],
            "log_prob_grads[1][1] is nan; expected a finite number",
            id="nan",
        ),
        pytest.param(
            _with(rewards=np.array([1.0, -np.inf])),
            ["rewards", 1],
            "rewards[1] is -inf; expected a finite number",
            id="inf",
        ),
        pytest.param(
            save(example_tensors(), metadata={"baseline": "median"}),
            ["__metadata__", "baseline"],
            "baseline is 'median'; expected one of 'none', 'mean'",
            id="bad-option",
        ),
        pytest.param(
            save(example_tensors(), metadata={"max_grad_norm": "-1"}),
            ["__metadata__", "max_grad_norm"],
            "max_grad_norm is -1; expected a finite number > 0",
            id="negative-option",
        ),
        pytest.param(
            save(example_tensors(), metadata={"normalise_advantages": "true"}),
            ["__metadata__", "normalise_advantages"],
            "unknown key 'normalise_advantages' (did you mean 'normalize_advantages'?)",
            id="unknown-option",
        ),
        pytest.param(
            save(example_tensors(), metadata={"group_ids": "[0, 1]"}),
            ["__metadata__", "group_ids"],
            "send it as an integer tensor",
            id="group-ids-in-metadata",
        ),
        pytest.param(
            _with(group_ids=np.array([0, 1, 2])),
            ["group_ids"],
            "group_ids has 3 entries; expected 2 integers",
            id="group-ids-length",
        ),
        pytest.param(
            _with(group_ids=np.array([0.0, 1.0])),
            ["group_ids"],
            "group_ids has dtype F64; expected an integer dtype",
            id="float-groups",
        ),
        pytest.param(
            _with(group_ids=np.array([2**64 - 1, 0], dtype=np.uint64)),
            ["group_ids"],
            "group_ids holds integers beyond int64",
            id="u64-groups",
        ),
        pytest.param(
            save(example_tensors(), metadata={"kl_horizon": "soon", "target_kl": "0.1"}),
            ["__metadata__", "kl_horizon"],
            "kl_horizon is a string ('soon'); expected a number",
            id="option-not-a-number",
        ),
        pytest.param(
            save(example_tensors(), metadata={"normalize_advantages": "maybe"}),
            ["__metadata__", "normalize_advantages"],
            "normalize_advantages is a string ('maybe'); expected true or false",
            id="option-not-a-bool",
        ),
    ],
)
def test_invalid_safetensors_payload_is_422_naming_the_tensor(
    client: TestClient, body: bytes, loc: list[Any], phrase: str
) -> None:
    problem = assert_problem(client.post("/update", content=body, headers=BINARY), 422, phrase)
    assert problem["type"] == "urn:rlhf-update:problem:invalid-payload"
    assert problem["errors"][0]["loc"] == loc


def test_options_from_metadata_and_group_ids_match_json(client: TestClient) -> None:
    rng = np.random.default_rng(11)
    tensors = random_tensors(rng, 6, 50)
    group_ids = np.array([3, 3, 7, 7, 7, 1])
    options = {
        "baseline": "grpo",
        "kl_estimator": "low_var_kl",
        "normalize_advantages": "true",
        "max_grad_norm": "0.5",
        "target_kl": "0.01",
        "kl_horizon": "1000",
    }
    binary = client.post(
        "/update",
        content=save(tensors | {"group_ids": group_ids}, metadata=options),
        headers=BINARY,
    ).json()
    fields = json.loads(as_json(tensors)) | {
        "group_ids": group_ids.tolist(),
        "baseline": "grpo",
        "kl_estimator": "low_var_kl",
        "normalize_advantages": True,
        "max_grad_norm": 0.5,
        "target_kl": 0.01,
        "kl_horizon": 1000,
    }
    from_json = client.post("/update", json=fields).json()
    assert "next_beta" in from_json["stats"]
    assert binary == from_json


def test_every_tensor_problem_is_listed(client: TestClient) -> None:
    tensors = {k: v for k, v in example_tensors().items() if k not in {"beta", "lr"}}
    tensors |= {"rewards": np.array([1, 1]), "extra": np.ones(1)}
    problem = assert_problem(client.post("/update", content=save(tensors), headers=BINARY), 422)
    assert [error["loc"] for error in problem["errors"]] == [
        ["beta"],
        ["lr"],
        ["extra"],
        ["rewards"],
    ]


def test_body_above_the_limit_is_413(client: TestClient) -> None:
    tensors = example_tensors() | {"log_prob_grads": np.ones((2, 100_000))}
    tensors["weights"] = np.ones(100_000)
    response = client.post("/update", content=save(tensors), headers=BINARY)
    assert_problem(response, 413)


def test_body_in_odd_chunks_over_raw_asgi(client: TestClient) -> None:
    body = save(random_tensors(np.random.default_rng(3), 3, 1000))
    chunks = [body[i : i + 999] for i in range(0, len(body), 999)]
    headers = [(b"content-type", SAFETENSORS.encode()), (b"accept", SAFETENSORS.encode())]
    headers.append((b"content-length", str(len(body)).encode()))
    exchange = raw_post(client.app, headers, body_chunks(chunks))
    assert exchange.status == 200
    answer = load(b"".join(m.get("body", b"") for m in exchange.sent[1:]))
    expected = client.post("/update", content=body, headers=BINARY_BOTH_WAYS)
    assert answer["weights"].tobytes() == load(expected.content)["weights"].tobytes()


def test_stats_metadata_is_the_json_stats_object(client: TestClient) -> None:
    response = client.post("/update", content=save(example_tensors()), headers=BINARY_BOTH_WAYS)
    length = int.from_bytes(response.content[:8], "little")
    header = orjson.loads(response.content[8 : 8 + length])
    stats = json.loads(header["__metadata__"]["stats"])
    assert stats == client.post("/update", content=as_json(example_tensors())).json()["stats"]
