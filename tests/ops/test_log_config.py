"""The service's log format: one JSON object per line, never weights, bodies or tokens."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ops.log_config import log_config, log_fields
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
    assert sum('"message":"update"' in line for line in json_log_text) == 4
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
    theirs = ours | {"()": "pythonjsonlogger.orjson.OrjsonFormatter"}
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
    yield record("beyond the plane \U0001f600 \x85 \ufeff", emoji="\U0001f680")
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


def _in_ascii(line: str) -> str:
    """`line` with each character beyond ASCII as the standard library's JSON escapes it."""
    return "".join(c if c.isascii() else json.dumps(c)[1:-1] for c in line)


def test_the_service_formatter_writes_what_python_json_logger_writes_in_ascii() -> None:
    ours, theirs = _formatters()
    assert type(ours) is not type(theirs)
    for record in _records():
        line = ours.format(record)
        assert line.isascii(), record.msg
        assert line == _in_ascii(theirs.format(record)), record.msg
        assert json.loads(line) == json.loads(theirs.format(record)), record.msg
        # Formatting again (the time's text kept from the first) changes nothing.
        assert ours.format(record) == line, record.msg


def test_a_line_orjson_cannot_write_is_written_all_the_same() -> None:
    ours, _ = _formatters()
    record = logging.LogRecord("app.update", logging.INFO, "x", 1, "big", (), None)
    record.count = 2**70
    line = ours.format(record)
    assert line.isascii()
    assert json.loads(line)["count"] == 2**70


# Half-way through a millisecond, so that a record's float seconds (Python 3.11's
# LogRecord) and the writer's integer nanoseconds truncate to the same millisecond.
FROZEN_NS = 1_795_645_023_042_500_000
LINE_FIELDS: dict[str, Any] = {
    "request_id": "ab" * 16,
    "status": 200,
    "format": "json",
    "body_bytes": 11_900,
    "B": 8,
    "N": None,
    "duration_s": 0.000312,
    "kl_mean": -1.25e-300,
    "error": 'détail \u2028 "quoted"',
    "clipped": True,
}


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """time.time and time.time_ns stopped at FROZEN_NS, for records and lines alike."""
    monkeypatch.setattr("time.time_ns", lambda: FROZEN_NS)
    monkeypatch.setattr("time.time", lambda: FROZEN_NS / 1e9)


def _own_logger(name: str, *handlers: logging.Handler) -> logging.Logger:
    """A logger of its own with these handlers, that does not propagate (pytest's handlers
    sit on the root)."""
    logger = logging.getLogger(name)
    logger.handlers[:] = handlers
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.filters.clear()
    logger.disabled = False
    return logger


def _stream_handler(
    fmt: str | None = None, rename: dict[str, str] | None = None
) -> tuple[logging.StreamHandler[io.StringIO], io.StringIO]:
    config = log_config("info")
    formatter_config = dict(config["formatters"]["json"])
    if fmt is not None:
        formatter_config["fmt"] = fmt
    if rename is not None:
        formatter_config["rename_fields"] = formatter_config["rename_fields"] | rename
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.config.dictConfigClass(config).configure_custom(formatter_config))
    return handler, stream


@pytest.mark.usefixtures("frozen_clock")
@pytest.mark.parametrize("level", [logging.INFO, logging.ERROR])
@pytest.mark.parametrize(
    "fmt", [None, "%(asctime)s %(levelname)s %(message)s", "%(name)s %(funcName)s %(message)s"]
)
@pytest.mark.parametrize("rename", [None, {"status": "code", "B": "batch"}])
def test_log_fields_writes_the_line_logger_log_writes(
    level: int, fmt: str | None, rename: dict[str, str] | None
) -> None:
    handler, stream = _stream_handler(fmt, rename)
    logger = _own_logger("tests.log_fields.same", handler)
    logger.log(level, "update", extra=LINE_FIELDS)
    by_record = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    # Twice: the second line is written from what the formatter kept of the first's names.
    for _ in range(2):
        log_fields(logger, level, "update", LINE_FIELDS)
        assert stream.getvalue() == by_record
        stream.seek(0)
        stream.truncate()
    if rename is not None:
        assert {"code", "batch"} <= json.loads(by_record).keys()
    assert by_record.endswith("}\n")
    assert by_record.count("\n") == 1
    assert json.loads(by_record)["request_id"] == "ab" * 16


