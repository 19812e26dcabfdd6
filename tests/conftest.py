from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from scripts.ray_cluster import RAY_ENV
from tests.helpers.reference import EXAMPLE

# Ray reads some of these once, when it is first imported (by a test module, or by the
# doctests of app/ray_serve.py): set before any is, for every Ray process a test starts.
os.environ.update(RAY_ENV)


@pytest.fixture(autouse=True)
def _service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from the service's defaults, whatever the shell running them exports."""
    for name in list(os.environ):
        if name.startswith("RLHF_") or name in _SERVICE_VARIABLES:
            monkeypatch.delenv(name)


_SERVICE_VARIABLES = {"HOST", "PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}


@pytest.fixture
def settings() -> Settings:
    return Settings(host="127.0.0.1", port=8000, max_body_size=1024 * 1024, log_level="info")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def example() -> dict[str, Any]:
    """A fresh copy of the reference example, free to modify."""
    return copy.deepcopy(EXAMPLE)
