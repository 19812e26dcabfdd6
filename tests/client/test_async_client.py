"""AsyncClient over httpx2.ASGITransport(app), and its retries on a scripted transport."""

from __future__ import annotations

import asyncio

import httpx2
import numpy as np
import pytest
from rlhf_client import AsyncClient, ServiceUnavailableError, UnprocessableEntityError

from app.main import create_app
from app.settings import Settings
from tests.helpers.reference import EXAMPLE
from tests.helpers.scripted import Script, answer, problem

ARGS = tuple(
    EXAMPLE[name]
    for name in ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")
)


def asgi_client(settings: Settings) -> AsyncClient:
    transport = httpx2.ASGITransport(app=create_app(settings))
    return AsyncClient(http_client=httpx2.AsyncClient(transport=transport, base_url="http://app"))


def test_update_over_asgi(settings: Settings) -> None:
    async def scenario() -> np.ndarray:
        async with asgi_client(settings) as client:
            assert await client.health() == {"status": "ok"}
            result = await client.update(*ARGS, beta=1.0, lr=0.1, baseline="mean")
            return result.weights

    # One group, identical adjusted rewards: the mean baseline cancels them entirely.
    assert asyncio.run(scenario()).tolist() == [1.0, 1.0]


def test_float32_and_plain_update_over_asgi(settings: Settings) -> None:
    async def scenario() -> np.ndarray:
        async with asgi_client(settings) as client:
            result = await client.update(np.ones(2, dtype=np.float32), *ARGS[1:], beta=1.0, lr=0.1)
            return result.weights

    weights = asyncio.run(scenario())
    assert weights.dtype == np.float32
    assert weights.tolist() == pytest.approx([1.05, 0.95], rel=1e-7)


def test_errors_over_asgi(settings: Settings) -> None:
    async def scenario() -> None:
        async with asgi_client(settings) as client:
            await client.update(*ARGS, beta=1.0, lr=-0.1)

    with pytest.raises(UnprocessableEntityError) as caught:
        asyncio.run(scenario())
    assert caught.value.errors[0]["loc"] == ["lr"]


def run_scripted(
    script: Script, monkeypatch: pytest.MonkeyPatch, max_retries: int = 2
) -> tuple[list[float], object]:
    """One update against `script`; the waits between attempts recorded instead of slept."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    async def scenario() -> object:
        http = httpx2.AsyncClient(transport=script.transport, base_url="http://service.test")
        async with AsyncClient(http_client=http, max_retries=max_retries) as client:
            return await client.update(*ARGS, beta=1.0, lr=0.1)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return delays, asyncio.run(scenario())


def test_async_retries_503_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = answer(503, problem(503, "Busy", "saturated"), headers={"Retry-After": "1.5"})
    script = Script([busy, busy, answer(200)])
    delays, _ = run_scripted(script, monkeypatch)
    assert len(script.requests) == 3
    assert delays == [1.5, 1.5]


def test_async_gives_up_after_max_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = answer(503, problem(503, "Busy", "saturated"))
    script = Script([busy, busy])
    with pytest.raises(ServiceUnavailableError):
        run_scripted(script, monkeypatch, max_retries=1)
    assert len(script.requests) == 2
