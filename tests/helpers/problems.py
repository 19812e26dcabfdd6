"""The shape every error answer of the service has: an RFC 9457 problem document."""

from __future__ import annotations

from typing import Any

PROBLEM_KEYS = {"type", "title", "status", "detail", "errors"}


def assert_problem(response: Any, status: int, *fields: str) -> dict[str, Any]:
    """The response is problem+json with this status, naming each of `fields`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem.keys() >= PROBLEM_KEYS
    assert problem["status"] == status
    assert isinstance(problem["errors"], list)
    for error in problem["errors"]:
        assert set(error) == {"loc", "msg"}
    for field in fields:
        assert field in problem["detail"], (field, problem["detail"])
    assert "Traceback" not in response.text
    return problem
