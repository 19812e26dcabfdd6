"""POST /update with JSON bodies over HTTP, in-process with FastAPI's TestClient."""

from __future__ import annotations

import gzip
import json
import math
import struct
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core import rlhf_weight_update
from tests.helpers.problems import assert_problem


def test_reference_example(client: TestClient, example: dict[str, Any]) -> None:
    response = client.post("/update", json=example)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["weights"] == pytest.approx([1.05, 0.95], abs=1e-15)
    assert set(body) == {"weights", "stats"}


def test_stats_are_returned(client: TestClient) -> None:
    # The hand-computed case of tests/core/test_update.py: kl = [0.5, 0], adjusted = [0.75, -2],
    # grad = [-0.125, -1, 1.75], lr = 0.5.
    payload = {
        "weights": [0.5, -1, 2],
        "rewards": [1, -2],
        "policy_log_probs": [-1.0, -0.5],
        "ref_log_probs": [-1.5, -0.5],
        "log_prob_grads": [[1, 0, 2], [0.5, 1, -1]],
        "beta": 0.5,
        "lr": 0.5,
    }
    body = client.post("/update", json=payload).json()
    assert body["weights"] == [0.4375, -1.5, 2.875]
    norm = math.sqrt(0.125**2 + 1 + 1.75**2)
    assert body["stats"] == {
        "kl_mean": 0.25,
        "kl_max": 0.5,
        "reward_mean": -0.5,
        "reward_std": pytest.approx(3 / math.sqrt(2), rel=1e-15),
        "adjusted_reward_mean": -0.625,
        "advantage_mean": -0.625,
        "advantage_std": pytest.approx(2.75 / math.sqrt(2), rel=1e-15),
        "grad_norm": pytest.approx(norm, rel=1e-15),
        "clipped": False,
        "update_norm": pytest.approx(0.5 * norm, rel=1e-15),
        "kl_estimates": {
            "k1": 0.25,
            "k2": 0.0625,
            "k3": pytest.approx((math.exp(-0.5) - 0.5) / 2, rel=1e-15),
        },
    }


def test_positive_log_probabilities_are_accepted(
    client: TestClient, example: dict[str, Any]
) -> None:
    # Log-densities of continuous policies exceed 0.
    payload = dict(example, policy_log_probs=[3.5, 2.0], ref_log_probs=[1.0, 4.0])
    assert client.post("/update", json=payload).status_code == 200


def _float_from_bits(bits: int) -> float:
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


def test_lr_zero_returns_weights_bit_for_bit(client: TestClient, example: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    special = [5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, -0.0, 0.0]
    special += [1.7976931348623157e308, -1.7976931348623157e308, 0.1, 1 / 3, 1e22, 1e23]
    random_bits = rng.integers(0, 2**64, size=500, dtype=np.uint64)
    randoms = [_float_from_bits(int(bits)) for bits in random_bits]
    weights = [w for w in special + randoms if math.isfinite(w)]
    payload = dict(
        example,
        weights=weights,
        rewards=[1.0],
        policy_log_probs=[0.0],
        ref_log_probs=[0.0],
        log_prob_grads=[[1.0] * len(weights)],
        lr=0.0,
    )
    returned = client.post("/update", content=json.dumps(payload)).json()["weights"]
    assert [struct.pack("<d", w) for w in returned] == [struct.pack("<d", w) for w in weights]


def test_response_parses_back_to_the_exact_float64_of_the_core(client: TestClient) -> None:
    rng = np.random.default_rng(2)
    b, n = 7, 300
    arrays = {
        "weights": rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": rng.standard_normal(b),
        "ref_log_probs": rng.standard_normal(b),
        "log_prob_grads": rng.standard_normal((b, n)) * 1e-3,
    }
    payload = {k: v.tolist() for k, v in arrays.items()} | {"beta": 0.3, "lr": 1e-2}
    returned = np.array(client.post("/update", json=payload).json()["weights"])
    expected = rlhf_weight_update(**arrays, beta=0.3, lr=1e-2)
    assert returned.view(np.uint64).tolist() == expected.view(np.uint64).tolist()


def test_long_decimal_literals_are_parsed_correctly_rounded(
    client: TestClient, example: dict[str, Any]
) -> None:
    rng = np.random.default_rng(3)
    literals = [
        "0.1000000000000000055511151231257827021181583404541015625",
        "2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125e-324",
        "1.7976931348623157e308",
        "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "9007199254740993",
        "-0.0",
        "1e-400",
    ]
    for _ in range(300):
        digits = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(1, 40))))
        literals.append(f"{digits[0]}.{digits[1:] or '0'}e{int(rng.integers(-330, 309))}")
    body = json.dumps(dict(example, weights=[], lr=0.0, log_prob_grads=[[1.0] * len(literals)] * 2))
    body = body.replace('"weights": []', '"weights": [' + ", ".join(literals) + "]")
    returned = client.post("/update", content=body).json()["weights"]
    assert [struct.pack("<d", w) for w in returned] == [
        struct.pack("<d", float(s)) for s in literals
    ]


