"""The OpenAPI document: the contract a user reads in /docs."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from app.wire.schemas import UpdateOptionsModel


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
    for status in ("400", "413", "415", "422"):
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
