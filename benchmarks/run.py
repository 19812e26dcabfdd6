"""`make bench`: POST /update over loopback HTTP to three servers, interleaved, and print a table.

Servers, each its own `uvicorn` process with httptools and uvloop:
  service   app.main:create_app (a factory), this project
  baseline  benchmarks.baseline:app, a straightforward FastAPI implementation (JSON only)
  floor     benchmarks.floor:app, no validation at all

Every round sends one request to each server in turn, so machine noise hits all alike,
starting one server further on each round, so that none always follows the same one.
Peak memory growth is the server's peak RSS during one request (Linux: VmHWM after
resetting it through /proc/PID/clear_refs) minus its RSS before, divided by the body size.
Environment: BENCH_ROUNDS scales the rounds (default 1.0); BENCH_PORT is the first port
tried (default 17000).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import numpy as np
import orjson
from safetensors.numpy import load, save

from app.wire import json_codec, safetensors_codec
from app.wire.schemas import UpdateRequest

ROOT = Path(__file__).resolve().parent.parent
SAFETENSORS = "application/x-safetensors"
# (B, N, formats, rounds): 256 x 65536 is 134 MB as safetensors, binary only.
SIZES = [
    (8, 64, ("json", "safetensors"), 200),
    (64, 16384, ("json", "safetensors"), 10),
    (256, 65536, ("safetensors",), 5),
]
MAX_BODY = 256 * 1024 * 1024
SERVERS = {
    "service": "app.main:create_app",
    "baseline": "benchmarks.baseline:app",
    "floor": "benchmarks.floor:app",
}


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    weights: list[float]
    rewards: list[float]
    policy_log_probs: list[float]
    ref_log_probs: list[float]
    log_prob_grads: list[list[float]]
    beta: float
    lr: float


@dataclass
class Server:
    name: str
    url: str
    pid: int


@dataclass
class Sample:
    seconds: list[float]
    growth: list[int]


def main() -> None:
    scale = float(os.environ.get("BENCH_ROUNDS", "1"))
    started = time.monotonic()
    print(f"# rlhf-update benchmark: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print_in_process_decoders()
    with ExitStack() as stack:
        ports = free_ports(int(os.environ.get("BENCH_PORT", "17000")), len(SERVERS))
        servers = [
            stack.enter_context(serve(n, m, p))
            for (n, m), p in zip(SERVERS.items(), ports, strict=True)
        ]
        client = stack.enter_context(httpx2.Client(timeout=120))
        rows = []
        for b, n, formats, rounds in SIZES:
            arrays = make_arrays(b, n)
            for wire in formats:
                body = encode(arrays, wire)
                targets = [s for s in servers if wire == "json" or s.name != "baseline"]
                samples = measure(client, targets, body, wire, max(3, round(rounds * scale)))
                rows.append(((b, n), wire, len(body), samples))
    print_table(rows)
    print(f"\n(total {time.monotonic() - started:.0f} s)")


def make_arrays(b: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(b * n)
    return {
        "weights": rng.standard_normal(n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": rng.standard_normal(b) - 1,
        "ref_log_probs": rng.standard_normal(b) - 1,
        "log_prob_grads": rng.standard_normal((b, n)),
        "beta": np.array(0.1),
        "lr": np.array(0.01),
    }


def encode(arrays: dict[str, np.ndarray], wire: str) -> bytes:
    if wire == "safetensors":
        return save(arrays)
    fields = {name: float(a) if a.ndim == 0 else a for name, a in arrays.items()}
    return orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY)


def measure(
    client: httpx2.Client, servers: list[Server], body: bytes, wire: str, rounds: int
) -> dict[str, Sample]:
    content_type = SAFETENSORS if wire == "safetensors" else "application/json"
    headers = {"content-type": content_type, "accept": content_type}
    samples = {server.name: Sample([], []) for server in servers}
    answers: dict[str, np.ndarray] = {}
    for round_ in range(rounds + 2):  # two warm-up rounds
        # Whichever server a request follows moves a small request's latency by a few percent.
        turn = round_ % len(servers)
        for server in servers[turn:] + servers[:turn]:
            before = reset_peak(server.pid)
            start = time.perf_counter()
            response = client.post(f"{server.url}/update", content=body, headers=headers)
            elapsed = time.perf_counter() - start
            growth = peak(server.pid) - before if before >= 0 else -1
            response.raise_for_status()
            if round_ >= 2:
                samples[server.name].seconds.append(elapsed)
                samples[server.name].growth.append(growth)
            elif round_ == 0:
                answers[server.name] = weights_of(response, wire)
    reference = answers["floor"]
    for name, weights in answers.items():
        if not np.allclose(weights, reference, rtol=1e-12, atol=0):
            sys.exit(f"{name} answered differently from the floor")
    return samples


def weights_of(response: httpx2.Response, wire: str) -> np.ndarray:
    if wire == "safetensors":
        return load(response.content)["weights"]
    return np.asarray(orjson.loads(response.content)["weights"])


def print_table(rows: list[Any]) -> None:
    print(
        "\n| B x N | format | body MB | server | median ms | min ms | MB/s "
        "| x floor | x baseline JSON | peak mem / body |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    baseline_json: dict[tuple[int, int], float] = {}
    for size, wire, length, samples in rows:
        medians = {name: statistics.median(s.seconds) for name, s in samples.items()}
        if "baseline" in medians:
            baseline_json[size] = medians["baseline"]
        for name, sample in samples.items():
            median = medians[name]
            base = baseline_json.get(size)
            growth = statistics.median(sample.growth) / length if sample.growth[0] >= 0 else None
            print(
                f"| {size[0]} x {size[1]} | {wire} | {length / 1e6:.2f} | {name} "
                f"| {median * 1e3:.2f} | {min(sample.seconds) * 1e3:.2f} "
                f"| {length / 1e6 / median:.0f} | {median / medians['floor']:.2f} "
                f"| {f'{median / base:.3f}' if base else '-'} "
                f"| {f'{growth:.2f}' if growth is not None else 'n/a'} |"
            )


def print_in_process_decoders() -> None:
    """Decode times in this process, 64 x 16384 (1 M floats): the wire's share excluded."""
    arrays = make_arrays(64, 16384)
    json_body, st_body = encode(arrays, "json"), encode(arrays, "safetensors")
    fast = msgspec.json.Decoder(_Request)
    candidates: dict[str, Callable[[], object]] = {
        "orjson.loads": lambda: orjson.loads(json_body),
        "orjson.loads + np.asarray (floor)": lambda: {
            k: np.asarray(v) for k, v in orjson.loads(json_body).items()
        },
        "pydantic model_validate_json + np.array": lambda: np.array(
            UpdateRequest.model_validate_json(json_body).log_prob_grads
        ),
        "msgspec typed decode + np.array": lambda: np.array(fast.decode(json_body).log_prob_grads),
        "service JSON decoder (msgspec path)": lambda: json_codec.decode_request(json_body),
        "safetensors.numpy.load (copies)": lambda: load(st_body),
        "service safetensors decoder (views)": lambda: safetensors_codec.decode_request(
            bytearray(st_body)
        ),
    }
    print(
        f"\nIn-process decode, 64 x 16384 ({len(json_body) / 1e6:.1f} MB JSON, "
        f"{len(st_body) / 1e6:.1f} MB safetensors), best of 5:"
    )
    for name, decode in candidates.items():
        best = min(timed(decode) for _ in range(5))
        print(f"  {name:42s} {best * 1e3:8.2f} ms")


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def free_ports(first: int, count: int) -> list[int]:
    ports: list[int] = []
    for port in range(first, first + 1000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    sys.exit(f"no {count} free ports from {first}")


@contextmanager
def serve(name: str, module: str, port: int) -> Iterator[Server]:
    env = os.environ | {"RLHF_MAX_BODY_SIZE": str(MAX_BODY), "RLHF_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1"]
    if module.endswith(":create_app"):
        command.append("--factory")
    command += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    command += ["--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx2.get(f"{url}/healthz", timeout=1)
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    sys.exit(f"{name} did not start on port {port}")
                time.sleep(0.1)
        yield Server(name, url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS to its current RSS and return that; -1 where unsupported."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return _status_kib(pid, "VmRSS") * 1024
    except OSError:
        return -1


def peak(pid: int) -> int:
    try:
        return _status_kib(pid, "VmHWM") * 1024
    except OSError:
        return -1


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(key)


if __name__ == "__main__":
    main()
