"""Upload and compute are separate: slow senders, stalled bodies, bursts and the queue, over
real sockets against `python -m app`."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest

from scripts.live_server import LiveServer, live_server
from scripts.payloads import random_update
from scripts.slow_senders import SlowSender, status_of, trickle, update_head
from tests.helpers.metrics_text import sample
from tests.helpers.reference import EXAMPLE

pytestmark = pytest.mark.slow

TOKEN = "slow-sender-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}


def _port(server: LiveServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    """A token, two compute slots, the default body timeout."""
    env = {"RLHF_API_TOKEN": TOKEN, "RLHF_MAX_IN_FLIGHT": "2", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}
    with live_server(env) as running:
        yield running


@pytest.fixture(scope="module")
def single_slot() -> Iterator[LiveServer]:
    """One compute slot, no queue, and a body timeout of one second."""
    env = {
        "RLHF_MAX_IN_FLIGHT": "1",
        "RLHF_MAX_QUEUE": "0",
        "RLHF_BODY_TIMEOUT_SECONDS": "1",
        "RLHF_SHUTDOWN_DRAIN_SECONDS": "0",
    }
    with live_server(env) as running:
        yield running


async def _fast_traffic(base_url: str, body: bytes, headers: dict[str, str]) -> list[int]:
    """Twenty updates one after the other, then ten at once; their statuses."""
    async with httpx2.AsyncClient(base_url=base_url, timeout=30) as client:
        statuses = [
            (await client.post("/update", content=body, headers=headers)).status_code
            for _ in range(20)
        ]
        burst = await asyncio.gather(
            *(client.post("/update", content=body, headers=headers) for _ in range(10))
        )
    return statuses + [response.status_code for response in burst]


async def _with_tricklers(
    server: LiveServer, count: int, *, token: str | None, authenticated_share: float
) -> tuple[list[SlowSender], list[int], str]:
    """Run fast traffic while `count` connections trickle a body in; what each side got."""
    stop = asyncio.Event()
    senders = [
        SlowSender(authenticated=index < count * authenticated_share) for index in range(count)
    ]
    tasks = [
        asyncio.create_task(
            trickle(
                "127.0.0.1",
                _port(server),
                sender,
                content_length=10**6,
                token=token if sender.authenticated else None,
                interval=0.5,
                stop=stop,
            )
        )
        for sender in senders
    ]
    try:
        await asyncio.sleep(1.2)  # every trickler has sent its head and a few bytes
        async with httpx2.AsyncClient(base_url=server.base_url, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
        headers = JSON | (AUTH if token else {})
        statuses = await _fast_traffic(server.base_url, orjson.dumps(EXAMPLE), headers)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return senders, statuses, metrics


def _check_tricklers(senders: list[SlowSender], token: str | None) -> None:
    for sender in senders:
        assert sender.error is None, sender.error
        if sender.authenticated or token is None:
            assert sender.sent >= 3  # it was still trickling when the fast traffic ran
            # Its body never finished: no answer, the connection still open.
            assert (sender.status, sender.closed_by_server) == (None, False)
        else:
            # The token is checked before the body is read; an answer given before the
            # body has arrived closes the connection, so the rest is never read.
            assert (sender.status, sender.closed_by_server) == (401, True)


@pytest.mark.parametrize("count", [2, 100])
def test_trickling_connections_leave_fast_clients_served(server: LiveServer, count: int) -> None:
    # Half of them with the token, half without.
    senders, statuses, metrics = asyncio.run(
        _with_tricklers(server, count, token=TOKEN, authenticated_share=0.5)
    )
    assert statuses == [200] * 30
    _check_tricklers(senders, TOKEN)
    # While only the tricklers were connected, none of them held a slot or waited for one.
    assert sample(metrics, "rlhf_update_in_flight") == 0
    assert sample(metrics, "rlhf_update_queued") == 0


def test_one_trickler_with_one_compute_slot_locks_no_one_out(single_slot: LiveServer) -> None:
    senders, statuses, metrics = asyncio.run(
        _with_tricklers(single_slot, 1, token=None, authenticated_share=0)
    )
    assert statuses == [200] * 30
    _check_tricklers(senders, None)
    assert sample(metrics, "rlhf_update_in_flight") == 0


def _raw_exchange(server: LiveServer, request: bytes) -> tuple[bytes, float, bool]:
    """Send `request` on a fresh socket and read until the server closes it.

    Returns what it answered, how long after the request that took, and whether the
    connection was closed by the server (EOF) rather than left open.
    """
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        start = time.perf_counter()
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, time.perf_counter() - start, False
        return answer, time.perf_counter() - start, True


def _headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in head)}


@pytest.mark.parametrize(
    "sent",
    [b"", b'{"weights": [1.0, 2.0], "rewards": [1'],
    ids=["no-body-byte", "part-of-the-body"],
)
def test_a_stalled_body_ends_in_408_and_the_connection_is_closed(
    single_slot: LiveServer, sent: bytes
) -> None:
    answer, elapsed, closed = _raw_exchange(single_slot, update_head(500) + sent)
    assert status_of(answer) == 408
    assert 1.0 <= elapsed < 5  # RLHF_BODY_TIMEOUT_SECONDS = 1
    assert closed
    headers = _headers_of(answer)
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    assert "x-request-id" in headers
    problem = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert problem["type"] == "urn:rlhf-update:problem:body-timeout"
    assert "RLHF_BODY_TIMEOUT_SECONDS" in problem["detail"]
    assert httpx2.get(f"{single_slot.base_url}/healthz").status_code == 200


def test_a_content_length_larger_than_the_body_holds_no_slot(
    single_slot: LiveServer, example: dict[str, Any]
) -> None:
    # A whole, valid body, declared 100 bytes longer than it is: the server waits for the
    # rest without a compute slot, serves others meanwhile, and ends it at the timeout.
    body = orjson.dumps(example)
    with socket.create_connection(("127.0.0.1", _port(single_slot)), timeout=10) as sock:
        start = time.perf_counter()
        sock.sendall(update_head(len(body) + 100) + body)
        for _ in range(5):
            response = httpx2.post(f"{single_slot.base_url}/update", content=body, headers=JSON)
            assert response.status_code == 200
        served_within = time.perf_counter() - start
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        answered_after = time.perf_counter() - start
    assert served_within < 1.0 <= answered_after
    assert status_of(answer) == 408


@pytest.fixture(scope="module")
def burst_server() -> Iterator[LiveServer]:
    """Two compute slots, as on two cores by default, and the default queue."""
    env = {"RLHF_MAX_IN_FLIGHT": "2", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}
    with live_server(env) as running:
        yield running


@pytest.mark.parametrize("size", ["small", "off-the-loop"])
def test_ten_concurrent_updates_from_one_async_client_are_all_served(
    burst_server: LiveServer, size: str
) -> None:
    # "off-the-loop": a JSON body over 16 KiB, computed in a worker thread, where the
    # slots are really contended.
    b, n = (2, 2) if size == "small" else (8, 2000)
    body, expected = random_update(11, b, n, beta=0.1, lr=0.01)

    async def burst() -> list[httpx2.Response]:
        async with httpx2.AsyncClient(base_url=burst_server.base_url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/update", content=body, headers=JSON) for _ in range(10))
            )

    responses = asyncio.run(burst())
    assert [response.status_code for response in responses] == [200] * 10
    assert all(response.json()["weights"] == expected for response in responses)


async def _contend(
    base_url: str, body: bytes, clients: int, seconds: float
) -> list[tuple[int, float, dict[str, Any] | None]]:
    """`clients` loops posting `body` for `seconds`: each answer's status, latency, problem."""
    answers: list[tuple[int, float, dict[str, Any] | None]] = []
    deadline = time.monotonic() + seconds
    limits = httpx2.Limits(max_connections=clients)
    async with httpx2.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def loop() -> None:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = await client.post("/update", content=body, headers=JSON)
                elapsed = time.perf_counter() - start
                problem = response.json() if response.status_code != 200 else None
                if problem is not None:
                    problem["retry_after"] = response.headers.get("retry-after")
                answers.append((response.status_code, elapsed, problem))

        await asyncio.gather(*(loop() for _ in range(clients)))
    return answers


