"""GET /info: the service's version, limits, formats and options."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app import __version__
from app.core.options import BASELINES, GRPO_SCALES, KL_ESTIMATORS
from app.main import create_app
from app.settings import Settings
from app.wire.schemas import UpdateOptionsModel


@pytest.fixture
def limited() -> Settings:
    return Settings(
        max_body_size=12345,
        max_elements=678,
        max_in_flight=3,
        max_queue=4,
        queue_timeout_seconds=1.5,
        body_timeout_seconds=7.0,
        api_token="secret",
    )


def test_info_states_the_settings_limits_without_a_token(limited: Settings) -> None:
    with TestClient(create_app(limited)) as client:
        answer = client.get("/info")
    assert answer.status_code == 200
    info = answer.json()
    assert info["version"] == __version__
    assert info["limits"] == {
        "max_body_size": 12345,
        "max_elements": 678,
        "max_in_flight": 3,
        "max_queue": 4,
        "queue_timeout_seconds": 1.5,
        "body_timeout_seconds": 7.0,
    }
    assert "secret" not in answer.text
    assert set(info["request_media_types"]) == {"application/json", "application/x-safetensors"}
    assert {"F64", "F32"} <= set(info["safetensors_dtypes"])


def test_info_lists_every_option_with_its_default_and_allowed_values(client: TestClient) -> None:
    options = client.get("/info").json()["options"]
    assert list(options) == list(UpdateOptionsModel.model_fields)
    assert options["kl_estimator"] == {
        "default": "k1",
        "allowed": list(KL_ESTIMATORS),
        "description": UpdateOptionsModel.model_fields["kl_estimator"].description,
    }
    assert options["baseline"]["allowed"] == list(BASELINES)
    assert options["grpo_scale"]["allowed"] == list(GRPO_SCALES)
    assert options["max_grad_norm"] == {
        "default": None,
        "allowed": None,
        "description": UpdateOptionsModel.model_fields["max_grad_norm"].description,
    }
    assert options["normalize_advantages"]["default"] is False


def test_info_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/info"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ServiceInfo"}
