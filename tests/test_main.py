"""`create_app(settings)` (app/main.py): the settings it is built with take effect."""

from __future__ import annotations

import logging

import pytest

from app.main import create_app
from app.settings import Settings


def test_log_level_applies_to_the_service_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("app")
    monkeypatch.setattr(logger, "level", logger.level)  # restored after the test
    create_app(Settings(log_level="debug"))
    assert logging.getLogger("app").level == logging.DEBUG
    create_app(Settings(log_level="warning"))
    assert logging.getLogger("app").level == logging.WARNING
