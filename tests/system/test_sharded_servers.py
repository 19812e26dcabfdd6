"""A sharded update over three real servers equals one server's answer, bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np
import pytest
from rlhf_client import Client, ShardedClient, UpdateResult

from app.core.norms import CHUNK_COLUMNS
from scripts.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

N = 7 * CHUNK_COLUMNS + 123
ENV = {"RLHF_MAX_BODY_SIZE": str(64 * 1024 * 1024), "RLHF_API_TOKEN": "shard-token"}


@pytest.fixture(scope="module")
def servers() -> Iterator[list[LiveServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(live_server(ENV)) for _ in range(3)]


def _assert_identical(single: UpdateResult, sharded: UpdateResult) -> None:
    assert np.array_equal(single.weights, sharded.weights)
    assert single.weights.dtype == sharded.weights.dtype
    assert single.stats == sharded.stats
    assert (single.optimizer_state is None) == (sharded.optimizer_state is None)
    for name, value in (single.optimizer_state or {}).items():
        assert np.array_equal(value, (sharded.optimizer_state or {})[name]), name


@pytest.mark.parametrize(
    "options",
    [{}, {"max_grad_norm": 0.5, "optimizer": {"type": "adamw"}, "baseline": "mean"}],
    ids=["one-call", "two-phase"],
)
def test_three_servers_answer_as_one(servers: list[LiveServer], options: dict[str, Any]) -> None:
    rng = np.random.default_rng(33)
    policy = rng.standard_normal(3) - 2
    arrays = (
        rng.standard_normal(N).astype(np.float32),
        rng.standard_normal(3),
        policy,
        policy + 0.05 * rng.standard_normal(3),
        rng.standard_normal((3, N)).astype(np.float32),
    )
    urls = [server.base_url for server in servers]
    with Client(urls[0], api_key="shard-token", transport="safetensors") as one:
        single = one.update(*arrays, beta=0.1, lr=0.01, **options)
    # Five blocks of two chunks over three servers: two of them take two blocks.
    with ShardedClient(urls, block_columns=2 * CHUNK_COLUMNS, api_key="shard-token") as client:
        sharded = client.update(*arrays, beta=0.1, lr=0.01, **options)
    _assert_identical(single, sharded)
    # Each server logged its blocks, the two phases under their own paths.
    for server in servers:
        paths = [line.get("path", "/update") for line in server.log_lines() if "N" in line]
        assert paths, server.base_url
    logged = {line.get("path") for server in servers for line in server.log_lines()}
    assert {"/update/grad", "/update/apply"} <= logged or not options
