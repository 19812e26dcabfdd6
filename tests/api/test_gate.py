"""The concurrency gate: 503 with Retry-After at once past RLHF_MAX_IN_FLIGHT; probes open."""

from __future__ import annotations

import asyncio
import threading
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

# Above 16 KiB a JSON body is decoded and computed in a worker thread, not on the event
# loop (tests/api/test_concurrency.py): there an update held in its computation keeps its
# slot of the gate without stopping the loop from answering the others.
_OFF_THE_LOOP = 32 * 1024


def test_gate_counts_and_caps() -> None:
    seen: list[int] = []
    gate = ConcurrencyGate(2, on_change=seen.append)
    assert gate.try_enter()
    assert gate.try_enter()
    assert not gate.try_enter()
    gate.leave()
    assert gate.try_enter()
    assert seen == [1, 2, 1, 2]


def test_gate_as_a_context_manager_refuses_past_the_cap_and_gives_slots_back() -> None:
    gate = ConcurrencyGate(1)
    with gate:
        assert gate.in_flight == 1
        with pytest.raises(SaturatedError, match="already serving 1 updates"), gate:
            pass
        assert gate.in_flight == 1
    with pytest.raises(RuntimeError), gate:
        raise RuntimeError
    assert gate.in_flight == 0


def test_past_the_cap_update_is_503_at_once_while_probes_answer(
    example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    holding = threading.Semaphore(0)
    release = threading.Event()
    compute = UpdatePayload.compute

    def held_compute(self: UpdatePayload) -> UpdateResult:
        holding.release()
        release.wait(timeout=10)
        return compute(self)

    monkeypatch.setattr(UpdatePayload, "compute", held_compute)
    # Small bodies are answered on the event loop; held there, they would block the loop.
    # Trailing whitespace makes the held bodies large, the update the same.
    large = orjson.dumps(example) + b" " * _OFF_THE_LOOP
    json_headers = {"content-type": "application/json"}
    app = create_app(Settings(max_in_flight=2))

    async def scenario() -> None:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            held = [
                asyncio.create_task(client.post("/update", content=large, headers=json_headers))
                for _ in range(2)
            ]
            for _ in range(2):
                assert await asyncio.to_thread(holding.acquire, True, 10)
            refused = await asyncio.wait_for(client.post("/update", json=example), timeout=30)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["type"] == "urn:rlhf-update:problem:saturated"
            assert "RLHF_MAX_IN_FLIGHT" in problem["detail"]
            for path in ["/healthz", "/livez", "/metrics"]:
                probe = await asyncio.wait_for(client.get(path), timeout=30)
                assert probe.status_code == 200, path
            metrics = (await client.get("/metrics")).text
            assert "rlhf_update_in_flight 2.0" in metrics
            release.set()
            assert [(await task).status_code for task in held] == [200, 200]
            assert (await client.post("/update", json=example)).status_code == 200
            assert "rlhf_update_in_flight 0.0" in (await client.get("/metrics")).text

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
        assert client.app.state.gate.in_flight == 0  # type: ignore[attr-defined]
