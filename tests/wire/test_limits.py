"""RLHF_MAX_ELEMENTS: B*N + B + N above the cap is 413, naming both numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save

from app.errors import TooManyElementsError
from app.main import create_app
from app.settings import Settings
from app.wire.limits import check_element_count
from tests.helpers.tensors import BINARY, example_tensors


def test_element_count_is_grads_plus_vectors() -> None:
    # B*N + B + N: 1 + 1 + 1 = 3, and 40 + 4 + 10 = 54.
    check_element_count(1, 1, 1, 3)
    with pytest.raises(TooManyElementsError, match=r"= 3 elements"):
        check_element_count(1, 1, 1, 2)
    check_element_count(4, 10, 40, 54)
    with pytest.raises(TooManyElementsError, match=r"= 54 elements"):
        check_element_count(4, 10, 40, 53)


def test_check_passes_at_the_limit_and_fails_above() -> None:
    check_element_count(2, 2, 4, 8)
    with pytest.raises(TooManyElementsError, match=r"= 11 elements \(B = 2, N = 3\).* limit is 8"):
        check_element_count(2, 3, 6, 8)


def test_update_above_the_element_limit_is_413(example: dict[str, Any]) -> None:
    # The reference example has B = 2, N = 2: 2*2 + 2 + 2 = 8 elements.
    with TestClient(create_app(Settings(max_elements=7))) as client:
        response = client.post("/update", json=example)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:rlhf-update:problem:too-many-elements"
    assert "8 elements" in problem["detail"]
    assert "limit is 7" in problem["detail"]
    assert "RLHF_MAX_ELEMENTS" in problem["detail"]


def test_update_at_the_element_limit_is_served(example: dict[str, Any]) -> None:
    with TestClient(create_app(Settings(max_elements=8))) as client:
        assert client.post("/update", json=example).status_code == 200


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_binary_update_above_the_element_limit_is_413(dtype: type[np.floating[Any]]) -> None:
    with TestClient(create_app(Settings(max_elements=7))) as client:
        response = client.post("/update", content=save(example_tensors(dtype)), headers=BINARY)
    assert response.status_code == 413
    problem = response.json()
    assert problem["type"] == "urn:rlhf-update:problem:too-many-elements"
    assert "= 8 elements (B = 2, N = 2)" in problem["detail"]
    assert "limit is 7" in problem["detail"]


def test_binary_arrays_of_the_wrong_rank_are_counted_then_refused_by_the_core() -> None:
    # rewards as a scalar: counted by size, then the core names the rank problem (not a 500).
    tensors = example_tensors() | {"rewards": np.array(1.0)}
    with TestClient(create_app(Settings(max_elements=8))) as client:
        response = client.post("/update", content=save(tensors), headers=BINARY)
    assert response.status_code == 422
    assert ["rewards"] in [error["loc"] for error in response.json()["errors"]]


def test_gradients_larger_than_b_times_n_count_as_sent() -> None:
    # Shapes that disagree (the core would say so) cannot slip a large gradient past the cap.
    tensors = example_tensors() | {"log_prob_grads": np.zeros((2, 1000))}
    with TestClient(create_app(Settings(max_elements=1000))) as client:
        response = client.post("/update", content=save(tensors), headers=BINARY)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "2004 elements (log_prob_grads has 2000, B = 2, N = 2)" in detail
    assert "limit is 1000" in detail
