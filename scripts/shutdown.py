"""Shutdown proof: slow updates in flight, then SIGTERM.

Every in-flight update is answered 200 with the right weights, /readyz answers 503 right
after the signal while the service still serves, and the process exits 0.

    python -m scripts.shutdown [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx2
import orjson

from app.wire.schemas import REFERENCE_EXAMPLE
from scripts.live_server import LiveServer, live_server
from scripts.payloads import random_update

__all__ = ["ShutdownReport", "run"]

DRAIN_SECONDS = 1.0
# Each slow update trickles its body in over this long: it starts before the signal and
# is still arriving after the drain, when uvicorn has stopped taking new connections.
UPLOAD_SECONDS = 3.0
CHUNKS = 12


@dataclass
class ShutdownReport:
    workers: int
    slow_statuses: list[int] = field(default_factory=list)
    slow_correct: list[bool] = field(default_factory=list)
    slow_finished_after_signal_s: list[float] = field(default_factory=list)
    readyz_before: int = 0
    readyz_after: int = 0
    readyz_after_s: float = 0.0
    update_during_drain: int = 0
    exit_code: int | None = None
    exit_after_signal_s: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            bool(self.slow_statuses)
            and all(status == 200 for status in self.slow_statuses)
            and all(self.slow_correct)
            and self.readyz_before == 200
            and self.readyz_after == 503
            and self.update_during_drain == 200
            and self.exit_code == 0
        )

    def lines(self) -> list[str]:
        slow = ", ".join(
            f"{status} after {t:.2f} s"
            for status, t in zip(self.slow_statuses, self.slow_finished_after_signal_s, strict=True)
        )
        return [
            f"workers: {self.workers}, drain: {DRAIN_SECONDS} s, slow uploads: "
            f"{len(self.slow_statuses)} x {UPLOAD_SECONDS} s",
            f"/readyz before SIGTERM: {self.readyz_before}",
            f"/readyz after SIGTERM: {self.readyz_after} ({self.readyz_after_s:.2f} s after it)",
            f"new update during the drain: {self.update_during_drain}",
            f"slow updates (time after SIGTERM): {slow}",
            f"slow updates with the exact expected weights: {sum(self.slow_correct)}"
            f"/{len(self.slow_correct)}",
            f"exit code: {self.exit_code} ({self.exit_after_signal_s:.2f} s after SIGTERM)",
            f"shutdown: {'PASS' if self.passed else 'FAIL'}",
        ]


async def _trickle(body: bytes, started: asyncio.Event) -> AsyncIterator[bytes]:
    size = -(-len(body) // CHUNKS)
    for i in range(CHUNKS):
        yield body[i * size : (i + 1) * size]
        started.set()
        await asyncio.sleep(UPLOAD_SECONDS / CHUNKS)


async def _scenario(server: LiveServer, report: ShutdownReport, slow_count: int) -> None:
    payloads = [random_update(seed, 4, 5000, beta=0.1, lr=0.01) for seed in range(slow_count)]
    headers = {"content-type": "application/json"}
    async with httpx2.AsyncClient(base_url=server.base_url, timeout=60) as client:
        report.readyz_before = (await client.get("/readyz")).status_code
        started = [asyncio.Event() for _ in payloads]
        slow = [
            asyncio.create_task(
                client.post("/update", content=_trickle(body, event), headers=headers)
            )
            for (body, _), event in zip(payloads, started, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 10)
        await asyncio.sleep(0.2)  # every slow body is being read by now

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        while time.monotonic() - signalled < 2:
            report.readyz_after = (await client.get("/readyz")).status_code
            if report.readyz_after == 503:
                break
            await asyncio.sleep(0.05)
        report.readyz_after_s = time.monotonic() - signalled
        # A load balancer may still send a request or two before it notices: still served.
        report.update_during_drain = (
            await client.post("/update", content=REFERENCE_BODY, headers=headers)
        ).status_code

        for task, (_, expected) in zip(slow, payloads, strict=True):
            response = await task
            report.slow_finished_after_signal_s.append(time.monotonic() - signalled)
            report.slow_statuses.append(response.status_code)
            report.slow_correct.append(
                response.status_code == 200 and response.json()["weights"] == expected
            )
    report.exit_code = await asyncio.to_thread(server.process.wait, 60)
    report.exit_after_signal_s = time.monotonic() - signalled


REFERENCE_BODY = orjson.dumps(REFERENCE_EXAMPLE)


def run(workers: int = 1, slow_count: int = 4) -> ShutdownReport:
    """Run the scenario against a fresh server with `workers` processes."""
    report = ShutdownReport(workers)
    env = {
        "WEB_CONCURRENCY": str(workers),
        "RLHF_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "RLHF_MAX_IN_FLIGHT": str(2 * slow_count),
    }
    args = ("--no-access-log", "--timeout-graceful-shutdown", "30")
    with live_server(env, args) as server:
        asyncio.run(_scenario(server, report, slow_count))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    workers = parser.parse_args().workers
    report = run(workers)
    print("\n".join(report.lines()))
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
