"""`python -m app` (app/__main__.py): uvicorn started with the settings, the metrics dir."""

from __future__ import annotations

import importlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
                "http": "app.api.http_protocol:BoundedHttpToolsProtocol",
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
    assert calls[0]["timeout_graceful_shutdown"] == 20  # RLHF_SHUTDOWN_TIMEOUT_SECONDS
    assert calls[0]["timeout_keep_alive"] == 5


@pytest.mark.usefixtures("sigterm_restored")
def test_the_shutdown_timeout_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    monkeypatch.setenv("RLHF_SHUTDOWN_TIMEOUT_SECONDS", "3")
    main([])
    main(["--timeout-graceful-shutdown", "7"])  # the flag, when given, wins
    assert [call["timeout_graceful_shutdown"] for call in calls] == [3, 7]


@pytest.mark.usefixtures("sigterm_restored")
def test_the_protocol_class_is_importable_by_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each worker process of uvicorn's supervisor imports it by this path.
    calls: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    main([])
    module, name = str(calls[0]["http"]).split(":")
    protocol = getattr(importlib.import_module(module), name)
    assert issubclass(protocol, HttpToolsProtocol)


@pytest.mark.usefixtures("sigterm_restored")
def test_the_metrics_dir_made_for_the_workers_is_removed_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    seen: list[Path] = []

    def serve(app: object, **kw: object) -> None:
        directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        (directory / "counter_1.db").write_bytes(b"written by a worker")
        seen.append(directory)

    monkeypatch.setattr("uvicorn.run", serve)
    main([])
    assert seen
    assert seen[0].parent == tmp_path
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("sigterm_restored")
def test_a_metrics_dir_of_the_operator_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: None)
    main([])
    assert directory.is_dir()


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
