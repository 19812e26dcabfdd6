"""Configuration from the environment: defaults, variables, and values refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.ops.cpu_budget import available_cpus
from app.settings import Settings

TOKEN = "s3cret-T0ken"


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
    assert settings.max_in_flight == available_cpus()
    assert settings.shutdown_drain_seconds == 5.0
    assert (settings.max_queue, settings.queue_timeout_seconds) == (16, 5.0)
    assert settings.body_timeout_seconds == 30.0
    assert settings.shutdown_timeout_seconds == 20
    assert settings.header_timeout_seconds == 10.0
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
    monkeypatch.setenv("RLHF_SHUTDOWN_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("RLHF_HEADER_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("RLHF_API_TOKEN", "tok")
    monkeypatch.setenv("RLHF_MAX_QUEUE", "0")
    monkeypatch.setenv("RLHF_QUEUE_TIMEOUT_SECONDS", "0.25")
    monkeypatch.setenv("RLHF_BODY_TIMEOUT_SECONDS", "12.5")
    settings = Settings()
    assert (settings.shutdown_timeout_seconds, settings.header_timeout_seconds) == (7, 2.5)
    assert (settings.host, settings.port, settings.max_body_size) == ("0.0.0.0", 9123, 2048)
    assert settings.log_level == "debug"
    assert (settings.web_concurrency, settings.max_elements, settings.max_in_flight) == (3, 1000, 5)
    assert settings.shutdown_drain_seconds == 0.5
    assert settings.bearer_token() == "tok"
    assert (settings.max_queue, settings.queue_timeout_seconds) == (0, 0.25)
    assert settings.body_timeout_seconds == 12.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("RLHF_MAX_BODY_SIZE", "-1"),
        ("RLHF_MAX_BODY_SIZE", "0"),
        ("RLHF_MAX_BODY_SIZE", "0MiB"),
        ("RLHF_MAX_BODY_SIZE", "64XB"),
        ("RLHF_HEADER_TIMEOUT_SECONDS", "0"),
        ("RLHF_SHUTDOWN_TIMEOUT_SECONDS", "-1"),
        ("RLHF_LOG_LEVEL", "loud"),
        ("WEB_CONCURRENCY", "0"),
        ("RLHF_MAX_ELEMENTS", "0"),
        ("RLHF_MAX_IN_FLIGHT", "0"),
        ("RLHF_SHUTDOWN_DRAIN_SECONDS", "-1"),
        ("RLHF_MAX_QUEUE", "-1"),
        ("RLHF_QUEUE_TIMEOUT_SECONDS", "0"),
        ("RLHF_BODY_TIMEOUT_SECONDS", "0"),
        ("RLHF_BODY_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_bad_environment_is_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("64MiB", 64 * 2**20),
        ("64 MiB", 64 * 2**20),
        ("4kib", 4096),
        ("1.5KiB", 1536),
        ("1MB", 10**6),
        ("2048", 2048),
    ],
)
def test_sizes_take_units(monkeypatch: pytest.MonkeyPatch, value: str, size: int) -> None:
    monkeypatch.setenv("RLHF_MAX_BODY_SIZE", value)
    assert Settings().max_body_size == size


def test_token_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    monkeypatch.setenv("RLHF_API_TOKEN_FILE", str(secret))
    assert Settings().bearer_token() == TOKEN


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"api_token": ""}, "api_token", id="empty-token"),
        pytest.param({"api_token": "a", "api_token_file": "x"}, "not both", id="both"),
        pytest.param({"api_token_file": "/nonexistent/token"}, "cannot be read", id="missing"),
    ],
)
def test_bad_token_settings_are_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(**changes)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("\n")
    with pytest.raises(ValidationError, match="is empty"):
        Settings(api_token_file=secret)


def test_the_token_is_not_shown_in_the_settings_repr() -> None:
    assert TOKEN not in repr(Settings(api_token=TOKEN))


def test_default_cap_is_the_cpu_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # The affinity, capped by the cgroup's CPU quota: tests/ops/test_cpu_budget.py.
    monkeypatch.delenv("RLHF_MAX_IN_FLIGHT", raising=False)
    assert Settings().max_in_flight == available_cpus()
    assert Settings().max_in_flight <= len(os.sched_getaffinity(0))


def test_default_limit_is_two_to_the_27(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLHF_MAX_ELEMENTS", raising=False)
    assert Settings().max_elements == 2**27
