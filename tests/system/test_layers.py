"""The layer contract in pyproject.toml holds, and it does catch a wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.slow


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_of_the_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_are_kept() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        pytest.param(
            "core/stable.py", "from ..wire import media", "app.core", id="core-imports-wire"
        ),
        pytest.param(
            "core/update.py", "from .. import settings", "app.core", id="core-imports-settings"
        ),
        pytest.param("wire/media.py", "from ..api import gate", "app.wire", id="wire-imports-api"),
        pytest.param(
            "wire/stats.py", "from ..ops import metrics", "app.wire", id="wire-imports-ops"
        ),
        pytest.param("ops/metrics.py", "from ..api import scrape", "app.ops", id="ops-imports-api"),
        pytest.param("api/gate.py", "from .. import main", "app.api", id="api-imports-main"),
        pytest.param("main.py", "from . import ray_serve", "app.main", id="main-imports-ray-serve"),
        pytest.param("__main__.py", "from . import main", "app.__main__", id="entry-imports-main"),
    ],
)
def test_a_wrong_import_breaks_the_contract(
    tmp_path: Path, module: str, planted: str, broken: str
) -> None:
    tree = _copy_of_the_project(tmp_path)
    with (tree / "app" / module).open("a") as source:
        source.write(f"\n{planted}  # planted\n")
    done = _lint_imports(tree)
    assert done.returncode != 0, done.stdout
    assert f"{broken} is not allowed to import" in done.stdout
