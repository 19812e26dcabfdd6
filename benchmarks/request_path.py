"""`python -m benchmarks.request_path`: where one update's time goes, in process and live.

In process, with no socket and no uvicorn: the service's app and the floor's
(`benchmarks.floor`) driven through ASGI on one event loop, one 8 x 64 JSON update at a
time; the service's request path alone, with a fixed answer in place of its decoding,
update and encoding (the request id, the body read, the gate, the metrics and the log
line); and the stages of the service's update timed alone in a warm loop (its decode,
the update, the encoding, the observer's metrics and log line).

Live, `python -m app` on loopback: 50 updates of 64 x 16384 floats as safetensors, one at
a time, and the medians of the stage times each one's log line holds (`duration_s` runs
from the first byte of the body to the answer).

Best of several runs in process; the machine is shared, so compare within a run.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

import httpx2
from starlette.types import ASGIApp, Message

import app.api.update as update_route
from app.main import create_app
from app.ops.context import open_context
from app.ops.log_config import log_config
from app.ops.metrics import UpdateMetrics
from app.ops.observer import UpdateObserver
from app.settings import Settings
from app.wire import json_codec
from app.wire.media import WireFormat
from benchmarks import floor
from benchmarks.run import encode, make_arrays
from scripts.live_server import live_server

SAFETENSORS = "application/x-safetensors"
LIVE_REQUESTS = 50


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/update",
        "raw_path": b"/update",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }


async def _per_call(app: ASGIApp, body: bytes, calls: int) -> float:
    """Seconds per update through `app`, over `calls` updates in a row."""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = _scope(body)
    start = time.perf_counter()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    seconds = (time.perf_counter() - start) / calls
    if set(statuses) != {200}:
        msg = f"an update was refused: {sorted(set(statuses))}"
        raise SystemExit(msg)
    return seconds


async def _through_asgi(body: bytes) -> tuple[float, float, float]:
    """The best per-update time of the service's app, of its request path alone (a fixed
    answer in place of decoding, computing and encoding) and of the floor's app, interleaved.
    """
    service = create_app(Settings(max_in_flight=64))
    answer = json_codec.encode_response(json_codec.decode_request(body).compute())

    async def fixed(
        body: bytearray, formats: tuple[WireFormat, WireFormat], max_elements: int
    ) -> bytes:
        return answer

    times: dict[str, list[float]] = {"service": [], "path": [], "floor": []}
    async with service.router.lifespan_context(service):
        for _ in range(5):
            times["service"].append(await _per_call(service, body, 2000))
            computing = update_route._update
            update_route._update = fixed
            try:
                times["path"].append(await _per_call(service, body, 2000))
            finally:
                update_route._update = computing
            times["floor"].append(await _per_call(floor.app, body, 2000))
    return min(times["service"]), min(times["path"]), min(times["floor"])


def _best(run: Callable[[], object], calls: int = 3000) -> float:
    run()
    return min(timeit.repeat(run, number=calls, repeat=5)) / calls


def _stages(body: bytes) -> dict[str, float]:
    """The warm-loop time of each stage of one update, in seconds."""
    held = bytearray(body)
    payload = json_codec.decode_request(held)
    result = payload.compute()
    # Only its bookkeeping runs here: the app it wraps is never called.
    observer = UpdateObserver(floor.app, UpdateMetrics())
    stages: dict[str, float] = {}
    with open_context("benchmark") as context:
        context.record_shape(payload.rewards.size, payload.weights.size)
        for stage in ("decode", "compute", "encode"):
            with context.stage(stage):
                pass
        context.kl_mean = result.stats.kl_mean

        def record() -> None:
            observer._record(
                context,
                status=200,
                body_format="json",
                body_bytes=len(body),
                duration=0.0003,
                path="/update",
            )

        stages["decode"] = _best(lambda: json_codec.decode_request(held))
        stages["update"] = _best(payload.compute)
        stages["encode"] = _best(lambda: json_codec.encode_response(result))
        stages["metrics and log line"] = _best(record)
    return stages


def _live_stages() -> dict[str, float]:
    """Medians of the stage times in the log lines of live 1 M floats updates, in seconds."""
    body = encode(make_arrays(64, 16384), "safetensors")
    headers = {"content-type": SAFETENSORS, "accept": SAFETENSORS}
    with (
        live_server({"RLHF_MAX_BODY_SIZE": str(256 * 2**20)}) as server,
        httpx2.Client(timeout=60) as client,
    ):
        for _ in range(LIVE_REQUESTS + 10):  # the first 10 warm up
            client.post(
                f"{server.base_url}/update", content=body, headers=headers
            ).raise_for_status()
        time.sleep(0.3)  # the last lines reach the file
        lines = [line for line in server.log_lines() if line.get("message") == "update"]
    lines = lines[-LIVE_REQUESTS:]
    return {
        key: statistics.median(line[key] for line in lines)
        for key in ("duration_s", "decode_s", "compute_s", "encode_s")
    }


def main() -> None:
    # The observer's line is formatted as served (the service's JSON formatter at info),
    # and written to /dev/null, as `make bench` does with the service's output.
    logging.config.dictConfig(log_config("info"))
    devnull = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    body = encode(make_arrays(8, 64), "json")
    print("In process, one 8 x 64 JSON update through ASGI (no socket, no uvicorn), best of 5:")
    service, path, floor_app = asyncio.run(_through_asgi(body))
    print(f"  service's app  {service * 1e6:7.1f} us")
    print(f"  its request path alone, a fixed answer  {path * 1e6:7.1f} us")
    print(f"  floor's app    {floor_app * 1e6:7.1f} us  ({service / floor_app:.1f}x)")
    print("Its stages alone, in a warm loop:")
    for stage, seconds in _stages(body).items():
        print(f"  {stage:<26} {seconds * 1e6:7.1f} us")
    print(f"Live, {LIVE_REQUESTS} updates of 64 x 16384 floats as safetensors, log-line medians:")
    for key, seconds in _live_stages().items():
        print(f"  {key:<12} {seconds * 1e3:7.3f} ms")


if __name__ == "__main__":
    main()
