"""deploy/vm: the systemd unit for several workers on one machine.

`systemd-analyze verify` reads it as systemd would (it warns, on stderr, of every key it
does not know); its command, environment, stop timeout and memory cap agree with the image,
the settings and the sizing rule.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import load_settings
from tests.helpers.deploy import (
    DEPLOY,
    image,
    memory_floor,
    setting_variables,
    systemd_bytes,
)

UNIT = DEPLOY / "vm" / "rlhf-update.service"
INSTALLED_PYTHON = "/opt/rlhf-update/bin/python"


def _service() -> list[tuple[str, str]]:
    """The [Service] section's (key, value) lines, in order (keys may repeat)."""
    section = ""
    lines = []
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, value = line.split("=", 1)
            lines.append((key, value))
    return lines


def _value(key: str) -> str:
    (value,) = [v for k, v in _service() if k == key]
    return value


def _environment() -> dict[str, str]:
    return dict(v.split("=", 1) for k, v in _service() if k == "Environment")


def _verify(text: str, tmp_path: Path) -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze (Debian's systemd) is not installed")
    unit = tmp_path / UNIT.name
    # The interpreter must exist for the check: this one stands in for the VM's.
    unit.write_text(text.replace(INSTALLED_PYTHON, sys.executable), encoding="utf-8")
    done = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.stdout + done.stderr + ("" if done.returncode == 0 else f"exit {done.returncode}")


def test_systemd_reads_the_unit_without_a_warning(tmp_path: Path) -> None:
    assert _verify(UNIT.read_text(encoding="utf-8"), tmp_path) == ""


def test_a_misspelt_key_is_warned_of(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert "\nKillMode=" in text
    assert "KilMode" in _verify(text.replace("\nKillMode=", "\nKilMode="), tmp_path)


def test_the_command_is_the_image_s_with_the_installed_interpreter() -> None:
    command = shlex.split(_value("ExecStart"))
    assert command[0] == INSTALLED_PYTHON
    assert command[1:] == image().command[1:]


def test_the_environment_is_made_of_real_settings_that_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _environment()
    assert set(env) <= setting_variables() | {"PROMETHEUS_MULTIPROC_DIR"}
    # Several workers share their metrics through a directory systemd makes and removes.
    runtime = _value("RuntimeDirectory")
    assert Path(env["PROMETHEUS_MULTIPROC_DIR"]).parent == Path("/run") / runtime
    # The token is the credential systemd hands over (%d: the credentials directory).
    (credential,) = [v for k, v in _service() if k == "LoadCredential"]
    assert env["RLHF_API_TOKEN_FILE"] == f"%d/{credential.split(':')[0]}"
    token = tmp_path / "token"
    token.write_text("secret\n", encoding="utf-8")
    for variable, value in env.items():
        if variable == "RLHF_API_TOKEN_FILE":
            value = str(token)
        elif variable == "PROMETHEUS_MULTIPROC_DIR":
            value = str(tmp_path / "metrics")
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    assert settings.web_concurrency > 1
    assert settings.bearer_token() == "secret"


def test_the_stop_timeout_outlasts_the_drain_and_the_shutdown_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in _environment().items():
        if variable != "RLHF_API_TOKEN_FILE":
            monkeypatch.setenv(variable, value)
    settings = load_settings()
    command = shlex.split(_value("ExecStart"))
    cut_after = int(command[command.index("--timeout-graceful-shutdown") + 1])
    assert settings.shutdown_drain_seconds + cut_after < int(_value("TimeoutStopSec"))
    # SIGTERM to the supervisor only, which stops its workers as `make shutdown` proves.
    assert _value("KillMode") == "mixed"
    assert _value("KillSignal") == "SIGTERM"


def test_the_memory_cap_covers_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _environment()
    for variable, value in env.items():
        if variable != "RLHF_API_TOKEN_FILE":
            monkeypatch.setenv(variable, value)
    settings = load_settings()
    per_worker = memory_floor(env["RLHF_MAX_BODY_SIZE"], settings.max_in_flight)
    assert systemd_bytes(_value("MemoryMax")) >= settings.web_concurrency * per_worker
