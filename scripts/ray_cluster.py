"""A small local Ray on loopback for the Ray Serve tests and measurements, and its cleanup.

Two ways up: `local_ray()` (``ray.init`` in this process, no dashboard) and `ray_head()`
(``ray start --head`` with the dashboard that ``serve deploy`` talks to). Either is capped
(2 CPUs, a small object store), keeps usage stats off and token auth disabled (a loopback
test cluster only: see deploy/ray/README.md), and on the way out ends every process it
started, found by its own temporary directory, by PID: never ``ray stop``, which would end
any other Ray on the machine too. A process still there after that is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from scripts.live_server import free_port

__all__ = [
    "OBJECT_STORE_BYTES",
    "RAY_ENV",
    "RayHead",
    "ensure_stopped",
    "local_ray",
    "ray_cli",
    "ray_head",
    "ray_processes",
    "stop_ray_processes",
]

# What every Ray process of a test cluster inherits: no usage report sent anywhere; Ray
# 2.60's token auth off, which is only acceptable for a cluster on loopback; and a single
# node, so that `ray start` keeps 127.0.0.1 as the node's address instead of replacing it
# with the machine's own (the switch Ray has for macOS and Windows, where that is the
# default: no other node can join).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
# Ray's smallest object store; the tests' objects are a few kilobytes.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
NUM_CPUS = 2
# Ray puts Unix sockets under its temporary directory: keep the path short.
_TEMP_PARENT = "/tmp"


def ray_processes(*markers: str) -> list[psutil.Process]:
    """Every live process of the Ray whose command lines hold one of `markers`.

    Ray's daemons name its temporary directory on their command line, and the Ray Client
    server its GCS address; workers rename themselves (``ray::ServeReplica...``) but are
    the daemons' children, so they are found as such.
    """
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(marker in part for part in cmdline for marker in markers):
            found[process.pid] = process
            with suppress(psutil.NoSuchProcess):
                found.update((child.pid, child) for child in process.children(recursive=True))
    return [process for process in found.values() if _alive(process)]


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def stop_ray_processes(processes: list[psutil.Process], timeout: float = 15) -> list[int]:
    """SIGTERM `processes`, SIGKILL what is left after `timeout`; the PIDs that needed it."""
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return [process.pid for process in alive]


def _left(markers: tuple[str, ...], known: list[psutil.Process]) -> list[psutil.Process]:
    left = [process for process in known if _alive(process)] + ray_processes(*markers)
    return list({process.pid: process for process in left}.values())


def ensure_stopped(temp_dir: str, known: list[psutil.Process], grace: float, *markers: str) -> None:
    """Give Ray `grace` seconds to end `known` and the rest of its processes (found by
    `temp_dir` and `markers`); then stop what remains by PID and raise RuntimeError."""
    deadline = time.monotonic() + grace
    left = _left((temp_dir, *markers), known)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _left((temp_dir, *markers), known)
    stop_ray_processes(left)
    shutil.rmtree(temp_dir, ignore_errors=True)
    if left:
        described = ", ".join(f"{process.pid}" for process in left)
        msg = f"Ray processes were still running after shutdown and had to be stopped: {described}"
        raise RuntimeError(msg)


@contextmanager
def _ray_environment() -> Iterator[str]:
    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir=_TEMP_PARENT)
    try:
        yield temp_dir
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def local_ray(grace: float = 15) -> Iterator[str]:
    """``ray.init`` a capped local Ray in this process; yield its temporary directory.

    On exit Serve and Ray are shut down, and every process of theirs must be gone within
    `grace` seconds (the rest is stopped by PID, then RuntimeError).
    """
    import ray
    from ray import serve

    with _ray_environment() as temp_dir:
        try:
            ray.init(
                num_cpus=NUM_CPUS,
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
            )
            yield temp_dir
        finally:
            started = ray_processes(temp_dir)
            try:
                serve.shutdown()  # type: ignore[no-untyped-call]
            finally:
                ray.shutdown()
                ensure_stopped(temp_dir, started, grace)


@dataclass(frozen=True)
class RayHead:
    """A ``ray start --head`` on loopback: its GCS and dashboard addresses."""

    address: str
    dashboard_url: str
    temp_dir: str

    def env(self) -> dict[str, str]:
        """The environment for a Ray CLI command (``serve deploy``) against this head."""
        return os.environ | RAY_ENV | {"RAY_ADDRESS": self.address}


def ray_cli(name: str) -> str:
    """The path of a Ray console script (``ray``, ``serve``) of this interpreter's venv."""
    return str(Path(sys.executable).parent / name)


@contextmanager
def ray_head(env: Mapping[str, str] | None = None) -> Iterator[RayHead]:
    """``ray start --head`` capped, on 127.0.0.1, with `env` added; stopped by PID on exit.

    Raises RuntimeError on exit when a process of it outlived the SIGTERM and SIGKILL.
    """
    with _ray_environment() as temp_dir:
        port, dashboard_port = free_port(), free_port()
        command = [
            ray_cli("ray"),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={NUM_CPUS}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}",
        ]
        head = RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", temp_dir)
        gcs_marker = f"--address={head.address}"
        try:
            started = subprocess.run(
                command,
                env=os.environ | dict(env or {}),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if started.returncode != 0:
                msg = f"ray start exited with {started.returncode}: {started.stderr[-2000:]}"
                raise RuntimeError(msg)
            yield head
        finally:
            # What `ray stop` does, for this Ray only: it would end every Ray on the machine.
            known = ray_processes(temp_dir, gcs_marker)
            # The GCS and the autoscaler's monitor sit out a SIGTERM for tens of seconds.
            stop_ray_processes(known, timeout=5)
            ensure_stopped(temp_dir, known, 5, gcs_marker)