def test_integers_are_numbers(client: TestClient) -> None:
    payload = {
        "weights": [1, 1],
        "rewards": [1, 1],
        "policy_log_probs": [-3, -3],
        "ref_log_probs": [-3, -3],
        "log_prob_grads": [[1, -1], [1, -1]],
        "beta": 1,
        "lr": 1,
    }
    assert client.post("/update", json=payload).json()["weights"] == [2.0, 0.0]


# -- bad input: one test per class, each naming the field ---------------------------------


@pytest.mark.parametrize(
    ("changes", "loc", "phrase"),
    [
        pytest.param(
            {"weights": ["1.0", 1.0]}, ["weights", 0], "weights[0] is a string", id="string"
        ),
        pytest.param(
            {"rewards": [1.0, True]}, ["rewards", 1], "rewards[1] is a boolean", id="bool"
        ),
        pytest.param(
            {"policy_log_probs": [None, 1.0]}, ["policy_log_probs", 0], "is null", id="null"
        ),
        pytest.param({"beta": "1"}, ["beta"], "beta is a string", id="string-beta"),
        pytest.param({"lr": False}, ["lr"], "lr is a boolean", id="bool-lr"),
        pytest.param(
            {"log_prob_grads": [[0.5, -0.5], [0.5, [1.0]]]},
            ["log_prob_grads", 1, 1],
            "log_prob_grads[1][1] is an array",
            id="nested-3d",
        ),
        pytest.param(
            {"log_prob_grads": [0.5, -0.5]},
            ["log_prob_grads", 0],
            "log_prob_grads[0] is a number (0.5); expected an array of N numbers",
            id="grads-1d",
        ),
        pytest.param({"weights": {"a": 1}}, ["weights"], "weights is an object", id="object"),
        pytest.param({"weights": 1.0}, ["weights"], "weights is a number", id="scalar-weights"),
        pytest.param({"weights": []}, ["weights"], "weights is empty", id="empty-weights"),
        pytest.param({"rewards": []}, ["rewards"], "rewards is empty", id="empty-rewards"),
        pytest.param(
            {"beta": -0.5}, ["beta"], "beta is -0.5; expected a number >= 0", id="neg-beta"
        ),
        pytest.param({"lr": -1}, ["lr"], "lr is -1; expected a number >= 0", id="neg-lr"),
        pytest.param(
            {"log_prob_grads": [[0.5, -0.5], [1.0]]},
            ["log_prob_grads", 1],
            "log_prob_grads[1] has 1 entries; expected 2 (= len(weights))",
            id="ragged",
        ),
        pytest.param(
            {"log_prob_grads": [[0.5], [1.0]]},
            ["log_prob_grads", 0],
            "log_prob_grads[0] has 1 entries; expected 2 (= len(weights))",
            id="short-rows",
        ),
        pytest.param(
            {"log_prob_grads": [[0.5, -0.5]]},
            ["log_prob_grads"],
            "log_prob_grads has 1 rows; expected 2 (= len(rewards))",
            id="few-rows",
        ),
        pytest.param(
            {"policy_log_probs": [-1.5]},
            ["policy_log_probs"],
            "policy_log_probs has 1 entries; expected 2 (= len(rewards))",
            id="short-policy",
        ),
        pytest.param(
            {"ref_log_probs": [-1.5] * 3},
            ["ref_log_probs"],
            "ref_log_probs has 3 entries; expected 2 (= len(rewards))",
            id="long-ref",
        ),
        pytest.param(
            {"betta": 1.0}, ["betta"], "unknown field 'betta' (did you mean 'beta'?)", id="misspelt"
        ),
    ],
)
def test_invalid_payload_is_422_naming_the_field(
    client: TestClient,
    example: dict[str, Any],
    changes: dict[str, Any],
    loc: list[Any],
    phrase: str,
) -> None:
    problem = assert_problem(client.post("/update", json=example | changes), 422, phrase)
    assert problem["type"] == "urn:rlhf-update:problem:invalid-payload"
    assert problem["errors"][0]["loc"] == loc
    assert phrase in problem["errors"][0]["msg"]


