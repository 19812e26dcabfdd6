"""The numeric work runs off the event loop: a small request is answered meanwhile."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx2
import numpy as np
import orjson
import pytest
from safetensors.numpy import save

from app.core import UpdateResult
from app.main import create_app
from app.settings import Settings
from app.wire.payload import UpdatePayload


def _large_request(body_format: str, example: dict[str, Any]) -> tuple[bytes, dict[str, str], int]:
    """A body whose update is too large for the event loop: JSON over 16 KiB, or a binary
    body with more than 2**21 float64 entries."""
    if body_format == "json":
        n = 2000
        large = example | {"weights": [0.0] * n, "log_prob_grads": [[1.0] * n, [1.0] * n]}
        return orjson.dumps(large), {"content-type": "application/json"}, n
    n = 2**20 + 1
    tensors = {name: np.asarray(value, dtype=np.float64) for name, value in example.items()} | {
        "weights": np.zeros(n),
        "log_prob_grads": np.ones((2, n)),
    }
    return save(tensors), {"content-type": "application/x-safetensors"}, n


@pytest.mark.parametrize("body_format", ["json", "safetensors"])
def test_small_request_is_answered_while_a_large_one_computes(
    example: dict[str, Any], monkeypatch: pytest.MonkeyPatch, body_format: str
) -> None:
    computing = threading.Event()
    release = threading.Event()
    compute = UpdatePayload.compute

    def held_compute(self: UpdatePayload) -> UpdateResult:
        # The large update holds its computation until the test lets it go. Were it run on
        # the event loop, the loop would be stuck here and the small request not answered.
        if self.weights.size > 1000:
            computing.set()
            release.wait(timeout=10)
        return compute(self)

    monkeypatch.setattr(UpdatePayload, "compute", held_compute)
    body, headers, n = _large_request(body_format, example)

    async def scenario() -> None:
        transport = httpx2.ASGITransport(app=create_app(Settings(max_body_size=2**25)))
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            large_task = asyncio.create_task(client.post("/update", content=body, headers=headers))
            for _ in range(500):
                if computing.is_set():
                    break
                await asyncio.sleep(0.01)
            assert computing.is_set()
            small = await asyncio.wait_for(client.post("/update", json=example), timeout=30)
            health = await asyncio.wait_for(client.get("/healthz"), timeout=30)
            assert small.status_code == 200
            assert health.status_code == 200
            assert not large_task.done()
            release.set()
            large_response = await large_task
            assert large_response.status_code == 200
            assert large_response.json()["weights"] == [0.1] * n

    try:
        asyncio.run(scenario())
    finally:
        release.set()
