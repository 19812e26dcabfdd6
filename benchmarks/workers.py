"""Memory and throughput of the service's workers, for sizing containers and VMs.

Idle: the proportional set size (PSS) of a fresh server with 1 and with 2 workers, summed
over the supervisor and its workers (PSS shares the pages they have in common fairly, so the
sum is what the machine pays). Loaded: the peak RSS of a one-worker server while
4 x `RLHF_MAX_BODY_SIZE` of bodies arrive at once, the most a worker holds, as safetensors
(random) and as JSON (zeros, the worst case), with RLHF_MAX_IN_FLIGHT of them decoded at once.
Throughput: small JSON updates (B = 8, N = 64) per second under wrk with 1 and with 2
workers, in alternating rounds, and their ratio (skipped without wrk). The figures are for
docs/scaling.md; on a shared machine read the ratios, not the absolute numbers.

    python -m benchmarks.workers [--max-body-mib 64] [--in-flight 2] [--rounds 2]
                                 [--wrk-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np
import orjson
from safetensors.numpy import save

from app.api.body import UPLOAD_BUDGET_BODIES
from benchmarks.run import WRK_SCRIPT, Server, encode, make_arrays, run_wrk
from scripts.live_server import live_server

__all__ = ["idle_pss", "loaded_peak", "main", "throughput"]

MIB = 1024 * 1024
# The concurrent uploads of bodies at the limit that fill a worker's upload budget.
BODIES_HELD = UPLOAD_BUDGET_BODIES


def _tree(pid: int) -> list[int]:
    """The process and its descendants (Linux /proc)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            pids.extend(_tree(int(child)))
    return pids


def _status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    msg = f"no {key} for process {pid}"
    raise RuntimeError(msg)


def _pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    msg = f"no Pss for process {pid}"
    raise RuntimeError(msg)


def idle_pss(workers: int) -> tuple[int, int]:
    """(processes, summed PSS in bytes) of a fresh server with `workers` workers, warmed up."""
    with live_server({"WEB_CONCURRENCY": str(workers)}) as server:
        body = orjson.dumps(
            {
                "weights": [0.0, 0.0],
                "rewards": [1.0],
                "policy_log_probs": [0.0],
                "ref_log_probs": [0.0],
                "log_prob_grads": [[1.0, 1.0]],
                "beta": 0.1,
                "lr": 0.1,
            }
        )
        for _ in range(4 * workers):  # every worker imports what an update needs
            httpx2.post(f"{server.base_url}/update", content=body, timeout=30).raise_for_status()
        time.sleep(0.5)
        pids = _tree(server.process.pid)
        total = sum(_pss_bytes(pid) for pid in pids)
        server.stop()
    return len(pids), total


def _bodies(max_body: int) -> dict[str, tuple[bytes, str]]:
    """A safetensors and a JSON body each just under `max_body` bytes (B = 64)."""
    b = 64
    rng = np.random.default_rng(0)

    def arrays(n: int) -> dict[str, np.ndarray]:
        return {
            "weights": rng.standard_normal(n),
            "rewards": rng.standard_normal(b),
            "policy_log_probs": rng.standard_normal(b),
            "ref_log_probs": rng.standard_normal(b),
            "log_prob_grads": rng.standard_normal((b, n)),
        }

    n_binary = int(max_body * 0.97) // (8 * (b + 1))
    binary = save({**arrays(n_binary), "beta": np.array(0.1), "lr": np.array(0.1)})
    # Zeros, written `0.0,`, are JSON's worst case: its float64 arrays are 2x the body.
    n_json = int(max_body * 0.97) // (4 * (b + 1))
    zeros = {name: np.zeros_like(value) for name, value in arrays(n_json).items()}
    text = orjson.dumps({**zeros, "beta": 0.1, "lr": 0.1}, option=orjson.OPT_SERIALIZE_NUMPY)
    return {
        "safetensors": (binary, "application/x-safetensors"),
        "json": (text, "application/json"),
    }


