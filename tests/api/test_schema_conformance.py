"""Schemathesis over the OpenAPI document, in-process: every default check plus
`negative_data_rejection`, with the token off and on. Zero failures allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection
from schemathesis.generation.case import Case

from app.main import create_app
from app.settings import Settings
from tests.helpers import fuzz_media  # noqa: F401  (registers the safetensors bodies)

TOKEN = "fuzz-token"
# The same configuration as `schemathesis run` against a live server (see the README).
_CONFIG = schemathesis.Config.from_path(str(Path(__file__).parents[2] / "schemathesis.toml"))

_open_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(Settings(max_body_size=1024 * 1024)), config=_CONFIG
)
_guarded_schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(Settings(max_body_size=1024 * 1024, api_token=TOKEN)),
    config=_CONFIG,
)
# Hundreds of generated requests: a fuzz run, not the inner loop.
pytestmark = pytest.mark.slow

_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@_open_schema.parametrize()
@_SETTINGS
def test_open_service_conforms_to_its_schema(case: Case[Any]) -> None:
    case.call_and_validate(additional_checks=[negative_data_rejection])


@_guarded_schema.parametrize()
@_SETTINGS
def test_guarded_service_conforms_to_its_schema(case: Case[Any]) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, additional_checks=[negative_data_rejection]
    )
