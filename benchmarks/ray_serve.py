"""The service on Ray Serve beside plain uvicorn, on this machine: overhead, memory, recovery.

    python -m benchmarks.ray_serve        (needs the extra [ray]: `make test` installs it)

Servers: `python -m app` (uvicorn, one worker) and Serve with 2 replicas of
rlhf_update_server.ray_serve:app on a capped local Ray (2 CPUs, a small object store, no
dashboard), both on loopback. Prints:
  overhead  per-request latency of one small JSON update (8 x 64), one request at a time
            over a keep-alive connection; every round sends one to each server, the order
            alternating; median and mean, and Serve's extra cost per request
  memory    proportional set size (PSS, Linux: shared pages split between the processes
            that map them) of every Ray process after the updates, by kind, beside the
            uvicorn server's
  handle    the same update through rlhf_client.HandleTransport (a DeploymentHandle call
            of post_block), one at a time from this driver, after the HTTP rounds
  kill      one replica killed (ray.kill) under a request every 0.1 s: failed requests
            and the seconds until Serve runs 2 replicas again
Environment: RAY_BENCH_ROUNDS (default 400) rounds of the overhead, RAY_BENCH_KILL_REQUESTS
(default 70) requests around the kill.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx2
import numpy as np
import psutil

from scripts.live_server import free_port, live_server
from scripts.ray_cluster import RAY_ENV, local_ray, ray_processes

APP_NAME = "rlhf-update"
DEPLOYMENT = "UpdateService"
REPLICAS = 2


def _body() -> bytes:
    rng = np.random.default_rng(19)
    b, n = 8, 64
    return json.dumps(
        {
            "weights": rng.standard_normal(n).tolist(),
            "rewards": rng.standard_normal(b).tolist(),
            "policy_log_probs": (rng.standard_normal(b) - 3).tolist(),
            "ref_log_probs": (rng.standard_normal(b) - 3).tolist(),
            "log_prob_grads": rng.standard_normal((b, n)).tolist(),
            "beta": 0.1,
            "lr": 0.01,
        }
    ).encode()


def _overhead(urls: dict[str, str], rounds: int) -> dict[str, list[float]]:
    body = _body()
    headers = {"content-type": "application/json"}
    clients = {name: httpx2.Client(base_url=url, timeout=30) for name, url in urls.items()}
    seconds: dict[str, list[float]] = defaultdict(list)
    names = list(urls)
    answers = set()
    try:
        for name in names:  # warm up: connections, first-call paths
            for _ in range(20):
                clients[name].post("/update", content=body, headers=headers)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                start = time.perf_counter()
                response = clients[name].post("/update", content=body, headers=headers)
                seconds[name].append(time.perf_counter() - start)
                if response.status_code != 200:
                    msg = f"{name} answered {response.status_code}: {response.text[:200]}"
                    raise RuntimeError(msg)
                answers.add(response.content)
    finally:
        for client in clients.values():
            client.close()
    if len(answers) != 1:
        msg = "the two servers did not give the same answer to the same request"
        raise RuntimeError(msg)
    return seconds


def _through_handle(calls: int) -> list[float]:
    import asyncio

    from ray import serve
    from rlhf_client import HandleTransport

    body = _body()
    headers = {"content-type": "application/json"}
    transport = HandleTransport(serve.get_deployment_handle(DEPLOYMENT, APP_NAME))

    async def run() -> list[float]:
        seconds = []
        for call in range(20 + calls):
            start = time.perf_counter()
            answer = await transport.post("/update", body, headers)
            if answer.status != 200:
                msg = f"the handle answered {answer.status}"
                raise RuntimeError(msg)
            if call >= 20:  # after a warm-up
                seconds.append(time.perf_counter() - start)
        return seconds

    return asyncio.run(run())


def _kind(process: psutil.Process) -> str:
    name = process.name()
    cmdline = " ".join(process.cmdline())
    if name.startswith("ray::"):
        # A worker's title is its actor class, then what it runs: ServeController.run...
        return name.removeprefix("ray::").split(":", 1)[0].split(".", 1)[0]
    for kind in ("gcs_server", "raylet", "log_monitor", "monitor.py", "dashboard"):
        if kind in cmdline:
            return kind.removesuffix(".py")
    return name


def _pss(process: psutil.Process) -> int:
    return int(process.memory_full_info().pss)


def _kill_replica(base_url: str, requests: int) -> tuple[int, int, float | None]:
    import ray
    from ray import serve

    body = _body()
    headers = {"content-type": "application/json"}
    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT}#"

    def replica_names() -> set[str]:
        actors = ray.util.list_named_actors(all_namespaces=True)
        return {actor["name"] for actor in actors if actor["name"].startswith(prefix)}

    def running() -> int:
        status = serve.status().applications[APP_NAME].deployments[DEPLOYMENT]
        # Serve's schema types the keys as ReplicaState; they arrive as plain strings.
        counts = {
            str(getattr(state, "value", state)): n for state, n in status.replica_states.items()
        }
        return counts.get("RUNNING", 0)

    def traffic() -> list[int]:
        statuses = []
        with httpx2.Client(base_url=base_url, timeout=30) as client:
            for _ in range(requests):
                try:
                    statuses.append(
                        client.post("/update", content=body, headers=headers).status_code
                    )
                except httpx2.TransportError:
                    statuses.append(0)
                time.sleep(0.1)
        return statuses

    before = replica_names()
    victim = sorted(before)[0]
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(traffic)
        time.sleep(1.0)
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        recovered = None
        while time.monotonic() - killed_at < 60:
            if replica_names() - before and running() == REPLICAS:
                recovered = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        statuses = sent.result()
    return sum(status != 200 for status in statuses), len(statuses), recovered


def main() -> None:
    os.environ.update(RAY_ENV)  # before Ray is imported: it reads some once, at import
    from ray import serve
    from rlhf_update_server.ray_serve import UpdateService

    rounds = int(os.environ.get("RAY_BENCH_ROUNDS", "400"))
    kill_requests = int(os.environ.get("RAY_BENCH_KILL_REQUESTS", "70"))
    with live_server() as uvicorn_server, local_ray() as temp_dir:
        port = free_port()
        started = time.monotonic()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            UpdateService.options(
                num_replicas=REPLICAS, ray_actor_options={"num_cpus": 0.5}
            ).bind(),
            name=APP_NAME,
            route_prefix="/",
        )
        print(f"serve.run with {REPLICAS} replicas: {time.monotonic() - started:.1f} s")
        serve_url = f"http://127.0.0.1:{port}"
        seconds = _overhead({"uvicorn": uvicorn_server.base_url, "serve": serve_url}, rounds)

        print(f"\noverhead: {rounds} rounds of one 8 x 64 JSON update to each server, interleaved")
        print("| server | median ms | mean ms | p90 ms |")
        print("| --- | ---: | ---: | ---: |")
        for name, values in seconds.items():
            ms = sorted(1000 * value for value in values)
            p90 = ms[int(0.9 * len(ms))]
            print(
                f"| {name} | {statistics.median(ms):.2f} | {statistics.fmean(ms):.2f} | {p90:.2f} |"
            )
        extra = statistics.median(seconds["serve"]) - statistics.median(seconds["uvicorn"])
        ratio = statistics.median(seconds["serve"]) / statistics.median(seconds["uvicorn"])
        print(
            f"Serve costs {1000 * extra:.2f} ms more per request (median), {ratio:.1f}x uvicorn's"
        )
        handle_ms = [1000 * value for value in _through_handle(rounds)]
        print(
            f"through the handle ({rounds} calls after the HTTP rounds): median "
            f"{statistics.median(handle_ms):.2f} ms, mean {statistics.fmean(handle_ms):.2f} ms"
        )

        pss: dict[str, list[int]] = defaultdict(list)
        for process in ray_processes(temp_dir):
            try:
                pss[_kind(process)].append(_pss(process))
            except psutil.NoSuchProcess:
                continue
        total = sum(sum(values) for values in pss.values())
        uvicorn_pss = _pss(psutil.Process(uvicorn_server.process.pid))
        print(f"\nmemory (PSS) of Ray with {REPLICAS} replicas, this driver not counted")
        print("| processes | count | PSS MiB |")
        print("| --- | ---: | ---: |")
        for kind, sizes in sorted(pss.items(), key=lambda item: -sum(item[1])):
            print(f"| {kind} | {len(sizes)} | {sum(sizes) / 2**20:.0f} |")
        print(f"| all of Ray | {sum(len(v) for v in pss.values())} | {total / 2**20:.0f} |")
        driver_pss = _pss(psutil.Process())
        print(f"| this driver (the benchmark, a Ray driver) | 1 | {driver_pss / 2**20:.0f} |")
        print(f"| uvicorn, python -m app | 1 | {uvicorn_pss / 2**20:.0f} |")
        print(f"Ray + {REPLICAS} replicas take {total / uvicorn_pss:.1f}x one uvicorn server's PSS")

        failures, sent, recovered = _kill_replica(serve_url, kill_requests)
        back = f"{recovered:.1f} s" if recovered is not None else "not within 60 s"
        print(f"\nkill: one of {REPLICAS} replicas killed under traffic: {failures} of {sent}")
        print(f"requests failed; {REPLICAS} replicas running again after {back}")


if __name__ == "__main__":
    main()
