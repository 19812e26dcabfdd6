"""The concurrency gate: compute slots, a short FIFO queue, then 503 with Retry-After."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx2
import orjson
import pytest
from fastapi.testclient import TestClient

from app.api.gate import ConcurrencyGate
from app.core import UpdateResult
from app.errors import SaturatedError
from app.main import create_app
from app.settings import Settings
from app.wire.payload import UpdatePayload
from tests.helpers.metrics_text import sample

# Above 16 KiB a JSON body is decoded and computed in a worker thread, not on the event
# loop (tests/api/test_concurrency.py): there an update held in its computation keeps its
# slot of the gate without stopping the loop from answering the others.
_OFF_THE_LOOP = 32 * 1024


def _gate(limit: int, max_queue: int = 0, queue_timeout: float = 10.0) -> ConcurrencyGate:
    return ConcurrencyGate(limit, max_queue=max_queue, queue_timeout=queue_timeout)


async def _settle() -> None:
    """Let every task that can run do so."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_gate_counts_and_caps() -> None:
    seen: list[int] = []
    gate = ConcurrencyGate(2, max_queue=0, queue_timeout=1.0, on_change=seen.append)
    assert gate.try_enter()
    assert gate.try_enter()
    assert not gate.try_enter()
    gate.leave()
    assert gate.try_enter()
    assert seen == [1, 2, 1, 2]


def test_without_a_queue_past_the_cap_is_refused_at_once_and_slots_come_back() -> None:
    async def scenario() -> None:
        gate = _gate(1)
        async with gate:
            assert gate.in_flight == 1
            with pytest.raises(SaturatedError, match=r"already serving 1 updates"):
                await asyncio.wait_for(gate.enter(), timeout=0.5)
            assert (gate.in_flight, gate.waiting) == (1, 0)
        with pytest.raises(RuntimeError):
            async with gate:
                raise RuntimeError
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_waiters_get_the_slots_first_come_first_served() -> None:
    queued: list[int] = []
    in_flight: list[int] = []

    async def scenario() -> None:
        gate = ConcurrencyGate(
            1,
            max_queue=3,
            queue_timeout=10.0,
            on_change=in_flight.append,
            on_queue_change=queued.append,
        )
        order: list[int] = []
        assert gate.try_enter()

        async def wait_then_hold(index: int) -> None:
            async with gate:
                order.append(index)
                await asyncio.sleep(0)

        tasks = []
        for index in range(3):
            tasks.append(asyncio.create_task(wait_then_hold(index)))
            await _settle()  # each is in the queue before the next arrives
        assert (gate.in_flight, gate.waiting) == (1, 3)
        gate.leave()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert (gate.in_flight, gate.waiting) == (0, 0)

    asyncio.run(scenario())
    assert queued == [1, 2, 3, 2, 1, 0]
    # Handed on from one to the next without ever being free or over the cap.
    assert in_flight == [1, 0]


def test_a_full_queue_is_refused_at_once() -> None:
    async def scenario() -> None:
        gate = _gate(1, max_queue=2)
        assert gate.try_enter()
        waiters = [asyncio.create_task(gate.enter()) for _ in range(2)]
        await _settle()
        start = time.perf_counter()
        with pytest.raises(SaturatedError, match=r"with 2 more waiting \(RLHF_MAX_QUEUE\)"):
            await gate.enter()
        assert time.perf_counter() - start < 0.1
        assert gate.waiting == 2
        gate.leave()
        gate.leave()
        await asyncio.gather(*waiters)
        gate.leave()
        assert (gate.in_flight, gate.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_waiter_gives_up_after_the_queue_timeout() -> None:
    async def scenario() -> None:
        gate = _gate(1, max_queue=4, queue_timeout=0.05)
        assert gate.try_enter()
        start = time.perf_counter()
        with pytest.raises(SaturatedError, match=r"within 0.05 s \(RLHF_QUEUE_TIMEOUT_SECONDS\)"):
            await gate.enter()
        waited = time.perf_counter() - start
        assert 0.05 <= waited < 1
        assert (gate.in_flight, gate.waiting) == (1, 0)
        gate.leave()  # the slot is freed, not handed to the waiter that left
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def scenario() -> None:
        gate = _gate(1, max_queue=4)
        assert gate.try_enter()
        waiter = asyncio.create_task(gate.enter())
        await _settle()
        assert gate.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
        gate.leave()
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_a_slot_handed_to_a_waiter_cancelled_meanwhile_goes_to_the_next() -> None:
    async def scenario() -> None:
        gate = _gate(1, max_queue=4)
        assert gate.try_enter()
        first = asyncio.create_task(gate.enter())
        second = asyncio.create_task(gate.enter())
        await _settle()
        gate.leave()  # hands the slot to `first`, which has not run yet ...
        first.cancel()  # ... and is cancelled before it does
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, timeout=1)
        assert (gate.in_flight, gate.waiting) == (1, 0)
        gate.leave()
        assert gate.in_flight == 0

    asyncio.run(scenario())


