"""ShardedClient over in-process apps: the single server's answer, bit for bit, and retries."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import httpx2
import numpy as np
import pytest
from rlhf_client import (
    APIConnectionError,
    AsyncClient,
    AsyncShardedClient,
    AuthenticationError,
    BlockAnswer,
    HttpTransport,
    ServiceUnavailableError,
    ShardedClient,
    UnprocessableEntityError,
    UpdateResult,
)
from rlhf_client._norms import norm_of_partials as client_norm
from rlhf_client._sharded import UPDATE_OVERFLOW_TYPE
from rlhf_client._wire import raise_for_status

from app.core.norms import CHUNK_COLUMNS, chunk_partials, norm_of_partials
from app.errors import PROBLEM_TYPE_PREFIX, UpdateOverflowProblem
from app.main import create_app
from app.settings import Settings

N = 7 * CHUNK_COLUMNS + 123
# The transports' own pauses, whatever a test does to asyncio.sleep (the client's waits).
_pause = asyncio.sleep
SETTINGS = Settings(max_body_size=256 * 1024 * 1024, max_elements=10**8)


def _app_client() -> httpx2.AsyncClient:
    transport = httpx2.ASGITransport(app=create_app(SETTINGS))
    return httpx2.AsyncClient(transport=transport, base_url="http://app")


def _transport() -> HttpTransport:
    return HttpTransport("http://app", http_client=_app_client())


def _arrays(dtype: type[np.floating[Any]] = np.float64) -> tuple[Any, ...]:
    rng = np.random.default_rng(5)
    policy = rng.standard_normal(2) - 3
    return (
        rng.standard_normal(N).astype(dtype),
        rng.standard_normal(2),
        policy,
        policy + 0.1 * rng.standard_normal(2),
        (rng.standard_normal((2, N)) * 10.0 ** rng.integers(-3, 3, (2, N))).astype(dtype),
    )


def _assert_identical(single: UpdateResult, sharded: UpdateResult) -> None:
    assert sharded.weights.dtype == single.weights.dtype
    assert np.array_equal(single.weights, sharded.weights)
    assert sharded.stats == single.stats
    if single.optimizer_state is None:
        assert sharded.optimizer_state is None
        return
    assert sharded.optimizer_state is not None
    assert set(sharded.optimizer_state) == set(single.optimizer_state)
    for name, value in single.optimizer_state.items():
        assert np.array_equal(value, sharded.optimizer_state[name]), name


CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "clip-binds-adamw": {"max_grad_norm": 1.0, "optimizer": {"type": "adamw"}},
    "clip-loose-nesterov": {
        "max_grad_norm": 1e6,
        "optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": True},
    },
    "amsgrad-grpo": {
        "optimizer": {"type": "adam", "amsgrad": True, "weight_decay": 0.1},
        "baseline": "mean",
    },
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_sharded_equals_single_for_1_2_3_5_and_7_shards(
    case: str, dtype: type[np.floating[Any]]
) -> None:
    arrays = _arrays(dtype)
    options: dict[str, Any] = CASES[case]

    async def scenario() -> None:
        async with AsyncClient(http_client=_app_client(), transport="safetensors") as single:
            first = await single.update(*arrays, beta=0.1, lr=0.01, **options)
            state = first.optimizer_state
            # A second step from the first one's state: the state's blocks travel too.
            expected = await single.update(
                first.weights, *arrays[1:], beta=0.1, lr=0.01, optimizer_state=state, **options
            )
        for shards in (1, 2, 3, 5, 7):
            width = math.ceil(N / shards / CHUNK_COLUMNS) * CHUNK_COLUMNS
            transports = [_transport() for _ in range(min(shards, 3))]
            async with AsyncShardedClient(transports=transports, block_columns=width) as client:
                got = await client.update(
                    first.weights, *arrays[1:], beta=0.1, lr=0.01, optimizer_state=state, **options
                )
            for transport in transports:
                await transport.aclose()
            _assert_identical(expected, got)
            if "max_grad_norm" in options:
                assert got.stats.clipped is (options["max_grad_norm"] < 10)

    asyncio.run(scenario())


def test_the_blocking_client_reads_the_chunk_from_info_and_cuts_one_block_per_server() -> None:
    arrays = _arrays()
    seen: list[int] = []

    class Recording(HttpTransport):
        async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
            seen.append(id(self))
            return await super().post(path, content, headers)

    transports = [Recording("http://app", http_client=_app_client()) for _ in range(3)]
    with ShardedClient(transports=transports) as client:
        got = client.update(*arrays, beta=0.1, lr=0.01, max_grad_norm=1.0)
    # ceil(N / 3) rounded up to the chunk: 3 chunks per block, 3 blocks, each phase.
    assert len(seen) == 6
    assert [seen.count(id(t)) for t in transports] == [2, 2, 2]

    async def single() -> UpdateResult:
        async with AsyncClient(http_client=_app_client(), transport="safetensors") as one:
            return await one.update(*arrays, beta=0.1, lr=0.01, max_grad_norm=1.0)

    _assert_identical(asyncio.run(single()), got)


class _Flaky:
    """Fails each path's first POSTs (a refused connection, then a 503), then passes on."""

    def __init__(self, inner: HttpTransport, failures: list[str]) -> None:
        self.inner = inner
        self.failures = failures
        self.posts = 0
        self.in_flight = 0
        self.most_in_flight = 0

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
        self.posts += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await _pause(0.001)
            if self.failures:
                failure = self.failures.pop(0)
                if failure == "connect":
                    msg = "refused"
                    raise httpx2.ConnectError(msg)
                return BlockAnswer(503, {"retry-after": "0"}, b'{"status": 503}')
            return await self.inner.post(path, content, headers)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_failed_blocks_are_retried_and_concurrency_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arrays = _arrays()
    flaky = _Flaky(_transport(), ["connect", "503", "connect"])
    monkeypatch.setattr(asyncio, "sleep", _no_wait)

    async def scenario() -> tuple[UpdateResult, UpdateResult]:
        client = AsyncShardedClient(
            transports=[flaky], block_columns=CHUNK_COLUMNS, max_concurrency=2, max_retries=3
        )
        got = await client.update(*arrays, beta=0.1, lr=0.01, optimizer={"type": "adamw"})
        async with AsyncClient(http_client=_app_client(), transport="safetensors") as one:
            return await one.update(*arrays, beta=0.1, lr=0.01, optimizer={"type": "adamw"}), got

    expected, got = asyncio.run(scenario())
    _assert_identical(expected, got)
    assert flaky.posts == 8 + 3
    assert flaky.most_in_flight == 2


