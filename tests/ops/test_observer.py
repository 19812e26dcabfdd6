"""One log line per /update, with its numbers: status, format, sizes, shape, timings."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save

from tests.helpers.tensors import BINARY, example_tensors

FIELDS = {"request_id", "status", "format", "body_bytes", "B", "N", "duration_s"}


def _update_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.update"]


def test_one_line_per_update_with_its_numbers(
    client: TestClient, example: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.update"):
        response = client.post("/update", json=example, headers={"X-Request-ID": "log-1"})
    [record] = _update_records(caplog)
    line: dict[str, Any] = record.__dict__
    assert line.keys() >= FIELDS
    assert line["request_id"] == "log-1"
    assert (line["status"], line["format"], line["B"], line["N"]) == (200, "json", 2, 2)
    assert line["body_bytes"] == len(response.request.content)
    assert line["kl_mean"] == 0.0
    assert line["duration_s"] > 0
    assert {"decode_s", "compute_s", "encode_s"} <= line.keys()
    assert "error" not in line


def test_a_binary_update_logs_its_format_and_numbers(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = save(example_tensors())
    with caplog.at_level(logging.INFO, logger="app.update"):
        response = client.post("/update", content=body, headers=BINARY)
    assert response.status_code == 200
    [record] = _update_records(caplog)
    line: dict[str, Any] = record.__dict__
    assert (line["status"], line["format"], line["B"], line["N"]) == (200, "safetensors", 2, 2)
    assert (line["body_bytes"], line["kl_mean"]) == (len(body), 0.0)
    assert {"decode_s", "compute_s", "encode_s"} <= line.keys()


def test_a_failed_update_logs_its_error_type(
    client: TestClient, example: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.update"):
        client.post("/update", json=example | {"log_prob_grads": [[1.0], [1.0]]})
        client.post("/update", content=b"{")
    shape_error, parse_error = (r.__dict__ for r in _update_records(caplog))
    assert (shape_error["status"], shape_error["error"]) == (422, "invalid-payload")
    assert "kl_mean" not in shape_error
    assert (parse_error["status"], parse_error["error"]) == (400, "malformed-json")
    assert parse_error["B"] is None
