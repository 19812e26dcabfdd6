"""Bodies built to hurt: deep nesting, huge literals, megabyte names, empty arrays.

Whatever they hold, the answer is a 4xx problem document of a few KiB that names the
field, never a 500 and never a traceback in the logs.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save

from app.main import create_app
from app.settings import Settings
from app.wire.schemas import UpdateRequest
from tests.helpers.problems import assert_problem
from tests.helpers.tensors import BINARY, example_tensors

FIELDS = list(UpdateRequest.model_fields)
# A problem document stays this small whatever the body holds.
FEW_KIB = 4096


def _with_raw(example: dict[str, Any], field: str, raw: str) -> bytes:
    """The example with `field` set to the raw JSON text `raw`."""
    fields = {name: json.dumps(value) for name, value in example.items() if name != field}
    fields[field] = raw
    return ("{" + ", ".join(f'"{name}": {text}' for name, text in fields.items()) + "}").encode()


def _nested(depth: int, kind: str) -> str:
    if kind == "arrays":
        return "[" * depth + "1" + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


def _assert_no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize("depth", [3, 150, 1_000, 100_000])
@pytest.mark.parametrize("field", [*FIELDS, "unknown_key"])
def test_nesting_at_any_depth_in_any_field_is_400_or_422(
    client: TestClient,
    example: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    field: str,
    depth: int,
    kind: str,
) -> None:
    body = _with_raw(example, field, _nested(depth, kind))
    with caplog.at_level(logging.INFO):
        response = client.post("/update", content=body)
    assert response.status_code in {400, 422}, response.text
    problem = assert_problem(response, response.status_code)
    assert problem["type"].rsplit(":", 1)[1] in {"malformed-json", "invalid-payload"}
    if response.status_code == 422:
        assert problem["errors"][0]["loc"][0] == field
    assert len(response.content) < FEW_KIB
    _assert_no_error_logged(caplog)


def _raw_header(header: str) -> bytes:
    text = header.encode()
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize("depth", [3, 150, 1_000, 5_000])
@pytest.mark.parametrize("where", ["metadata", "tensor", "dtype"])
def test_nesting_in_a_safetensors_header_is_400(
    client: TestClient, caplog: pytest.LogCaptureFixture, where: str, depth: int
) -> None:
    nested = _nested(depth, "arrays")
    header = {
        "metadata": '{"__metadata__": {"baseline": %s}}',
        "tensor": '{"weights": %s}',
        "dtype": '{"weights": {"dtype": %s, "shape": [0], "data_offsets": [0, 0]}}',
    }[where] % nested
    with caplog.at_level(logging.INFO):
        response = client.post("/update", content=_raw_header(header), headers=BINARY)
    problem = assert_problem(response, 400)
    assert problem["type"].endswith(":malformed-safetensors")
    _assert_no_error_logged(caplog)


BIG = "1" * 4301  # one digit past what Python converts to str


@pytest.mark.parametrize(
    ("field", "raw", "loc"),
    [
        pytest.param("rewards", f"[1.0, {BIG}]", ["rewards", 1], id="array"),
        pytest.param("weights", f"[-{BIG}0000, 1.0]", ["weights", 0], id="negative"),
        pytest.param("log_prob_grads", f"[[0.5, {BIG}], [0.5, 0.5]]", ["log_prob_grads", 0, 1]),
        pytest.param("beta", BIG, ["beta"], id="beta"),
        pytest.param("kl_clamp", BIG, ["kl_clamp"], id="option"),
        pytest.param("max_grad_norm", BIG[:400], ["max_grad_norm"], id="beyond-float"),
        pytest.param("group_ids", f"[{BIG}, 1]", ["group_ids", 0], id="group-ids"),
        pytest.param("baseline", BIG, ["baseline"], id="literal-option"),
    ],
)
def test_big_integer_literals_are_422_like_1e999(
    client: TestClient, example: dict[str, Any], field: str, raw: str, loc: list[Any]
) -> None:
    response = client.post("/update", content=_with_raw(example, field, raw))
    problem = assert_problem(response, 422)
    assert problem["type"].endswith(":invalid-payload")
    assert problem["errors"][0]["loc"] == loc
    assert "1111111111" in problem["detail"] or "inf" in problem["detail"]
    assert len(response.content) < FEW_KIB


@pytest.mark.parametrize(
    ("changes", "loc", "msg"),
    [
        pytest.param(
            {"group_ids": []},
            ["group_ids"],
            "group_ids is empty; expected 2 integers (= len(rewards))",
            id="group-ids",
        ),
        pytest.param(
            {"policy_log_probs": []},
            ["policy_log_probs"],
            "policy_log_probs is empty; expected 2 entries (= len(rewards))",
            id="policy",
        ),
        pytest.param(
            {"log_prob_grads": []},
            ["log_prob_grads"],
            "log_prob_grads is empty; expected 2 rows (= len(rewards))",
            id="grads",
        ),
        pytest.param(
            {"log_prob_grads": [[], []]},
            ["log_prob_grads", 0],
            "log_prob_grads[0] is empty; expected 2 entries (= len(weights))",
            id="rows",
        ),
        pytest.param(
            {"weights": [], "log_prob_grads": [[], []]},
            ["weights"],
            "weights is empty; expected a non-empty array of N numbers",
            id="weights",
        ),
    ],
)
def test_empty_arrays_are_named_as_empty(
    client: TestClient, example: dict[str, Any], changes: dict[str, Any], loc: list[Any], msg: str
) -> None:
    problem = assert_problem(client.post("/update", json=example | changes), 422)
    assert problem["errors"][0] == {"loc": loc, "msg": msg}


MEGABYTE = "m" * 1_000_000


@pytest.fixture
def roomy() -> Iterator[TestClient]:
    """A service that reads bodies of up to 64 MiB, as by default."""
    with TestClient(create_app(Settings(max_body_size=64 * 2**20))) as client:
        yield client


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({MEGABYTE: 1}, id="unknown-key"),
        pytest.param({"baseline": MEGABYTE}, id="option-value"),
        pytest.param({"kl_estimator": MEGABYTE, MEGABYTE: MEGABYTE}, id="both"),
        pytest.param({"weights": [MEGABYTE, 1.0]}, id="array-entry"),
        pytest.param({"log_prob_grads": [[0.5, MEGABYTE], [0.5, 0.5]]}, id="row-entry"),
        pytest.param({"beta": MEGABYTE}, id="scalar"),
        pytest.param({"group_ids": [MEGABYTE, 1]}, id="group-id"),
        pytest.param({f"{MEGABYTE}{i}": i for i in range(12)}, id="many-keys"),
    ],
)
def test_a_megabyte_name_or_value_is_not_echoed(
    roomy: TestClient, example: dict[str, Any], changes: dict[str, Any]
) -> None:
    response = roomy.post("/update", json=example | changes)
    assert_problem(response, 422)
    assert len(response.content) < FEW_KIB  # a 60 MB body got a 123 MB answer


@pytest.mark.parametrize(
    ("tensors", "metadata"),
    [
        pytest.param({"w" * 60_000: np.ones(1)}, {}, id="tensor-name"),
        pytest.param({}, {"k" * 60_000: "v"}, id="metadata-key"),
        pytest.param({}, {"baseline": "v" * 60_000}, id="metadata-value"),
        pytest.param({f"{'t' * 900}{i}": np.ones(1) for i in range(40)}, {}, id="many-names"),
    ],
)
def test_a_long_safetensors_name_or_value_is_not_echoed(
    client: TestClient, tensors: dict[str, Any], metadata: dict[str, str]
) -> None:
    body = save(example_tensors() | tensors, metadata=metadata or None)
    response = client.post("/update", content=body, headers=BINARY)
    assert_problem(response, 422)
    assert len(response.content) < FEW_KIB


def test_products_beyond_float64_with_a_representable_update_answer_200(
    client: TestClient,
) -> None:
    # Rewards of +-1e10 on gradients of 1e300: each product overflows, the gradient is 0.
    payload = {
        "weights": [0.5, -2.0],
        "rewards": [1e10, -1e10],
        "policy_log_probs": [0.0, 0.0],
        "ref_log_probs": [0.0, 0.0],
        "log_prob_grads": [[1e300, -1e300], [1e300, -1e300]],
        "beta": 0.0,
        "lr": 0.1,
    }
    response = client.post("/update", json=payload)
    assert response.status_code == 200, response.text
    assert response.json()["weights"] == [0.5, -2.0]
    assert response.json()["stats"]["grad_norm"] == 0.0
