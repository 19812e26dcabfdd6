"""Crafted bodies against a real server: the answer's size, the time and memory they cost,
and /healthz answering all the while."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import numpy as np
import pytest
from safetensors.numpy import save

from scripts.live_server import LiveServer, live_server
from tests.helpers.reference import EXAMPLE
from tests.helpers.tensors import BINARY, example_tensors
from tests.helpers.timing import healthz_probed

pytestmark = pytest.mark.slow

FEW_KIB = 4096


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    # The default body limit (64 MiB): the bodies here are tens of megabytes.
    with live_server({"RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}) as running:
        yield running


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    msg = f"no {field} for process {pid}"
    raise RuntimeError(msg)


def _measured(
    server: LiveServer, send: Callable[[], httpx2.Response]
) -> tuple[httpx2.Response, float, int]:
    """The answer, the seconds it took, and how far the server's peak RSS rose above its RSS."""
    pid = server.process.pid
    # Writing 5 resets the peak ("high water mark") to the current RSS (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _status_kib(pid, "VmRSS")
    start = time.perf_counter()
    response = send()
    seconds = time.perf_counter() - start
    return response, seconds, (_status_kib(pid, "VmHWM") - before) * 1024


def _json(fields: dict[str, object]) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("build", "factor"),
    [
        # The body itself is held once as it arrives; nothing else of it is built.
        pytest.param(
            lambda: _json(EXAMPLE | {f"k{i}": 1 for i in range(1_000_000)}), 3, id="1M-keys"
        ),
        # The rows are decoded once, as tuples of floats (12 to 13 times the body for rows
        # of one or two numbers, the worst shape), and worded from that; it was 50 times.
        pytest.param(
            lambda: _json(
                EXAMPLE
                | {"log_prob_grads": [[0.5, -0.5] if i % 2 else [0.5] for i in range(2_000_000)]}
            ),
            16,
            id="2M-ragged-rows",
        ),
    ],
)
def test_a_large_bad_json_body_costs_little_and_gets_a_small_answer(
    server: LiveServer, build: Callable[[], bytes], factor: int
) -> None:
    body = build()
    response, seconds, growth = _measured(
        server,
        lambda: httpx2.post(
            f"{server.base_url}/update",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        ),
    )
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < FEW_KIB
    assert seconds < 3.0  # 139 s and 9 s before; see the report of the issue for figures
    assert growth < factor * len(body), (growth, len(body))


def _header_only(header: dict[str, object]) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text


def _large_update() -> bytes:
    rng = np.random.default_rng(0)
    b, n = 64, 65_536
    tensors = example_tensors() | {
        "weights": rng.standard_normal(n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": rng.standard_normal(b),
        "ref_log_probs": rng.standard_normal(b),
        "log_prob_grads": rng.standard_normal((b, n)),
    }
    return save(tensors)


def _float32_shapes_that_disagree() -> bytes:
    # Small gradients, 8 M float32 rewards: all of it is converted before shapes compare.
    return save(example_tensors() | {"rewards": np.ones(8_000_000, np.float32)})


@pytest.mark.parametrize(
    ("build", "status"),
    [
        pytest.param(
            lambda: _header_only(
                {
                    f"t{i}": {"dtype": "F64", "shape": [0], "data_offsets": [0, 0]}
                    for i in range(300_000)
                }
            ),
            400,
            id="300k-tensor-names",
        ),
        pytest.param(
            lambda: _header_only({"__metadata__": {f"k{i}": "v" for i in range(400_000)}}),
            400,
            id="400k-metadata-keys",
        ),
        pytest.param(_large_update, 200, id="large-update"),
        pytest.param(_float32_shapes_that_disagree, 422, id="float32-shapes"),
    ],
)
def test_healthz_answers_within_100_ms_during_a_safetensors_request(
    server: LiveServer, build: Callable[[], bytes], status: int
) -> None:
    body = build()
    # Work on the event loop would hold every probe of every attempt back. A machine that
    # stalls the server's process now and then (another job, a CPU quota's period) holds
    # one probe back in one attempt: the best of three attempts is the server's.
    worst = []
    for _ in range(3):
        with healthz_probed(server.base_url) as latencies:
            time.sleep(0.05)
            response = httpx2.post(
                f"{server.base_url}/update", content=body, headers=BINARY, timeout=60
            )
            time.sleep(0.05)
        assert response.status_code == status, response.text[:300]
        assert len(latencies) > 5
        worst.append(max(latencies))
        if worst[-1] < 0.1:
            break
    assert min(worst) < 0.1, f"/healthz took {[round(s * 1e3) for s in worst]} ms"
