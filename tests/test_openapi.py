"""The OpenAPI document: the contract a user reads in /docs."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from app.core import UpdateStats
from app.schemas import UpdateStatsModel


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


def test_documented_stats_are_the_computed_stats() -> None:
    assert list(UpdateStatsModel.model_fields) == list(UpdateStats.__dataclass_fields__)


def test_docs_page_is_served(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
