"""`make bench`: the service, a baseline and a floor over loopback HTTP, interleaved; tables.

Servers, each its own process:
  service   `python -m app --no-access-log`, as the container runs it: the JSON log line
            of every update and the metrics on (its output goes to /dev/null), with
            RLHF_MAX_IN_FLIGHT=64 so that 16 connections get answers, not the gate's 503
  baseline  benchmarks.baseline:app under uvicorn, a straightforward FastAPI implementation
            (JSON only)
  floor     benchmarks.floor:app under uvicorn, no validation at all: read, decode, one
            matrix-vector product, encode
All with httptools and uvloop, one worker.

Tables:
  throughput  requests per second from wrk (a C load generator, keep-alive, one thread) at
              2 and 16 connections, 8 x 64 and 64 x 1024 updates, JSON and safetensors;
              every (size, format, connections) runs each server in turn, twice, the order
              rotating, and reports the mean. Skipped, saying how to install wrk, without it.
  latency     one request at a time from Python for 1 M and 16 M floats (the client's own
              cost, about a millisecond, is small beside these), and a 60 MB JSON body of
              zeros; every round sends one request to each server in turn, starting one
              server further on each round.
Peak memory growth is the server's peak RSS during one request (Linux: VmHWM after
resetting it through /proc/PID/clear_refs) minus its RSS before, divided by the body size.
Environment: BENCH_ROUNDS scales the latency rounds (default 1.0), BENCH_SECONDS the
seconds of each wrk run (default 3); BENCH_PORT is the first port tried (default 17000).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
import msgspec
import numpy as np
import orjson
import simdjson
from safetensors.numpy import load, save

from app.wire import json_codec, safetensors_codec
from app.wire.schemas import UpdateRequest

ROOT = Path(__file__).resolve().parent.parent
SAFETENSORS = "application/x-safetensors"
# (B, N, formats, rounds, zeros): 1 M floats as JSON and safetensors, 16 M as safetensors
# (134 MB), and a 60 MB JSON body of zeros (`0.0`, the shortest literal orjson writes).
SIZES = [
    (64, 16384, ("json", "safetensors"), 30, False),
    (256, 65536, ("safetensors",), 5, False),
    (64, 234375, ("json",), 3, True),
]
# (B, N) of the throughput table, and its connection counts.
THROUGHPUT_SIZES = [(8, 64), (64, 1024)]
CONNECTIONS = (2, 16)
THROUGHPUT_ROUNDS = 2
MAX_BODY = 256 * 1024 * 1024
SERVERS = {
    "service": "app",
    "baseline": "benchmarks.baseline:app",
    "floor": "benchmarks.floor:app",
}
# wrk's script: POST the body file with the Content-Type, both from the environment.
WRK_SCRIPT = """
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
wrk.headers["Accept"] = os.getenv("BENCH_CONTENT_TYPE")
"""


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
    growth: list[int | None]


def main() -> None:
    scale = float(os.environ.get("BENCH_ROUNDS", "1"))
    started = time.monotonic()
    print(
        f"# rlhf-update benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{cpu_model()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print_in_process_decoders()
    with ExitStack() as stack:
        ports = free_ports(int(os.environ.get("BENCH_PORT", "17000")), len(SERVERS))
        servers = [
            stack.enter_context(serve(n, m, p))
            for (n, m), p in zip(SERVERS.items(), ports, strict=True)
        ]
        client = stack.enter_context(httpx2.Client(timeout=120))
        print_throughput(client, servers)
        rows = []
        for b, n, formats, rounds, zeros in SIZES:
            arrays = make_arrays(b, n, zeros=zeros)
            for wire in formats:
                body = encode(arrays, wire)
                # The baseline is JSON only, and the zeros row is about the service's memory.
                targets = [
                    s
                    for s in servers
                    if (wire == "json" or s.name != "baseline")
                    and not (zeros and s.name == "baseline")
                ]
                samples = measure(client, targets, body, wire, max(3, round(rounds * scale)))
                rows.append(((b, n), wire + (" zeros" if zeros else ""), len(body), samples))
    print_table(rows)
    print(f"\n(total {time.monotonic() - started:.0f} s)")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_throughput(client: httpx2.Client, servers: list[Server]) -> None:
    """Requests per second from wrk, each server in turn, with its ratio to the floor."""
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "\nThroughput: skipped, wrk is not installed (Debian/Ubuntu: "
            "`sudo apt-get install wrk`; macOS: `brew install wrk`)."
        )
        return
    seconds = float(os.environ.get("BENCH_SECONDS", "3"))
    print(
        f"\nThroughput (wrk, one thread, keep-alive, {seconds:g} s per run, "
        f"mean of {THROUGHPUT_ROUNDS} interleaved runs):"
    )
    print("\n| B x N | format | body KB | connections | server | req/s | x floor |")
    print("|---|---|---:|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory, "post.lua")
        script.write_text(WRK_SCRIPT)
        for b, n in THROUGHPUT_SIZES:
            arrays = make_arrays(b, n)
            for wire in ("json", "safetensors"):
                body = encode(arrays, wire)
                # Every server must answer this body with 200 before it is timed.
                targets = [s for s in servers if wire == "json" or s.name != "baseline"]
                measure(client, targets, body, wire, 1)
                body_file = Path(directory, "body")
                body_file.write_bytes(body)
                env = os.environ | {
                    "BENCH_BODY_FILE": str(body_file),
                    "BENCH_CONTENT_TYPE": SAFETENSORS
                    if wire == "safetensors"
                    else "application/json",
                }
                for connections in CONNECTIONS:
                    rates: dict[str, list[float]] = {s.name: [] for s in targets}
                    for round_ in range(THROUGHPUT_ROUNDS):
                        turn = round_ % len(targets)
                        for server in targets[turn:] + targets[:turn]:
                            rates[server.name].append(
                                run_wrk(wrk, script, server, connections, seconds, env)
                            )
                    means = {name: statistics.mean(r) for name, r in rates.items()}
                    for name, rate in means.items():
                        print(
                            f"| {b} x {n} | {wire} | {len(body) / 1e3:.1f} | {connections} "
                            f"| {name} | {rate:,.0f} | {rate / means['floor']:.2f} |"
                        )


def run_wrk(
    wrk: str, script: Path, server: Server, connections: int, seconds: float, env: dict[str, str]
) -> float:
    """One wrk run's requests per second; exits if any answer was not a 2xx."""
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script)]
    result = subprocess.run(
        [*command, f"{server.url}/update"], env=env, capture_output=True, text=True, check=True
    )
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        sys.exit(f"wrk against {server.name}:\n{result.stdout}")
    for line in result.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    sys.exit(f"wrk printed no Requests/sec:\n{result.stdout}")