def _held_compute(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Semaphore, threading.Event]:
    """Make every update hold its computation until the returned event is set."""
    holding = threading.Semaphore(0)
    release = threading.Event()
    compute = UpdatePayload.compute

    def held_compute(self: UpdatePayload) -> UpdateResult:
        holding.release()
        release.wait(timeout=10)
        return compute(self)

    monkeypatch.setattr(UpdatePayload, "compute", held_compute)
    return holding, release


def test_past_the_cap_and_the_queue_update_is_503_at_once_while_probes_answer(
    example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    holding, release = _held_compute(monkeypatch)
    # Small bodies are answered on the event loop; held there, they would block the loop.
    # Trailing whitespace makes the held bodies large, the update the same.
    large = orjson.dumps(example) + b" " * _OFF_THE_LOOP
    json_headers = {"content-type": "application/json"}
    app = create_app(Settings(max_in_flight=2, max_queue=1))

    async def scenario() -> None:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            held = [
                asyncio.create_task(client.post("/update", content=large, headers=json_headers))
                for _ in range(2)
            ]
            for _ in range(2):
                assert await asyncio.to_thread(holding.acquire, True, 10)
            queued = asyncio.create_task(client.post("/update", json=example))
            for _ in range(500):
                if app.state.gate.waiting == 1:
                    break
                await asyncio.sleep(0.01)
            metrics = (await client.get("/metrics")).text
            assert sample(metrics, "rlhf_update_in_flight") == 2
            assert sample(metrics, "rlhf_update_queued") == 1
            refused = await asyncio.wait_for(client.post("/update", json=example), timeout=30)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["type"] == "urn:rlhf-update:problem:saturated"
            assert "RLHF_MAX_IN_FLIGHT" in problem["detail"]
            assert "RLHF_MAX_QUEUE" in problem["detail"]
            for path in ["/healthz", "/livez", "/metrics"]:
                probe = await asyncio.wait_for(client.get(path), timeout=30)
                assert probe.status_code == 200, path
            assert not queued.done()
            release.set()
            assert [(await task).status_code for task in held] == [200, 200]
            assert (await queued).status_code == 200
            assert (await client.post("/update", json=example)).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert sample(metrics, "rlhf_update_in_flight") == 0
            assert sample(metrics, "rlhf_update_queued") == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_an_update_still_waiting_at_the_queue_timeout_is_503(
    example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    holding, release = _held_compute(monkeypatch)
    large = orjson.dumps(example) + b" " * _OFF_THE_LOOP
    app = create_app(Settings(max_in_flight=1, queue_timeout_seconds=0.1))

    async def scenario() -> None:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            held = asyncio.create_task(
                client.post("/update", content=large, headers={"content-type": "application/json"})
            )
            assert await asyncio.to_thread(holding.acquire, True, 10)
            start = time.perf_counter()
            refused = await asyncio.wait_for(client.post("/update", json=example), timeout=30)
            assert time.perf_counter() - start >= 0.1
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "RLHF_QUEUE_TIMEOUT_SECONDS" in refused.json()["detail"]
            assert app.state.gate.waiting == 0
            release.set()
            assert (await held).status_code == 200
            assert app.state.gate.in_flight == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_slots_are_given_back_after_errors(example: dict[str, Any]) -> None:
    with TestClient(create_app(Settings(max_in_flight=1))) as client:
        for body in [b"{", b"[]", b'{"weights": []}']:
            assert client.post("/update", content=body).status_code in {400, 422}
        assert client.post("/update", json=example | {"lr": -1}).status_code == 422
        assert client.post("/update", json=example).status_code == 200
        state = client.app.state  # type: ignore[attr-defined]
        assert (state.gate.in_flight, state.gate.waiting, state.uploads.held) == (0, 0, 0)