@pytest.mark.parametrize(
    "field",
    ["weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads", "beta", "lr"],
)
def test_missing_field_is_422(client: TestClient, example: dict[str, Any], field: str) -> None:
    del example[field]
    problem = assert_problem(client.post("/update", json=example), 422, f"{field} is missing")
    assert problem["errors"] == [{"loc": [field], "msg": problem["detail"]}]


@pytest.mark.parametrize(
    ("literal", "shown"),
    [
        pytest.param("NaN", "nan", id="nan"),
        pytest.param("Infinity", "inf", id="infinity"),
        pytest.param("-Infinity", "-inf", id="minus-infinity"),
        pytest.param("1e999", "inf", id="overflowing-literal"),
        pytest.param("-1.8e308", "-inf", id="just-beyond-max"),
        pytest.param("1" + "0" * 400, "1000000000", id="huge-integer"),
    ],
)
def test_non_finite_numbers_are_rejected(
    client: TestClient, example: dict[str, Any], literal: str, shown: str
) -> None:
    body = json.dumps(example).replace('"rewards": [1.0, 1.0]', f'"rewards": [1.0, {literal}]')
    problem = assert_problem(client.post("/update", content=body), 422, "rewards[1]", "finite")
    assert problem["errors"][0]["loc"] == ["rewards", 1]
    assert shown in problem["detail"]
    assert len(problem["detail"]) < 300


def test_every_problem_of_a_payload_is_listed(client: TestClient) -> None:
    payload = {"weights": ["x"], "rewards": [1.0], "beta": -1, "lr": 0.1, "extra": 1}
    problem = assert_problem(client.post("/update", json=payload), 422)
    locs = [error["loc"] for error in problem["errors"]]
    assert locs == [
        ["weights", 0],
        ["policy_log_probs"],
        ["ref_log_probs"],
        ["log_prob_grads"],
        ["beta"],
        ["extra"],
    ]
    assert problem["detail"].endswith("(and 5 more problems)")


def test_a_long_list_of_problems_is_capped(client: TestClient, example: dict[str, Any]) -> None:
    payload = example | {"rewards": [1.0] * 30, "log_prob_grads": [[1.0]] * 30}
    payload |= {"policy_log_probs": [0.0] * 30, "ref_log_probs": [0.0] * 30}
    problem = assert_problem(client.post("/update", json=payload), 422, "log_prob_grads[0]")
    assert [error["loc"] for error in problem["errors"]] == [
        ["log_prob_grads", i] for i in range(20)
    ]
    assert problem["detail"].endswith("(and 29 more problems)")


