"""`python -m benchmarks.sharded`: a sharded update against one server's, over the protocol.

Every optimizer, clipping off, binding and loose, float64 and float32 weights, cut into 1, 2,
3, 5 and 7 blocks: `rlhf_client.AsyncShardedClient` over three in-process services against
`rlhf_client.AsyncClient` on one, both over safetensors, each from the same optimizer state
(a first step's). A cell says "=" when the weights, every state vector and every stat are
equal bit for bit, else how many weights differ. Prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx2
import numpy as np
from rlhf_client import AsyncClient, AsyncShardedClient, HttpTransport, UpdateResult

from app.core.norms import CHUNK_COLUMNS
from app.main import create_app
from app.settings import Settings

B, N = 3, 7 * CHUNK_COLUMNS + 123
SHARDS = (1, 2, 3, 5, 7)
SERVERS = 3
OPTIMIZERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "sgd": {"type": "sgd"},
    "sgd, weight decay": {"type": "sgd", "weight_decay": 0.1},
    "momentum": {"type": "sgd", "momentum": 0.9, "dampening": 0.1},
    "nesterov": {"type": "sgd", "momentum": 0.9, "nesterov": True},
    "adam, weight decay": {"type": "adam", "weight_decay": 0.05},
    "adamw": {"type": "adamw"},
    "adamw, amsgrad": {"type": "adamw", "amsgrad": True},
}
# Off; binding (the gradient's norm is about 7); not binding.
CLIPS: dict[str, float | None] = {"off": None, "binds": 1.0, "loose": 1e6}
SETTINGS = Settings(max_body_size=256 * 1024 * 1024, max_elements=10**8)


def _arrays(dtype: type[np.floating[Any]]) -> tuple[Any, ...]:
    rng = np.random.default_rng(19)
    policy = rng.standard_normal(B) - 3.0
    return (
        rng.standard_normal(N).astype(dtype),
        rng.standard_normal(B),
        policy,
        policy + 0.1 * rng.standard_normal(B),
        # Entries over many binades, so that any change in the order of a sum shows.
        (rng.standard_normal((B, N)) * 10.0 ** rng.integers(-3, 3, (B, N))).astype(dtype),
    )


def _http(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://app")


def _difference(single: UpdateResult, sharded: UpdateResult) -> str:
    differing = int(np.count_nonzero(single.weights != sharded.weights))
    same_state = (single.optimizer_state is None) == (sharded.optimizer_state is None)
    if same_state and single.optimizer_state is not None:
        assert sharded.optimizer_state is not None
        same_state = set(single.optimizer_state) == set(sharded.optimizer_state) and all(
            np.array_equal(value, sharded.optimizer_state[name])
            for name, value in single.optimizer_state.items()
        )
    if differing == 0 and same_state and single.stats == sharded.stats:
        return "="
    return f"{differing} weights differ" + ("" if same_state else ", state differs")


async def _row(apps: list[Any], dtype: type[np.floating[Any]], options: dict[str, Any]) -> str:
    arrays = _arrays(dtype)
    async with AsyncClient(http_client=_http(apps[0]), transport="safetensors") as single:
        first = await single.update(*arrays, beta=0.1, lr=0.01, **options)
        start = [first.weights, *arrays[1:]]
        expected = await single.update(
            *start, beta=0.1, lr=0.01, optimizer_state=first.optimizer_state, **options
        )
    cells = []
    for shards in SHARDS:
        width = math.ceil(N / shards / CHUNK_COLUMNS) * CHUNK_COLUMNS
        transports = [HttpTransport("http://app", http_client=_http(app)) for app in apps]
        async with AsyncShardedClient(transports=transports, block_columns=width) as client:
            got = await client.update(
                *start, beta=0.1, lr=0.01, optimizer_state=first.optimizer_state, **options
            )
        for transport in transports:
            await transport.aclose()
        cells.append(_difference(expected, got))
    return " | ".join(cells)


async def _table() -> None:
    apps = [create_app(SETTINGS) for _ in range(SERVERS)]
    chunk = f"{CHUNK_COLUMNS:,}-column chunks"
    print(f"B x N = {B} x {N:,}; blocks of whole {chunk}, {SERVERS} servers")
    print()
    print("| optimizer | clipping | weights | " + " | ".join(f"{s} shards" for s in SHARDS) + " |")
    print("|---|---|---|" + "---|" * len(SHARDS))
    for name, optimizer in OPTIMIZERS.items():
        for clip, bound in CLIPS.items():
            for dtype in (np.float64, np.float32):
                options: dict[str, Any] = {"max_grad_norm": bound}
                if optimizer is not None:
                    options["optimizer"] = optimizer
                cells = await _row(apps, dtype, options)
                print(f"| {name} | {clip} | {np.dtype(dtype).name} | {cells} |", flush=True)


def main() -> None:
    began = time.perf_counter()
    asyncio.run(_table())
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
