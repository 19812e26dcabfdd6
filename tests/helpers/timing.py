"""Timing the server's /healthz from a process of its own, while a test loads the server."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def healthz_probed(base_url: str) -> Iterator[list[float]]:
    """The seconds of each /healthz probe made during the block, filled in at its end.

    The probes run in `tests.helpers.healthz_probe`, in another process, one after
    another on one connection, 5 ms apart. Every probe must have answered 200.
    """
    latencies: list[float] = []
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.healthz_probe", base_url],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", "the prober did not start"
        yield latencies
    finally:
        output, _ = process.communicate("stop\n", timeout=30)
    probes = json.loads(output)
    assert all(status == 200 for status, _ in probes), probes
    latencies.extend(seconds for _, seconds in probes)
