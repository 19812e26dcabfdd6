"""Soak proof: 10 000 updates with 10^5-float bodies; the server's memory must stay flat.

Prints the server's RSS every 1000 updates and passes when the last sample is within
20 MiB of the one after warm-up (the first). Bodies and answers are safetensors (the
binary path) unless `--format json` asks for JSON both ways.

    python -m scripts.soak [--updates 10000] [--format safetensors|json] [--seconds 280]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import httpx2
import numpy as np
import orjson
from numpy.typing import NDArray
from safetensors.numpy import save

from scripts.live_server import live_server, rss_bytes

__all__ = ["SoakReport", "run"]

MIB = 1024 * 1024
TOLERANCE = 20 * MIB
SAMPLES = 10
# B = 1, N = 50 000: weights and one gradient row, 100 003 floats per body.
B, N = 1, 50_000
CONCURRENCY = 2


@dataclass
class SoakReport:
    updates: int
    body_format: str = ""
    body_bytes: int = 0
    elapsed_s: float = 0.0
    completed: int = 0
    failures: list[str] = field(default_factory=list)
    rss_samples: list[tuple[int, int]] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return self.rss_samples[-1][1] - self.rss_samples[0][1]

    @property
    def passed(self) -> bool:
        return (
            not self.failures
            and self.completed == self.updates
            and len(self.rss_samples) >= 2
            and abs(self.drift) <= TOLERANCE
        )

    def lines(self) -> list[str]:
        out = [
            f"{self.updates} updates, bodies: {self.body_format}, {self.body_bytes} bytes, "
            f"B={B}, N={N} ({2 * N + 3 * B} floats), concurrency {CONCURRENCY}"
        ]
        if self.elapsed_s:
            out.append(
                f"{self.completed} updates in {self.elapsed_s:.1f} s "
                f"({self.completed / self.elapsed_s:.0f} updates/s)"
            )
        if len(self.rss_samples) >= 2:
            out.append(
                f"RSS drift since warm-up: {self.drift / MIB:+.1f} MiB "
                f"(limit ±{TOLERANCE // MIB} MiB)"
            )
        out.extend(f"failure: {failure}" for failure in self.failures[:10])
        out.append(f"soak: {'PASS' if self.passed else 'FAIL'}")
        return out


def _arrays() -> dict[str, NDArray[np.float64]]:
    return {
        "weights": np.full(N, 1.0),
        "rewards": np.full(B, 1.0),
        "policy_log_probs": np.full(B, -1.5),
        "ref_log_probs": np.full(B, -1.5),
        "log_prob_grads": np.full((B, N), 0.5),
        "beta": np.array(1.0),
        "lr": np.array(0.5),
    }


def json_body(arrays: dict[str, NDArray[np.float64]]) -> bytes:
    fields = {name: a.tolist() for name, a in arrays.items()}
    return orjson.dumps(fields)


async def _soak(base_url: str, pid: int, report: SoakReport, seconds: float) -> None:
    arrays = _arrays()
    deadline = time.monotonic() + seconds
    async with httpx2.AsyncClient(base_url=base_url, timeout=60) as client:
        if report.body_format == "json":
            body, content_type = json_body(arrays), "application/json"
        else:
            body, content_type = save(arrays), "application/x-safetensors"
        sample_every = max(1, report.updates // SAMPLES)
        report.body_bytes = len(body)
        print(report.lines()[0], flush=True)
        headers = {"content-type": content_type, "accept": content_type}
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while issued < report.updates and time.monotonic() < deadline:
                issued += 1
                response = await client.post("/update", content=body, headers=headers)
                if response.status_code != 200:
                    report.failures.append(f"status {response.status_code}: {response.text[:200]}")
                report.completed += 1
                if report.completed % sample_every == 0:
                    report.rss_samples.append((report.completed, rss_bytes(pid)))
                    done, rss = report.rss_samples[-1]
                    print(f"after {done:>6} updates: server RSS {rss / MIB:8.1f} MiB", flush=True)

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        report.elapsed_s = time.monotonic() - start
    if report.completed < report.updates:
        report.failures.append(f"only {report.completed} updates within {seconds} s")


def run(
    updates: int = 10_000, body_format: str = "safetensors", seconds: float = 280
) -> SoakReport:
    """Soak a fresh single-worker server."""
    report = SoakReport(updates, body_format)
    with live_server({"WEB_CONCURRENCY": "1"}) as server:
        asyncio.run(_soak(server.base_url, server.process.pid, report, seconds))
        server.stop()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--format", choices=("safetensors", "json"), default="safetensors")
    parser.add_argument("--seconds", type=float, default=280)
    options = parser.parse_args()
    report = run(options.updates, options.format, options.seconds)
    print("\n".join(report.lines()))
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
