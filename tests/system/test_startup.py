"""Starting the service: the app factory, and settings errors as one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _python(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        pytest.param("RLHF_MAX_BODY_SIZE", "abc", "could not parse", id="not-a-size"),
        pytest.param("RLHF_MAX_BODY_SIZE", "64XB", "byte unit", id="not-a-unit"),
        pytest.param("RLHF_HEADER_TIMEOUT_SECONDS", "0", "greater than 0", id="header-timeout"),
        pytest.param("RLHF_SHUTDOWN_TIMEOUT_SECONDS", "2.5", "valid integer", id="shutdown"),
        pytest.param("RLHF_MAX_IN_FLIGHT", "0", "greater than or equal to 1", id="too-small"),
        pytest.param("PORT", "70000", "less than or equal to 65535", id="port"),
        pytest.param("RLHF_LOG_LEVEL", "loud", "'info'", id="log-level"),
        pytest.param("RLHF_API_TOKEN_FILE", "/nonexistent/token", "cannot be read", id="token"),
    ],
)
def test_a_bad_setting_stops_the_service_with_one_line(
    variable: str, value: str, expected: str
) -> None:
    done = _python("-m", "app", env={variable: value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"python -m app: {variable}")
    assert expected in lines[0]
    assert "Traceback" not in done.stderr


def test_a_bad_setting_does_not_break_test_collection() -> None:
    done = _python(
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/api",
        env={"RLHF_MAX_BODY_SIZE": "abc"},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_client_in_process_works_beside_an_unrelated_app_package(tmp_path: Path) -> None:
    # A user's own FastAPI project has a package `app` of its own first on the path.
    own = tmp_path / "app"
    own.mkdir()
    (own / "__init__.py").write_text("")
    (own / "main.py").write_text("raise RuntimeError('the user project, not the service')\n")
    command = Path(sys.executable).parent / "rlhf-update"
    done = subprocess.run(
        [str(command), "health", "--in-process"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout
