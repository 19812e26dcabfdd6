"""Start `python -m app` on a free loopback port, wait until it is ready, stop it after."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

__all__ = ["LiveServer", "free_port", "live_server", "rss_bytes"]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A running service: its URL, its process and the file its stdout goes to."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far."""
        text = self.log_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def _wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            msg = f"the server exited with {server.process.returncode} before it was ready"
            raise RuntimeError(msg)
        try:
            if httpx2.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    msg = f"the server was not ready within {timeout} s"
    raise RuntimeError(msg)


@contextmanager
def live_server(
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = ("--no-access-log",),
    ready_timeout: float = 30,
) -> Iterator[LiveServer]:
    """Run the service with `env` added to this environment; kill it if still running after."""
    port = free_port()
    full_env = os.environ | {"HOST": "127.0.0.1", "PORT": str(port)} | dict(env or {})
    with tempfile.TemporaryDirectory(prefix="rlhf-live-") as directory:
        log_path = Path(directory) / "stdout.jsonl"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "app", *args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
        try:
            _wait_ready(server, ready_timeout)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    msg = f"no VmRSS for process {pid}"
    raise RuntimeError(msg)
