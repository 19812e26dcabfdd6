from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings(host="127.0.0.1", port=8000, max_body_size=1024 * 1024, log_level="info")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def example() -> dict[str, Any]:
    """The reference example of the product description; answer [1.05, 0.95]."""
    return {
        "weights": [1.0, 1.0],
        "rewards": [1.0, 1.0],
        "policy_log_probs": [-1.5, -1.5],
        "ref_log_probs": [-1.5, -1.5],
        "log_prob_grads": [[0.5, -0.5], [0.5, -0.5]],
        "beta": 1.0,
        "lr": 0.1,
    }
