"""Load proof, in two phases against `python -m app` on loopback, each on a fresh server.

1. Overload: 4x RLHF_MAX_IN_FLIGHT concurrent clients, with a queue of RLHF_MAX_IN_FLIGHT,
   so that twice as many as the gate admits keep coming. Fails (exit 1) unless: no 5xx but
   the gate's 503, every 503 with Retry-After, both 200s and 503s.
2. Slow senders: N connections that send a POST /update head and then their body at one
   byte a second, half with the bearer token and half without, while normal clients post
   updates with the token. Fails unless every normal update is a 200, the slow senders
   with the token are still sending unanswered at the end (no slot, no timeout: they make
   progress), those without it got their 401, and none of them held a compute slot.

In both: every response echoes its request id, every 200 has the exact expected weights,
and /healthz answers within 1 s throughout. Prints requests, req/s, the status histogram
and latency percentiles of each phase.

    python -m scripts.load [--requests 2000] [--seconds 30] [--max-in-flight 2]
                           [--slow-senders 64] [--slow-seconds 10]
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
from scripts.slow_senders import SlowSender, trickle
from tests.helpers.metrics_text import sample

__all__ = ["LoadReport", "SlowSenderReport", "run", "run_slow_senders"]

HEALTH_DEADLINE_S = 1.0
TOKEN = "load-token"
# A slow sender's body: long enough that one byte a second never completes it.
SLOW_BODY_BYTES = 10**6


@dataclass
class Traffic:
    """What normal clients got: statuses, latencies, and anything wrong with the answers."""

    concurrency: int
    elapsed_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_s: dict[int, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    health_latencies_s: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def healthy(self) -> bool:
        return (
            not self.problems
            and bool(self.health_latencies_s)
            and max(self.health_latencies_s) < HEALTH_DEADLINE_S
        )

    def lines(self, during: str) -> list[str]:
        out = [
            f"requests: {self.requests} in {self.elapsed_s:.1f} s "
            f"({self.requests / self.elapsed_s:.0f} req/s), concurrency {self.concurrency}",
            "status histogram: "
            + ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items())),
        ]
        for status, latencies in sorted(self.latencies_s.items()):
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
            out.append(f"latency of {status}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms")
        if self.health_latencies_s:
            h = np.array(self.health_latencies_s) * 1000
            out.append(
                f"/healthz during {during}: {h.size} probes, p50 {np.median(h):.1f} ms, "
                f"max {h.max():.1f} ms (limit {HEALTH_DEADLINE_S * 1000:.0f} ms)"
            )
        out.extend(f"problem: {problem}" for problem in self.problems[:10])
        return out


@dataclass
class LoadReport:
    """Phase 1: the gate under 4x RLHF_MAX_IN_FLIGHT clients."""

    max_in_flight: int
    max_queue: int
    traffic: Traffic

    @property
    def passed(self) -> bool:
        statuses = self.traffic.statuses
        return (
            self.traffic.healthy
            and statuses[200] > 0
            and statuses[503] > 0
            and set(statuses) <= {200, 503}
        )

    def lines(self) -> list[str]:
        return [
            f"overload: concurrency {self.traffic.concurrency} = 4 x RLHF_MAX_IN_FLIGHT "
            f"({self.max_in_flight}), RLHF_MAX_QUEUE {self.max_queue}",
            *self.traffic.lines("the overload"),
            f"overload: {'PASS' if self.passed else 'FAIL'}",
        ]


@dataclass
class SlowSenderReport:
    """Phase 2: normal traffic while slow senders trickle their bodies in."""

    max_in_flight: int
    seconds: float
    senders: list[SlowSender]
    traffic: Traffic
    # rlhf_update_in_flight and rlhf_update_queued with only the slow senders connected.
    idle_gauges: tuple[float, float] = (-1.0, -1.0)

    def _with_token(self) -> list[SlowSender]:
        return [sender for sender in self.senders if sender.authenticated]

    def _without_token(self) -> list[SlowSender]:
        return [sender for sender in self.senders if not sender.authenticated]

    @property
    def passed(self) -> bool:
        statuses = self.traffic.statuses
        with_token, without_token = self._with_token(), self._without_token()
        return (
            self.traffic.healthy
            and statuses[200] > 0
            and set(statuses) == {200}
            and self.idle_gauges == (0.0, 0.0)
            and bool(with_token)
            and bool(without_token)
            and all(s.error is None for s in self.senders)
            # Still sending, unanswered and connected: trickling the whole phase.
            and all(
                s.status is None and not s.closed_by_server and s.sent >= self.seconds / 2
                for s in with_token
            )
            and all(s.status == 401 for s in without_token)
        )

    def lines(self) -> list[str]:
        with_token, without_token = self._with_token(), self._without_token()
        sent = [s.sent for s in with_token] or [0]
        unanswered = sum(s.status is None and not s.closed_by_server for s in with_token)
        answers = Counter(s.status for s in without_token)
        errors = [s.error for s in self.senders if s.error is not None]
        in_flight, queued = self.idle_gauges
        return [
            f"slow senders: {len(self.senders)} connections trickling 1 byte/s for "
            f"{self.seconds:.0f} s ({len(with_token)} with the token, {len(without_token)} "
            f"without), RLHF_MAX_IN_FLIGHT {self.max_in_flight}",
            f"with only the slow senders connected: rlhf_update_in_flight {in_flight:g}, "
            f"rlhf_update_queued {queued:g}",
            f"slow senders with the token: {unanswered}/{len(with_token)} still sending, "
            f"unanswered, at the end ({min(sent)} to {max(sent)} bytes sent each)",
            "slow senders without the token: "
            + ", ".join(
                f"{status}: {n}"
                for status, n in sorted(answers.items(), key=lambda item: str(item[0]))
            ),
            *(f"slow sender error: {error}" for error in errors[:5]),
            f"normal traffic alongside, with the token, concurrency {self.traffic.concurrency}:",
            *self.traffic.lines("the slow senders"),
            f"slow senders: {'PASS' if self.passed else 'FAIL'}",
        ]


async def _traffic(
    base_url: str,
    traffic: Traffic,
    total: int,
    seconds: float,
    headers: dict[str, str],
    expect_503: bool,
) -> None:
    body, expected = random_update(7, 8, 2000, beta=0.05, lr=0.01)
    deadline = time.monotonic() + seconds
    issued = 0
    done = asyncio.Event()
    limits = httpx2.Limits(max_connections=traffic.concurrency + 1)

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
                        headers=headers
                        | {"content-type": "application/json", "x-request-id": request_id},
                    )
                except httpx2.TransportError as exc:
                    traffic.problems.append(f"{request_id}: {type(exc).__name__} {exc}")
                    continue
                elapsed = time.perf_counter() - start
                status = response.status_code
                traffic.statuses[status] += 1
                traffic.latencies_s.setdefault(status, []).append(elapsed)
                if response.headers.get("x-request-id") != request_id:
                    traffic.problems.append(f"{request_id}: X-Request-ID not echoed")
                if status == 503 and expect_503:
                    if "retry-after" not in response.headers:
                        traffic.problems.append(f"{request_id}: 503 without Retry-After")
                    if response.json().get("request_id") != request_id:
                        traffic.problems.append(f"{request_id}: problem body lacks its id")
                    # A short pause, not the full Retry-After: the overload must go on.
                    await asyncio.sleep(0.01)
                elif status == 200 and response.json()["weights"] != expected:
                    traffic.problems.append(f"{request_id}: wrong weights")
                elif status != 200:
                    traffic.problems.append(f"{request_id}: status {status}: {response.text}")

        async def prober() -> None:
            async with httpx2.AsyncClient(base_url=base_url, timeout=5) as probe_client:
                while not done.is_set():
                    start = time.perf_counter()
                    response = await probe_client.get("/healthz")
                    traffic.health_latencies_s.append(time.perf_counter() - start)
                    if response.status_code != 200:
                        traffic.problems.append(f"/healthz answered {response.status_code}")
                    await asyncio.sleep(0.1)

        probe_task = asyncio.create_task(prober())
        start = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(traffic.concurrency)))
        traffic.elapsed_s = time.monotonic() - start
        done.set()
        await probe_task


def run(total: int = 2000, seconds: float = 30, max_in_flight: int = 2) -> LoadReport:
    """Overload a fresh single-worker server at 4x its gate, twice what gate and queue admit."""
    report = LoadReport(max_in_flight, max_in_flight, Traffic(concurrency=4 * max_in_flight))
    env = {
        "RLHF_MAX_IN_FLIGHT": str(max_in_flight),
        "RLHF_MAX_QUEUE": str(report.max_queue),
        "WEB_CONCURRENCY": "1",
    }
    with live_server(env) as server:
        asyncio.run(_traffic(server.base_url, report.traffic, total, seconds, {}, True))
        server.stop()
    return report


async def _slow_phase(base_url: str, report: SlowSenderReport, total: int) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    stop = asyncio.Event()
    tricklers = [
        asyncio.create_task(
            trickle(
                "127.0.0.1",
                port,
                sender,
                content_length=SLOW_BODY_BYTES,
                token=TOKEN if sender.authenticated else None,
                interval=1.0,
                stop=stop,
            )
        )
        for sender in report.senders
    ]
    try:
        await asyncio.sleep(1.5)  # every slow sender has sent its head and its first bytes
        async with httpx2.AsyncClient(base_url=base_url, timeout=5) as client:
            metrics = (await client.get("/metrics")).text
        report.idle_gauges = (
            sample(metrics, "rlhf_update_in_flight"),
            sample(metrics, "rlhf_update_queued"),
        )
        auth = {"authorization": f"Bearer {TOKEN}"}
        await _traffic(base_url, report.traffic, total, report.seconds, auth, False)
    finally:
        stop.set()
        await asyncio.gather(*tricklers)


def run_slow_senders(
    senders: int = 64, seconds: float = 10, max_in_flight: int = 2, total: int = 100_000
) -> SlowSenderReport:
    """Normal traffic at 2x the gate next to `senders` slow senders, on a fresh server."""
    report = SlowSenderReport(
        max_in_flight=max_in_flight,
        seconds=seconds,
        senders=[SlowSender(authenticated=i % 2 == 0) for i in range(senders)],
        traffic=Traffic(concurrency=2 * max_in_flight),
    )
    env = {
        "RLHF_MAX_IN_FLIGHT": str(max_in_flight),
        "RLHF_API_TOKEN": TOKEN,
        "WEB_CONCURRENCY": "1",
    }
    with live_server(env) as server:
        asyncio.run(_slow_phase(server.base_url, report, total))
        server.stop()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--slow-senders", type=int, default=64)
    parser.add_argument("--slow-seconds", type=float, default=10)
    options = parser.parse_args()
    overload = run(options.requests, options.seconds, options.max_in_flight)
    print("\n".join(overload.lines()), flush=True)
    slow = run_slow_senders(options.slow_senders, options.slow_seconds, options.max_in_flight)
    print("\n".join(slow.lines()))
    passed = overload.passed and slow.passed
    print(f"load: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