async def _send_at_once(base_url: str, body: bytes, content_type: str, count: int) -> list[int]:
    headers = {"content-type": content_type, "accept": "application/x-safetensors"}
    async with httpx2.AsyncClient(base_url=base_url, timeout=120) as client:
        answers = await asyncio.gather(
            *(client.post("/update", content=body, headers=headers) for _ in range(count))
        )
    return [answer.status_code for answer in answers]


def loaded_peak(
    max_body_mib: int, in_flight: int, body_format: str, rounds: int
) -> tuple[int, int, int, list[int]]:
    """(body bytes, RSS before, peak RSS, statuses) of one worker under 4 max-size bodies."""
    max_body = max_body_mib * MIB
    body, content_type = _bodies(max_body)[body_format]
    env = {
        "WEB_CONCURRENCY": "1",
        "RLHF_MAX_BODY_SIZE": str(max_body),
        "RLHF_MAX_IN_FLIGHT": str(in_flight),
    }
    with live_server(env) as server:
        pid = server.process.pid
        before = _status_bytes(pid, "VmRSS")
        statuses: list[int] = []
        for _ in range(rounds):
            statuses += asyncio.run(_send_at_once(server.base_url, body, content_type, BODIES_HELD))
        peak = _status_bytes(pid, "VmHWM")
        server.stop()
    return len(body), before, peak, statuses


def throughput(
    wrk: str, seconds: float, rounds: int, connections: tuple[int, ...] = (2, 16)
) -> dict[tuple[int, int], list[float]]:
    """Requests per second of small JSON updates, by (workers, connections), every round."""
    body = encode(make_arrays(8, 64), "json")
    rates: dict[tuple[int, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="rlhf-sizing-") as directory:
        script, body_file = Path(directory) / "post.lua", Path(directory) / "body"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        body_file.write_bytes(body)
        env = os.environ | {
            "BENCH_BODY_FILE": str(body_file),
            "BENCH_CONTENT_TYPE": "application/json",
        }
        for _ in range(rounds):
            for workers in (1, 2):
                with live_server({"WEB_CONCURRENCY": str(workers)}) as live:
                    server = Server(f"{workers} worker(s)", live.base_url, live.process.pid)
                    run_wrk(wrk, script, server, 2, 1, env)  # warm every worker up
                    for count in connections:
                        rate = run_wrk(wrk, script, server, count, seconds, env)
                        rates.setdefault((workers, count), []).append(rate)
                    live.stop()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-body-mib", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--wrk-seconds", type=float, default=5)
    options = parser.parse_args()
    for workers in (1, 2):
        processes, pss = idle_pss(workers)
        print(f"idle, WEB_CONCURRENCY={workers}: {processes} processes, PSS {pss / MIB:.0f} MiB")
    for body_format in ("safetensors", "json"):
        size, before, peak, statuses = loaded_peak(
            options.max_body_mib, options.in_flight, body_format, options.rounds
        )
        print(
            f"1 worker, RLHF_MAX_BODY_SIZE={options.max_body_mib}MiB, "
            f"RLHF_MAX_IN_FLIGHT={options.in_flight}, {BODIES_HELD} x "
            f"{size / MIB:.1f} MiB {body_format} bodies at once x {options.rounds}: RSS "
            f"{before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB "
            f"({(peak - before) / (options.max_body_mib * MIB):.1f} x the body limit over idle); "
            f"statuses {sorted(set(statuses))}"
        )
    wrk = shutil.which("wrk")
    if wrk is None:
        print("throughput: skipped, wrk is not installed")
        return 0
    rates = throughput(wrk, options.wrk_seconds, options.rounds)
    for connections in sorted({count for _, count in rates}):
        one = sum(rates[1, connections]) / len(rates[1, connections])
        two = sum(rates[2, connections]) / len(rates[2, connections])
        print(
            f"B=8, N=64 JSON, wrk -c{connections}: 1 worker {one:.0f} req/s, "
            f"2 workers {two:.0f} req/s (ratio {two / one:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
