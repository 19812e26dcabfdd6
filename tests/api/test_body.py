"""Reading the request body: once, into one buffer, within a budget and a time limit."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
import orjson
import pytest
from starlette.requests import Request

from app.api.body import UploadBudget, read_body
from app.errors import BodyTimeoutError, UploadBudgetError
from app.main import create_app
from app.settings import Settings
from tests.helpers.asgi import body_chunks, raw_post
from tests.helpers.problems import assert_problem

MiB = 1024 * 1024


def _request(chunks: Sequence[bytes | bytearray], content_length: int | None) -> Request:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    messages = iter(body_chunks(chunks))

    async def receive() -> dict[str, Any]:
        return next(messages)

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def _read(chunks: Sequence[bytes | bytearray], content_length: int | None) -> bytearray:
    budget = UploadBudget(10 * MiB)
    body = asyncio.run(read_body(_request(chunks, content_length), budget, 10.0))
    assert budget.held == len(body)  # counted until the caller gives it back
    return body


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_arrives_whole(declared: bool) -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    body = b"".join(chunks)
    result = _read(chunks, len(body) if declared else None)
    assert isinstance(result, bytearray)
    assert result == body


def test_a_first_chunk_in_a_bytearray_is_the_body_itself_and_later_ones_are_appended() -> None:
    first = bytearray(b"abc")
    whole = _read([first], 3)
    assert whole is first
    body = _read([first, b"de", bytearray(b"fg")], None)
    assert body is first
    assert body == b"abcdefg"
    assert _read([b"ab", bytearray(b"cd")], 4) == b"abcd"


def test_fewer_bytes_than_declared_keeps_what_arrived() -> None:
    assert _read([b"abc", b"de"], 100) == b"abcde"


def test_more_bytes_than_declared_are_kept() -> None:
    assert _read([b"abc", b"defgh"], 4) == b"abcdefgh"


def test_empty_body() -> None:
    assert _read([b""], 0) == b""
    assert _read([b""], None) == b""


def test_the_body_is_held_once_not_chunks_and_a_join() -> None:
    # 16 MiB in 64 KiB chunks, as uvicorn delivers them: appending to one buffer peaks at
    # the body's size plus bytearray's headroom (an eighth); keeping the chunks and joining
    # them would peak at twice the body.
    chunks = [bytes([i % 256]) * (64 * 1024) for i in range(256)]
    size = 256 * 64 * 1024

    async def read_traced() -> tuple[bytearray, int]:
        # Traced inside the loop: asyncio.run's own start and teardown are not the reader's.
        tracemalloc.start()
        try:
            body = await read_body(_request(chunks, size), UploadBudget(size), 10.0)
            return body, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    body, peak = asyncio.run(read_traced())
    assert len(body) == size
    assert body[-1] == 255
    assert size <= peak <= size * 9 // 8 + MiB


def _stalling_request(chunks: Sequence[bytes], content_length: int) -> Request:
    """A request whose client sends `chunks`, then nothing more, and stays connected."""
    messages = iter(body_chunks([*chunks, b""])[:-1])

    async def receive() -> dict[str, Any]:
        message = next(messages, None)
        while message is None:
            await asyncio.Event().wait()  # never set: no more bytes, no hang-up
        return message

    headers = [(b"content-length", str(content_length).encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def test_a_body_that_stops_arriving_times_out_and_gives_its_bytes_back() -> None:
    budget = UploadBudget(MiB)

    async def read() -> float:
        start = time.perf_counter()
        with pytest.raises(BodyTimeoutError, match=r"for 0.05 s \(RLHF_BODY_TIMEOUT_SECONDS\)"):
            await read_body(_stalling_request([b"abc", b"de"], 1000), budget, 0.05)
        return time.perf_counter() - start

    waited = asyncio.run(read())
    assert 0.05 <= waited < 1
    assert budget.held == 0


def test_the_timeout_is_per_chunk_not_for_the_whole_body() -> None:
    # Eight chunks 0.03 s apart take longer than the 0.1 s timeout in all, none alone does.
    async def receive_slowly() -> dict[str, Any]:
        await asyncio.sleep(0.03)
        return next(messages)

    messages = iter(body_chunks([b"x"] * 8))
    request = Request({"type": "http", "method": "POST", "headers": []}, receive_slowly)
    assert asyncio.run(read_body(request, UploadBudget(MiB), 0.1)) == b"x" * 8


def test_the_budget_counts_bytes_received_not_declared() -> None:
    budget = UploadBudget(100)

    async def read() -> None:
        # Declares far more than the budget, sends less than it: held as it arrives.
        stalled = asyncio.create_task(
            read_body(_stalling_request([b"a" * 60], 10**12), budget, 0.2)
        )
        await asyncio.sleep(0.05)
        assert budget.held == 60
        with pytest.raises(BodyTimeoutError):
            await stalled
        assert budget.held == 0
        budget.take(50)  # another body holds half the budget
        with pytest.raises(
            UploadBudgetError, match=r"budget of 100 bytes \(4 x RLHF_MAX_BODY_SIZE\)"
        ):
            await read_body(_stalling_request([b"a" * 30, b"b" * 30], 60), budget, 10.0)
        assert budget.held == 50  # the refused body's first 30 bytes were given back

    asyncio.run(read())


def test_a_refused_chunk_is_not_counted() -> None:
    budget = UploadBudget(10)
    budget.take(8)
    with pytest.raises(UploadBudgetError):
        budget.take(3)
    assert budget.held == 8
    budget.take(2)
    budget.give_back(10)
    assert budget.held == 0


# Through the service: a slow body holds no compute slot, a stalled one ends in 408.


def test_a_stalled_body_is_answered_408_and_the_connection_closed() -> None:
    app = create_app(Settings(body_timeout_seconds=0.05))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
    first = {"type": "http.request", "body": b'{"weights": [1.0,', "more_body": True}
    exchange = raw_post(app, [*headers, (b"x-request-id", b"stall-1")], [first], then_stall=True)
    assert exchange.status == 408
    answer_headers = dict(exchange.sent[0]["headers"])
    assert answer_headers[b"connection"] == b"close"
    assert answer_headers[b"content-type"] == b"application/problem+json"
    assert answer_headers[b"x-request-id"] == b"stall-1"
    problem = orjson.loads(b"".join(m.get("body", b"") for m in exchange.sent[1:]))
    assert problem["type"] == "urn:rlhf-update:problem:body-timeout"
    assert problem["status"] == 408
    assert "RLHF_BODY_TIMEOUT_SECONDS" in problem["detail"]
    assert (app.state.gate.in_flight, app.state.uploads.held) == (0, 0)


async def _held_body(parts: Sequence[bytes], release: asyncio.Event) -> AsyncIterator[bytes]:
    """A request body whose last part is sent only once `release` is set."""
    for part in parts[:-1]:
        yield part
    await release.wait()
    yield parts[-1]


def test_a_slow_body_holds_no_compute_slot(example: dict[str, Any]) -> None:
    app = create_app(Settings(max_in_flight=1, max_queue=0))
    body = orjson.dumps(example)

    async def scenario() -> None:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            release = asyncio.Event()
            slow = asyncio.create_task(
                client.post("/update", content=_held_body([body[:10], body[10:]], release))
            )
            while app.state.uploads.held < 10:
                await asyncio.sleep(0.01)
            assert app.state.gate.in_flight == 0
            for _ in range(5):
                assert (await client.post("/update", json=example)).status_code == 200
            assert not slow.done()
            release.set()
            assert (await slow).status_code == 200
        assert (app.state.gate.in_flight, app.state.uploads.held) == (0, 0)

    asyncio.run(scenario())


def test_past_the_upload_budget_a_body_is_refused_not_buffered(example: dict[str, Any]) -> None:
    # Four bodies of the largest size fill the budget; a fifth's first byte is refused.
    size = 200
    app = create_app(Settings(max_body_size=size))
    body = orjson.dumps(example).ljust(size)
    headers = {"content-type": "application/json"}

    async def scenario() -> None:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            release = asyncio.Event()
            holders = [
                asyncio.create_task(
                    client.post(
                        "/update", content=_held_body([body, b""], release), headers=headers
                    )
                )
                for _ in range(4)
            ]
            while app.state.uploads.held < 4 * size:
                await asyncio.sleep(0.01)
            refused = await client.post(
                "/update", content=_held_body([b"{", b""], release), headers=headers
            )
            problem = assert_problem(refused, 503, f"budget of {4 * size} bytes")
            assert problem["type"] == "urn:rlhf-update:problem:saturated"
            assert "RLHF_MAX_BODY_SIZE" in problem["detail"]
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["connection"] == "close"
            release.set()
            assert [(await task).status_code for task in holders] == [200] * 4
            assert app.state.uploads.held == 0
            assert (await client.post("/update", content=body, headers=headers)).status_code == 200

    asyncio.run(scenario())
