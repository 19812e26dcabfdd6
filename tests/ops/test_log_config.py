"""The service's log format: one JSON object per line, never weights, bodies or tokens."""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ops.log_config import log_config
from app.settings import Settings

TOKEN = "tok-Zq9-very-private"


@pytest.fixture
def json_log_text() -> Iterator[list[str]]:
    """Everything logged at DEBUG by any logger, formatted as the service formats it."""
    config = log_config("debug")
    formatter = logging.config.dictConfigClass(config).configure_custom(
        dict(config["formatters"]["json"])
    )
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    root = logging.getLogger()
    handler, level = Collect(level=logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_logs_never_hold_weights_gradients_bodies_or_the_token(
    example: dict[str, Any], json_log_text: list[str]
) -> None:
    weights = [1234.5678125, -9876.5432125]
    grads = [[4242.4242125, 1717.1717125], [3131.3131125, 2929.2929125]]
    body = example | {"weights": weights, "log_prob_grads": grads}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(Settings(api_token=TOKEN, log_level="debug"))) as client:
        assert client.post("/update", json=body, headers=auth).status_code == 200
        assert (
            client.post("/update", json=body, headers={"Authorization": "Bearer no"}).status_code
            == 401
        )
        bad = body | {"weights": ["secret-string-weight", 1.0]}
        assert client.post("/update", json=bad, headers=auth).status_code == 422
        assert (
            client.post("/update", content=b'{"weights": [7777.125', headers=auth).status_code
            == 400
        )
    text = "\n".join(json_log_text)
    assert sum('"message": "update"' in line for line in json_log_text) == 4
    for secret in [
        TOKEN,
        "Bearer",
        "1234.5678",
        "9876.5432",
        "4242.4242",
        "1717.1717",
        "3131.3131",
        "2929.2929",
        "secret-string-weight",
        "7777.125",
        "log_prob_grads",
    ]:
        assert secret not in text, secret
    for line in json_log_text:
        json.loads(line)  # every line is one JSON object


def test_the_formatter_writes_one_json_object_per_line() -> None:
    config = log_config("info")
    assert config["handlers"]["stdout"]["stream"] == "ext://sys.stdout"
    assert {"uvicorn", "uvicorn.error", "uvicorn.access", "app"} <= config["loggers"].keys()
    formatter = logging.config.dictConfigClass(config).configure_custom(
        dict(config["formatters"]["json"])
    )
    record = logging.LogRecord("uvicorn.error", logging.INFO, "x", 1, "Started %s", ("it",), None)
    record.color_message = "\x1b[36mStarted\x1b[0m"
    line = formatter.format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "Started it"
    assert (parsed["level"], parsed["logger"]) == ("INFO", "uvicorn.error")
    assert {"time", "process"} <= parsed.keys()
    assert "color_message" not in parsed


def test_the_time_is_rfc_3339_in_utc_with_milliseconds() -> None:
    config = log_config("info")
    formatter = logging.config.dictConfigClass(config).configure_custom(
        dict(config["formatters"]["json"])
    )
    record = logging.LogRecord("app.update", logging.INFO, "x", 1, "update", (), None)
    # 2026-11-25T22:17:03.042 UTC, set by hand so that the expected text is independent.
    record.created = 1795645023.042
    record.msecs = 42.0
    stamp = json.loads(formatter.format(record))["time"]
    assert stamp == "2026-11-25T22:17:03.042Z"
    parsed = datetime.fromisoformat(stamp)  # Python 3.11 reads RFC 3339 with Z
    assert parsed == datetime(2026, 11, 25, 22, 17, 3, 42000, tzinfo=UTC)


def _formatters() -> tuple[logging.Formatter, logging.Formatter]:
    """The service's formatter and python-json-logger's own, configured alike."""
    config = log_config("info")
    ours = dict(config["formatters"]["json"])
    theirs = ours | {"()": "pythonjsonlogger.json.JsonFormatter"}
    configurator = logging.config.dictConfigClass(config)
    return configurator.configure_custom(ours), configurator.configure_custom(theirs)


def _records() -> Iterator[logging.LogRecord]:
    def record(msg: object, args: tuple[object, ...] = (), **extra: object) -> logging.LogRecord:
        made = logging.LogRecord("app.update", logging.INFO, "x", 1, msg, args, None)
        made.__dict__.update(extra)
        return made

    line: dict[str, Any] = {"request_id": "ab" * 16, "status": 200, "B": 8, "duration_s": 3e-4}
    yield record("update", **line, kl_mean=-0.125, error=None)
    yield record("%s: %s", ("body-too-large", "détail \u2028"), request_id="x")
    yield record({"a dict": "message", "n": 1}, status=422)
    yield record("odd values", when=datetime(2026, 1, 2, tzinfo=UTC), obj=object, _private=1)
    for created in (1795645023.0, 1795645023.9995, 1795645024.0004, 0.25):
        timed = record("update", **line)
        timed.created, timed.msecs = created, (created - int(created)) * 1000
        yield timed
    try:
        message = "boom"
        raise ValueError(message)
    except ValueError as exc:
        failed = logging.LogRecord("app.errors", logging.ERROR, "x", 1, "failed", (), None)
        failed.exc_info = (type(exc), exc, exc.__traceback__)
        yield failed


def test_the_service_formatter_writes_what_python_json_logger_writes() -> None:
    ours, theirs = _formatters()
    assert type(ours) is not type(theirs)
    for record in _records():
        assert ours.format(record) == theirs.format(record), record.msg
        # Formatting again (the time's text kept from the first) changes nothing.
        assert ours.format(record) == theirs.format(record), record.msg
