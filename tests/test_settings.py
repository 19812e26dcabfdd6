"""Configuration from the environment, and the entry points that use it."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from app.__main__ import main
from app.main import create_app
from app.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "RLHF_MAX_BODY_SIZE", "RLHF_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.max_body_size == 64 * 1024 * 1024
    assert settings.log_level == "info"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("RLHF_MAX_BODY_SIZE", "2048")
    monkeypatch.setenv("RLHF_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert (settings.host, settings.port, settings.max_body_size) == ("0.0.0.0", 9123, 2048)
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("RLHF_MAX_BODY_SIZE", "-1"),
        ("RLHF_MAX_BODY_SIZE", "0"),
        ("RLHF_LOG_LEVEL", "loud"),
    ],
)
def test_bad_environment_is_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_python_dash_m_app_serves_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "127.0.0.2")
    monkeypatch.setenv("PORT", "9124")
    monkeypatch.setenv("RLHF_LOG_LEVEL", "warning")
    calls: list[tuple[object, dict[str, object]]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append((app, kw)))
    main()
    assert calls == [("app.main:app", {"host": "127.0.0.2", "port": 9124, "log_level": "warning"})]


def test_log_level_applies_to_the_service_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("app")
    monkeypatch.setattr(logger, "level", logger.level)  # restored after the test
    create_app(Settings(log_level="debug"))
    assert logging.getLogger("app").level == logging.DEBUG
    create_app(Settings(log_level="warning"))
    assert logging.getLogger("app").level == logging.WARNING
