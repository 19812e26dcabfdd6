"""The OpenAPI document: the contract a user reads in /docs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load, save

from app.errors import PROBLEM_TYPE_PREFIX, PROBLEM_TYPES
from app.main import create_app
from app.settings import Settings
from app.wire.schemas import UpdateOptionsModel
from tests.helpers.reference import reference_weights


def _update_operation(client: TestClient) -> dict[str, Any]:
    document = client.get("/openapi.json").json()
    operation: dict[str, Any] = document["paths"]["/update"]["post"]
    return operation


def test_request_example_is_the_reference_example(
    client: TestClient, example: dict[str, Any]
) -> None:
    media = _update_operation(client)["requestBody"]["content"]["application/json"]
    assert media["example"] == example


def test_request_schema_lists_every_field_and_forbids_others(client: TestClient) -> None:
    schema = _update_operation(client)["requestBody"]["content"]["application/json"]["schema"]
    fields = [
        "weights",
        "rewards",
        "policy_log_probs",
        "ref_log_probs",
        "log_prob_grads",
        "beta",
        "lr",
    ]
    assert sorted(schema["required"]) == sorted(fields)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["log_prob_grads"]["items"]["items"]["type"] == "number"
    assert schema["properties"]["beta"]["minimum"] == 0


def test_responses_are_documented(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    responses = _update_operation(client)["responses"]
    ok_schema = responses["200"]["content"]["application/json"]["schema"]
    assert ok_schema == {"$ref": "#/components/schemas/UpdateResponse"}
    for status in ("400", "408", "413", "415", "422", "503"):
        problem = responses[status]["content"]["application/problem+json"]["schema"]
        assert problem == {"$ref": "#/components/schemas/Problem"}
    stats = document["components"]["schemas"]["UpdateStatsModel"]["properties"]
    assert all(prop.get("description") for prop in stats.values())


def test_docs_page_is_served(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_options_are_documented_with_their_allowed_values(client: TestClient) -> None:
    schema = _update_operation(client)["requestBody"]["content"]["application/json"]["schema"]
    props = schema["properties"]
    options = list(UpdateOptionsModel.model_fields)
    assert all(props[name]["description"] for name in options)
    assert not set(options) & set(schema["required"])
    assert props["baseline"]["enum"] == ["none", "mean", "rloo", "grpo", "reinforce_pp", "opo"]
    assert props["kl_estimator"]["enum"] == ["k1", "k2", "k3", "abs", "kl", "mse", "low_var_kl"]
    assert props["grpo_scale"]["enum"] == ["std", "none", "batch"]
    assert props["policy_loss"]["enum"] == ["pg", "ppo_clip", "gspo", "cispo"]
    assert props["kl_loss_type"]["enum"] == ["k1", "k2", "k3", "abs"]
    assert props["loss_agg"]["anyOf"][0]["enum"] == [
        "seq_mean",
        "sum",
        "seq_mean_token_mean",
        "token_mean",
        "constant",
    ]
    assert props["tis_mode"]["anyOf"][0]["enum"] == ["truncate", "mask"]
    positive = ("kl_clamp", "reward_clip", "max_grad_norm", "target_kl", "kl_horizon")
    for name in (*positive, "loss_agg_constant", "kl_loss_clamp"):
        assert props[name]["anyOf"][0] == {"exclusiveMinimum": 0, "type": "number"}
    assert props["reward_clip"]["anyOf"][1] == {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 2,
        "maxItems": 2,
    }
    assert props["dual_clip_c"]["anyOf"][0] == {"exclusiveMinimum": 1, "type": "number"}
    assert props["clip_eps_low"]["minimum"] == 0
    assert props["clip_eps_low"]["exclusiveMaximum"] == 1
    for name in ("group_ids", "sequence_lengths"):
        assert props[name]["anyOf"][0]["items"]["type"] == "integer"
    assert props["sequence_lengths"]["anyOf"][0]["items"]["minimum"] == 1
    for name in ("old_log_probs", "behavior_log_probs"):
        assert props[name]["anyOf"][0]["items"]["type"] == "number"


def test_kl_estimates_are_described(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    estimates = schemas["KlEstimatesModel"]["properties"]
    assert set(estimates) == {"k1", "k2", "k3"}
    assert all(prop.get("description") for prop in estimates.values())


def test_the_operation_id_is_update(client: TestClient) -> None:
    assert _update_operation(client)["operationId"] == "update"


def test_the_200_example_is_the_live_answer_to_the_request_example(
    client: TestClient, example: dict[str, Any]
) -> None:
    content = _update_operation(client)["responses"]["200"]["content"]["application/json"]
    answer = client.post("/update", json=example)
    assert answer.status_code == 200
    assert content["example"] == answer.json()
    # And the answer is the update itself, by an independent reference (math.fsum).
    arrays = {k: np.asarray(v) for k, v in example.items() if k not in ("beta", "lr")}
    expected = reference_weights(arrays, example["beta"], example["lr"])
    assert content["example"]["weights"] == pytest.approx(expected, rel=1e-15)


_TOKEN = "docs-token"


@pytest.fixture
def guarded() -> TestClient:
    settings = Settings(api_token=_TOKEN, max_body_size=4096, max_elements=100, max_in_flight=3)
    return TestClient(create_app(settings))


def _error_examples(client: TestClient) -> dict[str, dict[str, dict[str, Any]]]:
    responses = _update_operation(client)["responses"]
    return {
        status: doc["content"]["application/problem+json"]["examples"]
        for status, doc in responses.items()
        if status != "200" and status != "default"
    }


# Problem types /update's handler never answers: the disconnect nobody reads, the readiness
# probe's, and those the HTTP protocol answers before the app sees the request.
NOT_FROM_UPDATE = {
    "client-disconnected",
    "not-ready",
    "malformed-request",
    "header-timeout",
    "uri-too-long",
    "headers-too-large",
}


def test_every_documented_error_has_an_example_of_each_of_its_problem_types(
    guarded: TestClient,
) -> None:
    examples = _error_examples(guarded)
    assert set(examples) == {"400", "401", "408", "413", "415", "422", "503"}
    # Every problem type of /update's statuses is shown; the disconnect nobody reads is not.
    expected_types = {
        status: {
            f"{PROBLEM_TYPE_PREFIX}{kind.slug}"
            for kind in PROBLEM_TYPES
            if str(kind.status) == status and kind.slug not in NOT_FROM_UPDATE
        }
        for status in examples
    }
    for status, named in examples.items():
        kinds = {kind.slug: kind for kind in PROBLEM_TYPES}
        assert {e["value"]["type"] for e in named.values()} == expected_types[status]
        for name, entry in named.items():
            value, kind = entry["value"], kinds[name]
            assert value["type"] == PROBLEM_TYPE_PREFIX + name
            assert (value["status"], value["title"]) == (kind.status, kind.title)
            assert value["detail"]
            assert len(value["request_id"]) == 32


def _square_batch(example: dict[str, Any], side: int) -> dict[str, Any]:
    return example | {
        "weights": [1.0] * side,
        "rewards": [1.0] * side,
        "policy_log_probs": [-1.5] * side,
        "ref_log_probs": [-1.5] * side,
        "log_prob_grads": [[0.5] * side] * side,
    }


def test_the_error_examples_are_what_the_service_answers(
    guarded: TestClient, example: dict[str, Any]
) -> None:
    examples = _error_examples(guarded)
    auth = {"Authorization": f"Bearer {_TOKEN}"}
    requests: dict[tuple[str, str], dict[str, Any]] = {
        ("400", "malformed-json"): {"content": b'{"weights": [1.0, 2.0', "headers": auth},
        ("400", "malformed-safetensors"): {
            "content": b"\x10\x00",
            "headers": auth | {"content-type": "application/x-safetensors"},
        },
        ("401", "unauthorized"): {"json": example},
        ("413", "body-too-large"): {"content": b" " * 5000, "headers": auth},
        ("413", "too-many-elements"): {  # B = N = 11: 121 + 11 + 11 elements
            "json": _square_batch(example, 11),
            "headers": auth,
        },
        ("415", "unsupported-media-type"): {
            "content": b"x",
            "headers": auth | {"content-type": "text/plain"},
        },
        ("422", "invalid-payload"): {
            "json": example | {"log_prob_grads": [[0.5, -0.5], [0.5]]},
            "headers": auth,
        },
        ("422", "update-overflow"): {
            "json": example | {"weights": [1.7e308, 1.0], "lr": 1e308},
            "headers": auth,
        },
    }
    for (status, name), request in requests.items():
        documented = examples[status][name]["value"]
        answer = guarded.post("/update", **request).json()
        assert answer.pop("request_id")
        assert documented.pop("request_id")
        assert answer == documented, name
    assert (
        "serving 3 updates (RLHF_MAX_IN_FLIGHT)" in examples["503"]["saturated"]["value"]["detail"]
    )


def test_the_safetensors_bodies_are_described_by_tensor_and_metadata_key(
    client: TestClient, example: dict[str, Any]
) -> None:
    operation = _update_operation(client)
    binary = "application/x-safetensors"
    request = operation["requestBody"]["content"][binary]["schema"]
    response = operation["responses"]["200"]["content"][binary]["schema"]
    assert request["format"] == response["format"] == "binary"
    layout = request["x-safetensors"]
    per_sample = {"group_ids", "sequence_lengths", "old_log_probs", "behavior_log_probs"}
    state = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"}
    # The optimizer's state: its vectors as tensors, its step as one metadata key.
    assert layout["metadata"] == [
        *(
            name
            for name in UpdateOptionsModel.model_fields
            if name not in per_sample and name != "optimizer_state"
        ),
        "optimizer_state.step",
    ]
    optional = {name for name, spec in layout["tensors"].items() if not spec["required"]}
    assert optional == per_sample | state
    for name in layout["metadata"]:
        assert name in request["description"]
    # A body built from the description alone, in its first listed dtype, is accepted.
    b, n = 2, 2
    sizes = {"B": b, "N": n}
    tensors = {}
    for name, spec in layout["tensors"].items():
        if not spec["required"]:
            continue
        dims = [
            sizes[d.strip()]
            for d in spec["shape"].split(" or ")[0].strip("()").split(",")
            if d.strip()
        ]
        source = np.asarray(example[name], dtype=np.float64).reshape(dims)
        tensors[name] = source.astype(spec["dtypes"][-1].replace("F", "float"))
    assert set(tensors) == set(example)
    answer = client.post(
        "/update", content=save(tensors), headers={"content-type": binary, "accept": binary}
    )
    assert answer.status_code == 200
    [tensor] = response["x-safetensors"]["tensors"]
    assert tensor in load(answer.content)
    assert set(response["x-safetensors"]["metadata"]) == {"stats", "optimizer_state.step"}
