"""`python -m app`: serve the service with uvicorn, configured by `Settings` and a few flags.

    python -m app [--timeout-graceful-shutdown S] [--timeout-keep-alive S] [--no-access-log]

WEB_CONCURRENCY > 1 runs that many worker processes under uvicorn's supervisor, with
prometheus-client's multiprocess mode so /metrics adds up over them. The HTTP protocol is
uvicorn's httptools one with the bounds of `app.api.http_protocol`. The process exits 0
after a graceful shutdown on SIGTERM, whenever the signal comes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

# Only the standard library at import: uvicorn, pydantic and the app take a few tenths of
# a second to import, and `main` installs its SIGTERM handler before it imports them.

__all__ = ["main", "prepare_metrics_dir"]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=None,
        metavar="SECONDS",
        help="after the drain, cancel requests still running after this long "
        "(default: RLHF_SHUTDOWN_TIMEOUT_SECONDS)",
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


def prepare_metrics_dir(workers: int) -> Path | None:
    """Give prometheus-client an empty PROMETHEUS_MULTIPROC_DIR when it is needed.

    A set directory is emptied (samples of an earlier run would be added in); with several
    workers and none set, a fresh temporary one is made, and returned: the caller removes
    it when the workers are gone. The workers inherit the variable.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
    elif workers > 1:
        made = tempfile.mkdtemp(prefix="rlhf-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        return Path(made)
    return None


def _raise_open_files_limit() -> None:
    # Every connection holds a file descriptor. Under a soft limit of 1024, still a common
    # default, a thousand idle connections would stop the server from accepting any
    # other; the hard limit is as far as an unprivileged process may raise it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _exit_handler(made: Path | None) -> Callable[[int, FrameType | None], None]:
    """The SIGTERM handler of the process whenever uvicorn does not handle the signal itself.

    That is before uvicorn serves (the imports, the settings, the server's own setup), and
    after: uvicorn raises the signal again once its graceful shutdown is done. The handler
    ends the process there and then, with status 0, having removed the metrics directory
    `made` for the workers. It raises nothing: an exception raised from a signal handler
    lands in whatever code runs at that moment, and a library callback may turn it into an
    error of its own (pydantic-core, building validators, answers a SchemaError), or a
    finalizer swallow it ("Exception ignored in ..."), after which the server would start
    as if no signal had come.
    """

    def exit_now(signum: int, frame: FrameType | None) -> None:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        # Whatever was printed still reaches its reader; the signal may have come in the
        # middle of a write, and that write's own flush does the rest.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)

    return exit_now


# The factory and the HTTP protocol by their import paths, whatever name this package is
# installed under: each worker process imports them itself.
_FACTORY = f"{__package__}.main:create_app"
_HTTP_PROTOCOL = f"{__package__}.api.http_protocol:BoundedHttpToolsProtocol"


def main(argv: Sequence[str] | None = None) -> None:
    """Serve `create_app()` on HOST:PORT with WEB_CONCURRENCY workers at RLHF_LOG_LEVEL.

    A setting the service cannot run with ends the process with status 2 and one line
    on stderr that names the variable.
    """
    # Installed first: until uvicorn handles SIGTERM, and once it is done with it, the
    # signal ends the process at once with status 0.
    signal.signal(signal.SIGTERM, _exit_handler(None))
    arguments = _arguments(argv)
    import uvicorn

    from .ops.log_config import log_config
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"python -m {__package__}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _raise_open_files_limit()
    # Held back while the directory is made, so that no SIGTERM leaves it behind: the
    # handler that removes it is in place before the signal is taken.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        made = prepare_metrics_dir(settings.web_concurrency)
        signal.signal(signal.SIGTERM, _exit_handler(made))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    timeout = arguments.timeout_graceful_shutdown
    try:
        uvicorn.run(
            _FACTORY,
            factory=True,
            http=_HTTP_PROTOCOL,
            host=settings.host,
            port=settings.port,
            workers=settings.web_concurrency,
            log_config=log_config(settings.log_level),
            log_level=settings.log_level,
            access_log=arguments.access_log,
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds
            if timeout is None
            else timeout,
            timeout_keep_alive=arguments.timeout_keep_alive,
        )
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    main()