async def _no_wait(_: float) -> None:
    return None


def test_a_block_that_stays_down_is_the_clients_usual_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_wait)

    async def scenario() -> None:
        flaky = _Flaky(_transport(), ["connect"] * 10)
        client = AsyncShardedClient(transports=[flaky], block_columns=CHUNK_COLUMNS, max_retries=1)
        with pytest.raises(APIConnectionError, match="after 2 attempts"):
            await client.update(*_arrays(), beta=0.1, lr=0.01)

    asyncio.run(scenario())


class _InfoDown(HttpTransport):
    """A server whose GET /info cannot be reached (`connect`) or answers 503 or 404 first."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("http://app", http_client=_app_client())
        self.failures = failures
        self.reads = 0

    async def info(self) -> dict[str, Any] | None:
        self.reads += 1
        if self.failures:
            failure = self.failures.pop(0)
            if failure == "connect":
                msg = "connection refused"
                raise httpx2.ConnectError(msg)
            status = int(failure)
            request = httpx2.Request("GET", "http://app/info")
            answer = httpx2.Response(status, json={"status": status}, request=request)
            raise_for_status(answer)
        return await super().info()


def test_info_is_read_from_the_next_server_when_one_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    arrays = _arrays()

    async def scenario() -> tuple[UpdateResult, UpdateResult, list[int]]:
        transports = [_InfoDown(["connect"]), _InfoDown(["503"]), _InfoDown([])]
        async with AsyncShardedClient(transports=transports, max_retries=2) as client:
            got = await client.update(*arrays, beta=0.1, lr=0.01, max_grad_norm=1.0)
        async with AsyncClient(http_client=_app_client(), transport="safetensors") as one:
            expected = await one.update(*arrays, beta=0.1, lr=0.01, max_grad_norm=1.0)
        for transport in transports:
            await transport.aclose()
        return expected, got, [t.reads for t in transports]

    expected, got, reads = asyncio.run(scenario())
    _assert_identical(expected, got)
    assert reads == [1, 1, 1]


@pytest.mark.parametrize(
    ("failures", "error"),
    [
        (["connect"] * 3, APIConnectionError),
        (["503"] * 3, ServiceUnavailableError),
        # Not worth another try: the service's own word on /info.
        (["401"], AuthenticationError),
    ],
    ids=["unreachable", "503", "401"],
)
def test_info_that_stays_unreadable_is_the_clients_usual_error(
    monkeypatch: pytest.MonkeyPatch, failures: list[str], error: type[Exception]
) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_wait)

    async def scenario() -> int:
        transport = _InfoDown(list(failures))
        client = AsyncShardedClient(transports=[transport], max_retries=2)
        with pytest.raises(error):
            await client.update(*_arrays(), beta=0.1, lr=0.01)
        await transport.aclose()
        return transport.reads

    assert asyncio.run(scenario()) == len(failures)


def test_a_422_of_a_block_names_the_global_index() -> None:
    weights, rewards, policy, ref, grads = _arrays()
    weights, grads = weights.copy(), grads.copy()
    column = 5 * CHUNK_COLUMNS + 17
    # One new weight beyond float64, which only the server finds: a 422 naming it.
    coefficient = rewards - 0.1 * (policy - ref)
    grads[:, column] = 1e10 * np.sign(coefficient)
    weights[column] = 1.7e308
    args = (weights, rewards, policy, ref, grads)

    async def scenario() -> tuple[Any, Any]:
        async with AsyncClient(http_client=_app_client(), transport="safetensors") as one:
            with pytest.raises(UnprocessableEntityError) as single:
                await one.update(*args, beta=0.1, lr=1e299)
        transports = [_transport(), _transport()]
        async with AsyncShardedClient(
            transports=transports, block_columns=2 * CHUNK_COLUMNS
        ) as client:
            with pytest.raises(UnprocessableEntityError) as sharded:
                await client.update(*args, beta=0.1, lr=1e299)
        for transport in transports:
            await transport.aclose()
        return single.value, sharded.value

    single, sharded = asyncio.run(scenario())
    assert sharded.errors == single.errors
    assert sharded.errors[0]["loc"] == ["new_weights", column]
    assert f"weights[{column}]" in sharded.errors[0]["msg"]


def test_block_columns_must_be_a_whole_number_of_chunks() -> None:
    async def scenario() -> None:
        transport = _transport()
        client = AsyncShardedClient(transports=[transport], block_columns=CHUNK_COLUMNS + 1)
        with pytest.raises(ValueError, match=f"multiple of its chunk_columns, {CHUNK_COLUMNS}"):
            await client.update(*_arrays(), beta=0.1, lr=0.01)
        await transport.aclose()

    asyncio.run(scenario())


def test_without_info_the_client_needs_block_columns() -> None:
    class Bare:
        async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
            raise AssertionError

        async def aclose(self) -> None:
            return None

    async def scenario() -> None:
        client = AsyncShardedClient(transports=[Bare()])
        with pytest.raises(ValueError, match="block_columns is needed"):
            await client.update(*_arrays(), beta=0.1, lr=0.01)

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="exactly one of"):
        ShardedClient()


def test_the_clients_norm_of_partials_is_the_services() -> None:
    rng = np.random.default_rng(9)
    for scale in (1.0, 1e-170, 1e160, 3.9e151):
        values = rng.standard_normal(3 * CHUNK_COLUMNS + 9) * scale
        values[: CHUNK_COLUMNS // 2] *= 1e-200
        parts = [
            chunk_partials(values[i : i + CHUNK_COLUMNS])
            for i in range(0, values.size, CHUNK_COLUMNS)
        ]
        assert client_norm(parts) == norm_of_partials(parts)
    for degenerate in ([[0.0, 0.0]], [[math.inf, 1.0]], [[math.nan, 1.0], [math.inf, 1.0]]):
        rows = np.array(degenerate)
        ours, theirs = client_norm([rows]), norm_of_partials(rows)
        assert ours == theirs or (math.isnan(ours) and math.isnan(theirs))


class _Unreachable:
    """A transport of another kind (a Ray handle's): its own `APIConnectionError` first."""

    def __init__(self, inner: HttpTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.headers: list[dict[str, str]] = []

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
        self.headers.append(dict(headers))
        if self.failures:
            self.failures -= 1
            msg = "could not reach a replica of the deployment"
            raise APIConnectionError(msg)
        return await self.inner.post(path, content, headers)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_transports_own_connection_error_is_retried_and_every_block_carries_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    arrays = _arrays()
    token = "sharded-secret"
    guarded = Settings(max_body_size=SETTINGS.max_body_size, max_elements=10**8, api_token=token)
    inner = HttpTransport(
        "http://app",
        http_client=httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=create_app(guarded)), base_url="http://app"
        ),
        api_key="not-the-token",  # the sharded client's api_key wins for its blocks
    )
    flaky = _Unreachable(inner, failures=2)

    async def scenario() -> tuple[UpdateResult, UpdateResult]:
        client = AsyncShardedClient(
            transports=[flaky], block_columns=2 * CHUNK_COLUMNS, max_retries=2, api_key=token
        )
        got = await client.update(*arrays, beta=0.1, lr=0.01, max_grad_norm=1.0)
        async with AsyncClient(http_client=_app_client(), transport="safetensors") as one:
            return await one.update(*arrays, beta=0.1, lr=0.01, max_grad_norm=1.0), got

    expected, got = asyncio.run(scenario())
    _assert_identical(expected, got)
    assert flaky.failures == 0
    assert {h["Authorization"] for h in flaky.headers} == {f"Bearer {token}"}

    async def gives_up() -> None:
        down = _Unreachable(_transport(), failures=10)
        client = AsyncShardedClient(transports=[down], block_columns=CHUNK_COLUMNS, max_retries=1)
        with pytest.raises(APIConnectionError, match="replica"):
            await client.update(*arrays, beta=0.1, lr=0.01)

    asyncio.run(gives_up())


