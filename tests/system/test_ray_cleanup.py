"""The check behind every Ray test's teardown: a process left running fails it, and is ended."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import pytest

from scripts.ray_cluster import ensure_stopped, ray_processes

pytestmark = pytest.mark.slow

# Stands in for a Ray daemon, whose command line names the cluster's directory, with a
# child standing in for a worker, which names nothing.
_DAEMON = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "time.sleep(60)\n"
)


def test_a_process_that_outlives_its_ray_fails_the_check_and_is_stopped() -> None:
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    daemon = subprocess.Popen([sys.executable, "-c", _DAEMON, f"--temp-dir={temp_dir}"])
    try:
        deadline = time.monotonic() + 10
        while len(ray_processes(temp_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        found = {process.pid for process in ray_processes(temp_dir)}
        assert daemon.pid in found
        assert len(found) == 2
        with pytest.raises(RuntimeError, match="still running after shutdown"):
            ensure_stopped(temp_dir, [], 0.5)
        assert ray_processes(temp_dir) == []
    finally:
        daemon.kill()
        daemon.wait()


def test_nothing_left_passes_the_check() -> None:
    ensure_stopped(tempfile.mkdtemp(prefix="ray-"), [], 0.5)
