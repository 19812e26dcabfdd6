"""Prometheus metrics of /update (prometheus-client), scraped by `GET /metrics`.

With several worker processes, prometheus-client's multiprocess mode is on when
PROMETHEUS_MULTIPROC_DIR is set (`python -m app` sets and empties it before starting
workers): each worker writes its samples there and `/metrics` adds them up over all of them.
A worker's "live" gauges (the updates in flight) count while it runs: it drops them when it
shuts down, and a scrape drops those of a worker that died without doing so (SIGKILL, out
of memory) before it adds up the rest.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from ..errors import REJECTION_REASONS

__all__ = ["UpdateMetrics", "forget_dead_processes", "multiprocess_dir"]

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BYTES_BUCKETS = tuple(float(4**k) for k in range(5, 16))  # 1 KiB to 1 GiB
_PARAMS_BUCKETS = tuple(float(10**k) for k in range(10))  # 1 to 1e9
_BATCH_BUCKETS = tuple(float(4**k) for k in range(10))  # 1 to 262144
_KL_BUCKETS = (-1, -0.1, -0.01, 0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


def multiprocess_dir() -> str | None:
    """prometheus-client's own switch for multiprocess mode, read as it reads it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def forget_dead_processes(directory: str) -> list[int]:
    """Drop the live gauges of processes that no longer run; return their ids.

    prometheus-client names each process's files after its id (``gauge_livesum_<pid>.db``).
    """
    pids = {path.stem.rsplit("_", 1)[1] for path in Path(directory).glob("gauge_live*_*.db")}
    dead = sorted(int(pid) for pid in pids if pid.isdigit() and not _running(int(pid)))
    for pid in dead:
        # Another worker's scrape may remove the same files at the same time.
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


class UpdateMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self) -> None:
        # No `_created` series: multiprocess mode has none, so one worker scrapes like many.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "rlhf_update_requests",
            "POST /update requests answered, by status code and wire format.",
            ["status", "format"],
            registry=registry,
        )
        self.duration = Histogram(
            "rlhf_update_duration_seconds",
            "Time from receiving a POST /update to the end of its answer.",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.stage_duration = Histogram(
            "rlhf_update_stage_duration_seconds",
            "Time spent in each stage of an update: decode, compute, encode.",
            ["stage"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.request_bytes = Histogram(
            "rlhf_update_request_bytes",
            "Size of the request bodies read.",
            buckets=_BYTES_BUCKETS,
            registry=registry,
        )
        self.params = Histogram(
            "rlhf_update_params",
            "N, the number of weights of an update.",
            buckets=_PARAMS_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "rlhf_update_batch_size",
            "B, the number of samples of an update.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        # The blocks of sharded updates (POST /update/grad, /update/apply) apart: K blocks
        # are one update, which the update series above would count 2K times.
        self.block_requests = Counter(
            "rlhf_update_block_requests",
            "POST /update/grad and /update/apply requests answered (the blocks of sharded "
            "updates), by route, status code and wire format.",
            ["route", "status", "format"],
            registry=registry,
        )
        self.block_duration = Histogram(
            "rlhf_update_block_duration_seconds",
            "Time from receiving a block's POST to the end of its answer, by route.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "rlhf_update_in_flight",
            "Updates holding a compute slot now (summed over live workers).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queued = Gauge(
            "rlhf_update_queued",
            "Updates whose body has arrived, waiting for a compute slot (summed over live "
            "workers).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.rejected = Counter(
            "rlhf_update_rejected",
            "POST /update requests refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.kl_mean = Histogram(
            "rlhf_update_kl_mean",
            "kl_mean of the computed updates, from their own stats.",
            buckets=_KL_BUCKETS,
            registry=registry,
        )
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)  # every reason is scraped, at 0 until it occurs

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its Content-Type, as the Accept header asks."""
        registry = self.registry
        if (directory := multiprocess_dir()) is not None:
            forget_dead_processes(directory)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        encode, content_type = choose_encoder(accept or "")
        return encode(registry), content_type
