"""`python -m app`: serve the service with uvicorn, configured by `Settings` and a few flags.

    python -m app [--timeout-graceful-shutdown S] [--timeout-keep-alive S] [--no-access-log]

WEB_CONCURRENCY > 1 runs that many worker processes under uvicorn's supervisor, with
prometheus-client's multiprocess mode so /metrics adds up over them. The process exits 0
after a graceful shutdown on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn

from .ops.log_config import log_config
from .settings import SettingsError, load_settings

__all__ = ["main", "prepare_metrics_dir"]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=None,
        metavar="SECONDS",
        help="after the drain, cancel requests still running after this long (default: wait)",
    )
    parser.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=5,
        metavar="SECONDS",
        help="close idle keep-alive connections after this long (default: 5)",
    )
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="turn uvicorn's access log off (the per-update JSON line stays)",
    )
    return parser.parse_args(argv)


def prepare_metrics_dir(workers: int) -> None:
    """Give prometheus-client an empty PROMETHEUS_MULTIPROC_DIR when it is needed.

    A set directory is emptied (samples of an earlier run would be added in); with several
    workers and none set, a fresh temporary one is made. The workers inherit the variable.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
    elif workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rlhf-metrics-")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


# The factory by its import path, whatever name this package is installed under.
_FACTORY = f"{__package__}.main:create_app"


def main(argv: Sequence[str] | None = None) -> None:
    """Serve `create_app()` on HOST:PORT with WEB_CONCURRENCY workers at RLHF_LOG_LEVEL.

    A setting the service cannot run with ends the process with status 2 and one line
    on stderr that names the variable.
    """
    arguments = _arguments(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"python -m {__package__}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    prepare_metrics_dir(settings.web_concurrency)
    # uvicorn handles SIGTERM while it serves, and raises the signal again once its graceful
    # shutdown is done; this handler then ends the process with status 0 instead of -15
    # (before uvicorn starts, it ends the process at once, also with 0).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        _FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        log_config=log_config(settings.log_level),
        log_level=settings.log_level,
        access_log=arguments.access_log,
        timeout_graceful_shutdown=arguments.timeout_graceful_shutdown,
        timeout_keep_alive=arguments.timeout_keep_alive,
    )


if __name__ == "__main__":
    main()