def make_arrays(b: int, n: int, *, zeros: bool = False) -> dict[str, np.ndarray]:
    if zeros:
        shapes = {"weights": n, "rewards": b, "policy_log_probs": b, "ref_log_probs": b}
        return {name: np.zeros(shape) for name, shape in shapes.items()} | {
            "log_prob_grads": np.zeros((b, n)),
            "beta": np.array(0.1),
            "lr": np.array(0.01),
        }
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
            # The kernel's RSS counters lag by a few pages, so a request that grew nothing
            # can read a little below its start: no growth, not a lack of the figure.
            growth = max(peak(server.pid) - before, 0) if before >= 0 else None
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
    print("\nLatency, one request at a time:")
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
            known = [g for g in sample.growth if g is not None]
            growth = statistics.median(known) / length if known else None
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
        "pysimdjson whole document, as_buffer": lambda: {
            k: np.frombuffer(cast(simdjson.Array, document[k]).as_buffer(of_type="d"))
            for document in (cast(simdjson.Object, simdjson.Parser().parse(json_body)),)
            for k in ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")
        },
        "service JSON decoder (brackets + pysimdjson)": lambda: json_codec.decode_request(
            json_body
        ),
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
    env = os.environ | {"RLHF_MAX_BODY_SIZE": str(MAX_BODY)}
    if module == "app":  # as the container runs it: the update's JSON log line on
        # The gate answers 503 at once past RLHF_MAX_IN_FLIGHT (default: the CPU count), and
        # wrk would count those as answers: let every connection's update run.
        env |= {"HOST": "127.0.0.1", "PORT": str(port), "RLHF_MAX_IN_FLIGHT": "64"}
        command = [sys.executable, "-m", "app", "--no-access-log"]
    else:
        command = [sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1"]
        command += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        command += ["--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
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