def test_a_million_bad_entries_give_one_error_per_field(
    client: TestClient, example: dict[str, Any]
) -> None:
    payload = example | {"log_prob_grads": [["x"] * 1000] * 200}
    problem = assert_problem(client.post("/update", json=payload), 422, "log_prob_grads[0][0]")
    assert len(problem["errors"]) == 1


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        pytest.param(b'{"weights": [1.0,', "malformed JSON", id="truncated"),
        pytest.param(b"{'weights': [1.0]}", "malformed JSON", id="single-quotes"),
        pytest.param(b'{"weights": [1.0]} trailing', "malformed JSON", id="trailing"),
        pytest.param(b"\xff\xfe{}", "malformed JSON", id="not-utf8"),
        pytest.param(b"", "request body is empty", id="empty"),
        pytest.param(b"  \n", "request body is empty", id="blank"),
    ],
)
def test_malformed_json_is_400(client: TestClient, body: bytes, phrase: str) -> None:
    response = client.post("/update", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(response, 400, phrase)
    assert problem["type"] == "urn:rlhf-update:problem:malformed-json"


@pytest.mark.parametrize("body", [b"[1, 2]", b"1.5", b'"text"', b"null"])
def test_json_that_is_not_an_object_is_422(client: TestClient, body: bytes) -> None:
    response = client.post("/update", content=body, headers={"content-type": "application/json"})
    assert_problem(response, 422, "expected a JSON object with fields weights, rewards")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
def test_non_json_content_type_is_415(
    client: TestClient, example: dict[str, Any], content_type: str
) -> None:
    response = client.post(
        "/update", content=json.dumps(example), headers={"content-type": content_type}
    )
    problem = assert_problem(response, 415, "application/json")
    assert problem["type"] == "urn:rlhf-update:problem:unsupported-media-type"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        None,
    ],
)
def test_json_content_types_are_accepted(
    client: TestClient, example: dict[str, Any], content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/update", content=json.dumps(example).encode(), headers=headers)
    assert response.status_code == 200, response.text


def test_overflowing_update_is_422_saying_so(client: TestClient, example: dict[str, Any]) -> None:
    payload = example | {"weights": [1.7e308, 1.0], "lr": 1e308}
    problem = assert_problem(client.post("/update", json=payload), 422, "overflows float64")
    assert problem["type"] == "urn:rlhf-update:problem:update-overflow"
    assert problem["errors"][0]["loc"] == ["new_weights", 0]


def test_service_keeps_serving_after_bad_requests(
    client: TestClient, example: dict[str, Any]
) -> None:
    bad_bodies = [b"", b"{", b"[]", b'{"weights": NaN}', json.dumps(example | {"lr": -1}).encode()]
    for body in bad_bodies:
        assert client.post("/update", content=body).status_code in {400, 422}
    assert client.post("/update", json=example).status_code == 200
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "gzip, identity"])
def test_a_compressed_body_is_415_saying_so(
    client: TestClient, example: dict[str, Any], coding: str
) -> None:
    body = gzip.compress(json.dumps(example).encode())
    headers = {"content-type": "application/json", "content-encoding": coding}
    response = client.post("/update", content=body, headers=headers)
    problem = assert_problem(response, 415, "Content-Encoding", "uncompressed")
    assert problem["type"] == "urn:rlhf-update:problem:unsupported-media-type"
    assert response.headers["accept-encoding"] == "identity"


def test_identity_content_coding_is_read(client: TestClient, example: dict[str, Any]) -> None:
    headers = {"content-type": "application/json", "content-encoding": "identity"}
    assert client.post("/update", json=example, headers=headers).status_code == 200


@pytest.mark.parametrize("charset", ["latin-1", "iso-8859-1", "utf-16", "ascii"])
def test_a_charset_other_than_utf8_is_415(
    client: TestClient, example: dict[str, Any], charset: str
) -> None:
    headers = {"content-type": f"application/json; charset={charset}"}
    response = client.post("/update", content=json.dumps(example).encode(), headers=headers)
    problem = assert_problem(response, 415, "charset", "UTF-8")
    assert problem["type"] == "urn:rlhf-update:problem:unsupported-media-type"