def test_a_timeout_for_transports_it_did_not_make_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        AsyncShardedClient(transports=[_transport()], timeout=5.0)


@pytest.mark.parametrize("clip", [None, 1.0], ids=["one-call", "two-phases"])
def test_a_whole_norm_that_overflows_is_the_single_servers_422(clip: float | None) -> None:
    # One huge entry in each of two blocks: each block's norm is finite, the whole's is not.
    n = 2 * CHUNK_COLUMNS
    grads = np.zeros((1, n))
    grads[0, [3, CHUNK_COLUMNS + 3]] = 1.5e308
    args = (np.zeros(n), np.ones(1), np.full(1, -1.0), np.full(1, -1.0), grads)
    options: dict[str, Any] = {"max_grad_norm": clip}

    async def scenario() -> tuple[Any, Any]:
        async with AsyncClient(http_client=_app_client(), transport="safetensors") as one:
            with pytest.raises(UnprocessableEntityError) as single:
                await one.update(*args, beta=0.1, lr=1e-300, **options)
        client = AsyncShardedClient(transports=[_transport()], block_columns=CHUNK_COLUMNS)
        with pytest.raises(UnprocessableEntityError) as sharded:
            await client.update(*args, beta=0.1, lr=1e-300, **options)
        return single.value, sharded.value

    single, sharded = asyncio.run(scenario())
    assert sharded.type == single.type == UPDATE_OVERFLOW_TYPE
    assert PROBLEM_TYPE_PREFIX + UpdateOverflowProblem.slug == UPDATE_OVERFLOW_TYPE
    assert sharded.title == single.title == UpdateOverflowProblem.title
    assert [e["loc"] for e in sharded.errors] == [e["loc"] for e in single.errors]
    assert [e["msg"] for e in sharded.errors] == [e["msg"] for e in single.errors]


