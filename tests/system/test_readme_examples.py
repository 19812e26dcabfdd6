"""The README's runnable examples, run as a reader would, against a live service.

Each fenced block marked `<!-- readme: run -->` (see tests/helpers/readme.py) runs in a
fresh directory, shell blocks under bash (with the client's `rlhf-update` on PATH), Python
blocks under this interpreter, against `python -m app` on a free port: the README's
`http://127.0.0.1:8000` is replaced by the server's URL, which is also $RLHF_BASE_URL.
What the block prints on stdout must be what the `<!-- readme: output -->` block after it
shows, line by line; lines that are JSON compare as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.live_server import LiveServer, live_server
from tests.helpers.readme import README_PATH, Block, runnable_blocks

pytestmark = pytest.mark.slow

README_URL = "http://127.0.0.1:8000"
PAIRS = runnable_blocks(README_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with live_server() as running:
        yield running


def _run(block: Block, server: LiveServer, directory: Path) -> str:
    text = block.text.replace(README_URL, server.base_url)
    if block.language == "sh":
        assert shutil.which("bash"), "the README's shell blocks need bash"
        argv = ["bash", "-euo", "pipefail", "-c", text]
    else:
        assert block.language == "python", f"{block.name}: no way to run {block.language!r}"
        argv = [sys.executable, "-c", text]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = os.environ | {"RLHF_BASE_URL": server.base_url, "PATH": path}
    done = subprocess.run(
        argv, cwd=directory, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def _lines(text: str) -> list[Any]:
    """The non-empty lines of `text`, each parsed as JSON when it is JSON."""
    lines: list[Any] = []
    for line in text.strip().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append(line.rstrip())
    return lines


def test_the_readme_has_runnable_examples() -> None:
    languages = [block.language for block, _ in PAIRS]
    assert languages.count("sh") >= 2  # the quick start's curl and the CLI
    assert "python" in languages  # the client example


@pytest.mark.parametrize(("block", "output"), PAIRS, ids=[block.name for block, _ in PAIRS])
def test_a_readme_example_prints_what_the_readme_says(
    block: Block, output: Block | None, server: LiveServer, tmp_path: Path
) -> None:
    stdout = _run(block, server, tmp_path)
    assert output is not None, f"{block.name} has no <!-- readme: output --> block after it"
    assert _lines(stdout) == _lines(output.text), stdout
