"""The distributions: the client installs alone, and nothing installed claims `app`."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The server's packages, none of which the client may bring along.
SERVER_PACKAGES = {"fastapi", "starlette", "uvicorn", "pydantic", "prometheus-client"}

pytestmark = pytest.mark.slow


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _fresh_venv(path: Path) -> Path:
    venv.create(path, with_pip=True)
    return path / "bin" / "python"


def _installed(python: Path) -> set[str]:
    listing = _run(python, "-m", "pip", "list", "--format", "freeze", "--disable-pip-version-check")
    return {line.split("==")[0].lower() for line in listing.splitlines() if line}


def _site_packages_entries(python: Path) -> set[str]:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run(python, "-I", "-c", code).strip())
    return {entry.name for entry in site.iterdir()}


@pytest.mark.parametrize("how", ["path", "git-url"])
def test_the_client_installs_without_the_server(tmp_path: Path, how: str) -> None:
    # A git URL installs what is committed: CI's clone of main.
    source = str(ROOT / "client") if how == "path" else f"git+file://{ROOT}#subdirectory=client"
    python = _fresh_venv(tmp_path / "venv")
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", source)
    installed = _installed(python)
    assert "rlhf-update-client" in installed
    assert {"numpy", "httpx2"} <= installed
    assert not installed & SERVER_PACKAGES
    assert not {"app", "app.py"} & _site_packages_entries(python)
    _run(python, "-c", "import rlhf_client; print(rlhf_client.__version__)")


def test_the_server_wheel_holds_no_top_level_app(tmp_path: Path) -> None:
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "-w",
        tmp_path,
        ROOT,
    )
    (wheel,) = tmp_path.glob("rlhf_update-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    packages = {top for top in tops if not top.endswith(".dist-info")}
    assert packages == {"rlhf_update_server"}
