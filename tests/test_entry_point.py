"""`python -m app` (app/__main__.py): uvicorn started with the settings, the metrics dir."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest

from app.__main__ import main, prepare_metrics_dir


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
            "app.main:create_app",
            {
                "factory": True,
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