def test_log_fields_makes_no_record_for_the_service_own_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, stream = _stream_handler()
    logger = _own_logger("tests.log_fields.direct", handler)
    made: list[str] = []
    original = logging.Logger.makeRecord

    def counting(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    log_fields(logger, logging.INFO, "update", LINE_FIELDS)
    assert made == []
    line = json.loads(stream.getvalue())
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "tests.log_fields.direct",
        "process": os.getpid(),
        "message": "update",
        **LINE_FIELDS,
    }
    assert datetime.fromisoformat(line["time"]).tzinfo == UTC
    # Another handler beside it: each gets the record, as logger.log gives it.
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Collect())
    log_fields(logger, logging.INFO, "update", LINE_FIELDS)
    assert made == ["tests.log_fields.direct"]
    assert seen[0].__dict__["request_id"] == "ab" * 16
    assert stream.getvalue().count("\n") == 2


class _Refuse(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.__dict__.get("status") != 500


@pytest.mark.parametrize("on", ["logger", "handler"])
def test_a_filter_sees_the_record(on: str) -> None:
    handler, stream = _stream_handler()
    logger = _own_logger(f"tests.log_fields.filter.{on}", handler)
    (logger if on == "logger" else handler).addFilter(_Refuse())
    log_fields(logger, logging.ERROR, "update", LINE_FIELDS | {"status": 500})
    log_fields(logger, logging.INFO, "update", LINE_FIELDS)
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["status"] == 200


def test_nothing_is_written_below_the_level_or_for_a_disabled_logger() -> None:
    handler, stream = _stream_handler()
    logger = _own_logger("tests.log_fields.quiet", handler)
    logger.setLevel(logging.WARNING)
    log_fields(logger, logging.INFO, "update", LINE_FIELDS)
    handler.setLevel(logging.CRITICAL)
    logger.setLevel(logging.DEBUG)
    log_fields(logger, logging.ERROR, "update", LINE_FIELDS)
    handler.setLevel(logging.NOTSET)
    logger.disabled = True
    log_fields(logger, logging.ERROR, "update", LINE_FIELDS)
    assert stream.getvalue() == ""
    logger.disabled = False
    log_fields(logger, logging.ERROR, "update", LINE_FIELDS)
    assert json.loads(stream.getvalue())["level"] == "ERROR"


def test_the_line_reaches_a_parent_handler_and_only_handlers_of_its_level() -> None:
    handler, stream = _stream_handler()
    parent = _own_logger("tests.log_fields.tree", handler)
    child = logging.getLogger("tests.log_fields.tree.child")
    child.handlers.clear()
    child.propagate = True
    child.setLevel(logging.NOTSET)
    quiet, quiet_stream = _stream_handler()
    quiet.setLevel(logging.ERROR)
    parent.addHandler(quiet)
    log_fields(child, logging.INFO, "update", LINE_FIELDS)
    assert json.loads(stream.getvalue())["logger"] == "tests.log_fields.tree.child"
    assert quiet_stream.getvalue() == ""
    parent.propagate = False
    child.propagate = False
    log_fields(child, logging.INFO, "update", LINE_FIELDS)  # no handler: logging's last resort
    assert stream.getvalue().count("\n") == 1


def test_a_field_a_record_reserves_is_refused_as_logger_log_refuses_it() -> None:
    handler, stream = _stream_handler()
    logger = _own_logger("tests.log_fields.reserved", handler)
    for name in ("message", "lineno"):
        with pytest.raises(KeyError, match=name):
            log_fields(logger, logging.INFO, "update", {name: 1})
    log_fields(logger, logging.INFO, "update", {"_private": 1, "status": 200})
    assert "_private" not in json.loads(stream.getvalue())


def test_a_failing_stream_is_reported_by_the_handler_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, stream = _stream_handler()
    logger = _own_logger("tests.log_fields.broken", handler)
    stream.close()
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)
    log_fields(logger, logging.INFO, "update", LINE_FIELDS)
    [record] = errors
    assert (record.name, record.getMessage()) == ("tests.log_fields.broken", "update")
