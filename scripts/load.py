"""Load proof: overload the gate at 4x RLHF_MAX_IN_FLIGHT and check that it holds.

Plain asyncio + httpx2 against `python -m app` on loopback, bounded in count and time.
Prints requests, concurrency, req/s, the status histogram and latency percentiles, and
fails (exit 1) unless: no 5xx but the gate's 503, every 503 with Retry-After, every
response echoing its request id, every 200 with the exact expected weights, and /healthz
answering within 1 s throughout.

    python -m scripts.load [--requests 2000] [--seconds 30] [--max-in-flight 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx2
import numpy as np

from scripts.live_server import live_server
from scripts.payloads import random_update

__all__ = ["LoadReport", "run"]

HEALTH_DEADLINE_S = 1.0


@dataclass
class LoadReport:
    concurrency: int
    max_in_flight: int
    elapsed_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_s: dict[int, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    health_latencies_s: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def passed(self) -> bool:
        return (
            not self.problems
            and self.statuses[200] > 0
            and self.statuses[503] > 0
            and set(self.statuses) <= {200, 503}
            and bool(self.health_latencies_s)
            and max(self.health_latencies_s) < HEALTH_DEADLINE_S
        )

    def lines(self) -> list[str]:
        out = [
            f"requests: {self.requests} in {self.elapsed_s:.1f} s "
            f"({self.requests / self.elapsed_s:.0f} req/s), concurrency {self.concurrency} "
            f"= 4 x RLHF_MAX_IN_FLIGHT ({self.max_in_flight})",
            "status histogram: "
            + ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items())),
        ]
        for status, latencies in sorted(self.latencies_s.items()):
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
            out.append(f"latency of {status}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms")
        if self.health_latencies_s:
            h = np.array(self.health_latencies_s) * 1000
            out.append(
                f"/healthz during the overload: {h.size} probes, p50 {np.median(h):.1f} ms, "
                f"max {h.max():.1f} ms (limit {HEALTH_DEADLINE_S * 1000:.0f} ms)"
            )
        out.extend(f"problem: {problem}" for problem in self.problems[:10])
        out.append(f"load: {'PASS' if self.passed else 'FAIL'}")
        return out


async def _overload(base_url: str, report: LoadReport, total: int, seconds: float) -> None:
    body, expected = random_update(7, 8, 2000, beta=0.05, lr=0.01)
    deadline = time.monotonic() + seconds
    issued = 0
    done = asyncio.Event()
    limits = httpx2.Limits(max_connections=report.concurrency + 1)

    async with httpx2.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def worker(index: int) -> None:
            nonlocal issued
            while issued < total and time.monotonic() < deadline:
                issued += 1
                request_id = f"load-{index}-{issued}"
                start = time.perf_counter()
                try:
                    response = await client.post(
                        "/update",
                        content=body,
                        headers={"content-type": "application/json", "x-request-id": request_id},
                    )
                except httpx2.TransportError as exc:
                    report.problems.append(f"{request_id}: {type(exc).__name__} {exc}")
                    continue
                elapsed = time.perf_counter() - start
                status = response.status_code
                report.statuses[status] += 1
                report.latencies_s.setdefault(status, []).append(elapsed)
                if response.headers.get("x-request-id") != request_id:
                    report.problems.append(f"{request_id}: X-Request-ID not echoed")
                if status == 503:
                    if "retry-after" not in response.headers:
                        report.problems.append(f"{request_id}: 503 without Retry-After")
                    if response.json().get("request_id") != request_id:
                        report.problems.append(f"{request_id}: problem body lacks its id")
                    # A short pause, not the full Retry-After: the overload must go on.
                    await asyncio.sleep(0.01)
                elif status == 200 and response.json()["weights"] != expected:
                    report.problems.append(f"{request_id}: wrong weights")
                elif status != 200:
                    report.problems.append(f"{request_id}: status {status}: {response.text}")

        async def prober() -> None:
            async with httpx2.AsyncClient(base_url=base_url, timeout=5) as probe_client:
                while not done.is_set():
                    start = time.perf_counter()
                    response = await probe_client.get("/healthz")
                    report.health_latencies_s.append(time.perf_counter() - start)
                    if response.status_code != 200:
                        report.problems.append(f"/healthz answered {response.status_code}")
                    await asyncio.sleep(0.1)

        probe_task = asyncio.create_task(prober())
        start = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(report.concurrency)))
        report.elapsed_s = time.monotonic() - start
        done.set()
        await probe_task


def run(total: int = 2000, seconds: float = 30, max_in_flight: int = 2) -> LoadReport:
    """Overload a fresh single-worker server at 4x its gate."""
    report = LoadReport(concurrency=4 * max_in_flight, max_in_flight=max_in_flight)
    env = {"RLHF_MAX_IN_FLIGHT": str(max_in_flight), "WEB_CONCURRENCY": "1"}
    with live_server(env) as server:
        asyncio.run(_overload(server.base_url, report, total, seconds))
        server.stop()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-in-flight", type=int, default=2)
    options = parser.parse_args()
    report = run(options.requests, options.seconds, options.max_in_flight)
    print("\n".join(report.lines()))
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
