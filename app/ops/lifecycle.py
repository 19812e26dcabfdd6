"""Readiness across the process's life, and the drain that SIGTERM starts.

    starting --(lifespan startup done)--> ready --(SIGTERM)--> stopping

On SIGTERM readiness turns 503 at once while the service keeps serving for
RLHF_SHUTDOWN_DRAIN_SECONDS, so a load balancer that polls /readyz stops sending traffic;
then uvicorn's own graceful shutdown runs: no new connections, in-flight requests finish.
A worker process of uvicorn's supervisor does the same, as if signalled, when the
supervisor dies: without it, a killed supervisor would leave its workers serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import Enum
from types import FrameType
from typing import Any

from fastapi import FastAPI
from prometheus_client import multiprocess

from .metrics import multiprocess_dir

__all__ = ["Lifecycle", "Phase", "lifespan"]

logger = logging.getLogger("app.lifecycle")

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class Phase(Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


class Lifecycle:
    """Where the process is in its life; read by /readyz."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def reason(self) -> str:
        """Why the service is not ready (or that it is)."""
        return {
            Phase.STARTING: "the service is starting",
            Phase.READY: "the service is ready",
            Phase.STOPPING: "the service is shutting down and takes no new traffic",
        }[self.phase]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Ready after startup; stopping on SIGTERM, after a drain, and at shutdown."""
    lifecycle: Lifecycle = app.state.lifecycle
    drain_seconds: float = app.state.settings.shutdown_drain_seconds
    previous = _drain_on_sigterm(lifecycle, drain_seconds)
    stop_watching = _stop_with_supervisor() if previous is not None else None
    # What the process holds once started (modules, the app, its schemas) lives as long
    # as the process: frozen, it is out of the cyclic collector's reach, so that a full
    # collection scans what requests leave behind, not tens of thousands of objects that
    # would hold the event loop for tens of milliseconds while /healthz waits.
    gc.freeze()
    # A SIGTERM since the drain's handler went in has made the service stopping already.
    if lifecycle.phase is Phase.STARTING:
        lifecycle.phase = Phase.READY
    try:
        yield
    finally:
        gc.unfreeze()
        lifecycle.phase = Phase.STOPPING
        if stop_watching is not None:
            stop_watching()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if (directory := multiprocess_dir()) is not None:
            # This worker's in-flight gauge no longer counts towards the live sum.
            multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


def _stop_with_supervisor() -> Callable[[], None] | None:
    """In a worker process, raise SIGTERM once the supervisor that started it is gone.

    Returns how to stop watching, or None outside a worker. The supervisor's end is seen
    at once, without polling: multiprocessing gives each process it starts a sentinel, a
    pipe whose other end the parent holds, and which reads as closed when the parent dies.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return None
    loop = asyncio.get_running_loop()
    sentinel = parent.sentinel

    def supervisor_gone() -> None:
        loop.remove_reader(sentinel)
        logger.warning("the supervisor process %s is gone: shutting down", parent.pid)
        signal.raise_signal(signal.SIGTERM)

    def stop_watching() -> None:
        loop.remove_reader(sentinel)

    loop.add_reader(sentinel, supervisor_gone)
    return stop_watching


def _drain_on_sigterm(lifecycle: Lifecycle, drain_seconds: float) -> SignalHandler:
    """Put a drain in front of the server's SIGTERM handler; return the handler replaced.

    Signals can only be handled on the main thread: elsewhere (an app embedded in a test
    client's thread) nothing is installed and None is returned.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    loop = asyncio.get_running_loop()
    # None: a handler not installed from Python; treat it as the default action.
    previous: SignalHandler = signal.getsignal(signal.SIGTERM) or signal.SIG_DFL

    def stop_after_drain(signum: int, frame: FrameType | None) -> None:
        if lifecycle.phase is Phase.STOPPING:
            return  # one drain; a repeated SIGTERM (a supervisor forwarding it) changes nothing
        lifecycle.phase = Phase.STOPPING
        logger.info("SIGTERM received: /readyz answers 503; shutting down in %.3g s", drain_seconds)
        # Only thread-safe loop calls are allowed from inside a signal handler.
        loop.call_soon_threadsafe(loop.call_later, drain_seconds, _hand_over, signum, frame)

    def _hand_over(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, previous)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, stop_after_drain)
    return previous