class _Late(HttpTransport):
    """An HTTP transport whose answers come `delay` seconds late."""

    def __init__(self, delay: float) -> None:
        super().__init__("http://app", http_client=_app_client())
        self.delay = delay

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
        answer = await super().post(path, content, headers)
        await _pause(self.delay)
        return answer


def test_the_error_of_the_first_failing_block_in_column_order_is_raised() -> None:
    weights, rewards, policy, ref, grads = _arrays()
    weights, grads = weights.copy(), grads.copy()
    # A weight beyond float64 in block 0 and in block 1; block 0's answer comes last.
    columns = [17, CHUNK_COLUMNS + 17]
    coefficient = rewards - 0.1 * (policy - ref)
    for column in columns:
        grads[:, column] = 1e10 * np.sign(coefficient)
        weights[column] = 1.7e308

    async def scenario() -> UnprocessableEntityError:
        transports = [_Late(0.3), _Late(0.0)]
        client = AsyncShardedClient(transports=transports, block_columns=CHUNK_COLUMNS)
        with pytest.raises(UnprocessableEntityError) as raised:
            await client.update(weights, rewards, policy, ref, grads, beta=0.1, lr=1e299)
        for transport in transports:
            await transport.aclose()
        return raised.value

    error = asyncio.run(scenario())
    assert error.errors[0]["loc"] == ["new_weights", columns[0]]


@pytest.mark.parametrize(
    ("state", "match"),
    [
        pytest.param({"step": -1}, "expected an integer >= 0", id="negative-step"),
        pytest.param({"step": 1, "exp_avg": np.zeros(3)}, r"expected \(", id="short-vector"),
        pytest.param({"step": 1, "exp_avg": ["x"] * N}, "exp_avg", id="not-numbers"),
    ],
)
def test_an_optimizer_state_is_checked_as_the_client_checks_it(
    state: dict[str, Any], match: str
) -> None:
    class Unused(HttpTransport):
        async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
            msg = "a refused state must not be sent"
            raise AssertionError(msg)

    async def scenario() -> None:
        transport = Unused("http://app", http_client=_app_client())
        client = AsyncShardedClient(transports=[transport], block_columns=CHUNK_COLUMNS)
        with pytest.raises(ValueError, match=match):
            await client.update(
                *_arrays(), beta=0.1, lr=0.01, optimizer={"type": "adam"}, optimizer_state=state
            )
        await transport.aclose()

    asyncio.run(scenario())