# Computed in a worker thread (over 16 KiB of JSON), long enough that twelve clients
# keep the one slot and the queue full.
_MEDIUM = random_update(5, 64, 1024, beta=0.05, lr=0.01)[0]


def test_past_the_queue_updates_are_refused_at_once() -> None:
    env = {"RLHF_MAX_IN_FLIGHT": "1", "RLHF_MAX_QUEUE": "2", "RLHF_QUEUE_TIMEOUT_SECONDS": "30"}
    with live_server(env) as running:
        answers = asyncio.run(_contend(running.base_url, _MEDIUM, clients=12, seconds=3))
        metrics = httpx2.get(f"{running.base_url}/metrics").text
    statuses = {status for status, _, _ in answers}
    assert statuses == {200, 503}
    refused = [(elapsed, problem) for status, elapsed, problem in answers if status == 503]
    for _, problem in refused:
        assert problem is not None
        assert "RLHF_MAX_QUEUE" in problem["detail"]
        assert problem["retry_after"] == "1"
    served = [elapsed for status, elapsed, _ in answers if status == 200]
    # At once: a refusal waits for nothing, a served update for the slot and its work.
    assert statistics.median(elapsed for elapsed, _ in refused) < statistics.median(served) / 2
    assert sample(metrics, "rlhf_update_queued") == 0


def test_an_update_waiting_past_the_queue_timeout_is_refused() -> None:
    env = {"RLHF_MAX_IN_FLIGHT": "1", "RLHF_MAX_QUEUE": "64", "RLHF_QUEUE_TIMEOUT_SECONDS": "0.02"}
    with live_server(env) as running:
        answers = asyncio.run(_contend(running.base_url, _MEDIUM, clients=16, seconds=3))
    assert {status for status, _, _ in answers} == {200, 503}
    for status, elapsed, problem in answers:
        if status == 503:
            assert problem is not None
            assert "RLHF_QUEUE_TIMEOUT_SECONDS" in problem["detail"]
            assert problem["retry_after"] == "1"
            assert elapsed >= 0.02
