"""Configuration from the environment, and the entry points that use it."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest
from pydantic import ValidationError

from app.__main__ import main, prepare_metrics_dir
from app.main import create_app
from app.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "WEB_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("RLHF_")]:
        monkeypatch.delenv(name)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.web_concurrency == 1
    assert settings.max_body_size == 64 * 1024 * 1024
    assert settings.max_elements == 2**27
    assert settings.max_in_flight == len(os.sched_getaffinity(0))
    assert settings.shutdown_drain_seconds == 5.0
    assert settings.bearer_token() is None
    assert settings.log_level == "info"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("RLHF_MAX_BODY_SIZE", "2048")
    monkeypatch.setenv("RLHF_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("RLHF_MAX_ELEMENTS", "1000")
    monkeypatch.setenv("RLHF_MAX_IN_FLIGHT", "5")
    monkeypatch.setenv("RLHF_SHUTDOWN_DRAIN_SECONDS", "0.5")
    monkeypatch.setenv("RLHF_API_TOKEN", "tok")
    settings = Settings()
    assert (settings.host, settings.port, settings.max_body_size) == ("0.0.0.0", 9123, 2048)
    assert settings.log_level == "debug"
    assert (settings.web_concurrency, settings.max_elements, settings.max_in_flight) == (3, 1000, 5)
    assert settings.shutdown_drain_seconds == 0.5
    assert settings.bearer_token() == "tok"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("RLHF_MAX_BODY_SIZE", "-1"),
        ("RLHF_MAX_BODY_SIZE", "0"),
        ("RLHF_LOG_LEVEL", "loud"),
        ("WEB_CONCURRENCY", "0"),
        ("RLHF_MAX_ELEMENTS", "0"),
        ("RLHF_MAX_IN_FLIGHT", "0"),
        ("RLHF_SHUTDOWN_DRAIN_SECONDS", "-1"),
    ],
)
def test_bad_environment_is_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


@pytest.fixture
def sigterm_restored() -> Iterator[None]:
    """`main` installs a SIGTERM handler; give the test process its own back."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


@pytest.mark.usefixtures("sigterm_restored")
def test_python_dash_m_app_serves_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "127.0.0.2")
    monkeypatch.setenv("PORT", "9124")
    monkeypatch.setenv("RLHF_LOG_LEVEL", "warning")
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    calls: list[tuple[object, dict[str, object]]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append((app, kw)))
    main(["--timeout-graceful-shutdown", "25", "--timeout-keep-alive", "7", "--no-access-log"])
    assert calls == [
        (
            "app.main:app",
            {
                "host": "127.0.0.2",
                "port": 9124,
                "workers": 1,
                "log_config": ANY,
                "log_level": "warning",
                "access_log": False,
                "timeout_graceful_shutdown": 25,
                "timeout_keep_alive": 7,
            },
        )
    ]
    loggers = calls[0][1]["log_config"]["loggers"]  # type: ignore[index]
    for name in ["", "uvicorn", "uvicorn.error", "uvicorn.access"]:
        assert loggers[name]["level"] == "WARNING", name


@pytest.mark.usefixtures("sigterm_restored")
def test_flag_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    main([])
    assert calls[0]["access_log"] is True
    assert calls[0]["timeout_graceful_shutdown"] is None
    assert calls[0]["timeout_keep_alive"] == 5


def test_metrics_dir_is_emptied_before_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    prepare_metrics_dir(workers=2)
    assert directory.is_dir()
    assert list(directory.iterdir()) == []


def test_several_workers_get_a_fresh_metrics_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set first, so that monkeypatch records it and unsets what prepare_metrics_dir sets.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    prepare_metrics_dir(workers=1)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    prepare_metrics_dir(workers=2)
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert directory.is_dir()
    assert list(directory.iterdir()) == []
    directory.rmdir()


def test_log_level_applies_to_the_service_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("app")
    monkeypatch.setattr(logger, "level", logger.level)  # restored after the test
    create_app(Settings(log_level="debug"))
    assert logging.getLogger("app").level == logging.DEBUG
    create_app(Settings(log_level="warning"))
    assert logging.getLogger("app").level == logging.WARNING
