"""The service on Ray Serve: two replicas on loopback, over HTTP and through a handle.

One local Ray for the module (2 CPUs, a small object store, no dashboard, usage stats
off, token auth disabled as for a loopback test cluster only); its teardown fails when a
Ray process outlives it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from rlhf_client import HandleTransport

from app.core.update import compute_update
from app.main import create_app
from app.settings import Settings
from scripts.live_server import free_port
from scripts.ray_cluster import local_ray
from tests.helpers.batches import random_batch
from tests.helpers.reference import reference_update
from tests.helpers.tensors import BINARY_BOTH_WAYS, as_safetensors

ray = pytest.importorskip(
    "ray", reason="the Ray Serve tests need ray[serve]==2.60.0, which `make test` installs"
)
serve = pytest.importorskip("ray.serve")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

pytestmark = pytest.mark.slow

APP_NAME = "rlhf-update"
DEPLOYMENT = "UpdateService"
REPLICAS = 2


@dataclass(frozen=True)
class ServeApp:
    base_url: str


@pytest.fixture(scope="module")
def served() -> Iterator[ServeApp]:
    from rlhf_update_server.ray_serve import UpdateService

    with pytest.MonkeyPatch.context() as patch:
        # Replicas inherit this environment: the service's defaults, whatever the shell has.
        for name in [name for name in os.environ if name.startswith("RLHF_")]:
            patch.delenv(name)
        with local_ray():
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            # Half a CPU each: a replica Serve restarts fits beside the other.
            deployment = UpdateService.options(
                num_replicas=REPLICAS, ray_actor_options={"num_cpus": 0.5}
            )
            serve.run(deployment.bind(), name=APP_NAME, route_prefix="/")
            yield ServeApp(f"http://127.0.0.1:{port}")


def _local_answer(path: str, content: bytes, headers: dict[str, str]) -> httpx2.Response:
    """The same POST to the service in this process, built from the same defaults."""
    with TestClient(create_app(Settings())) as client:
        answer = client.post(path, content=content, headers=headers)
    return httpx2.Response(answer.status_code, headers=answer.headers, content=answer.content)


def _local_update(batch: dict[str, Any]) -> np.ndarray:
    arrays = [np.asarray(batch[name], dtype=np.float64) for name in _ARRAYS]
    return compute_update(*arrays, beta=batch["beta"], lr=batch["lr"]).weights


_ARRAYS = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


def _running_replicas() -> int:
    status = serve.status().applications[APP_NAME].deployments[DEPLOYMENT]
    return int(status.replica_states.get("RUNNING", 0))


def test_two_replicas_run_and_the_lifespan_ran_in_each(served: ServeApp) -> None:
    assert _running_replicas() == REPLICAS
    # /readyz is 200 only once the app's lifespan has started: Serve ran it.
    with httpx2.Client(base_url=served.base_url, timeout=10) as client:
        for _ in range(6):
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "rlhf_update_requests_total" in metrics.text


def test_an_http_answer_is_the_local_update_bit_for_bit(served: ServeApp) -> None:
    batch = random_batch(seed=21, b=16, n=9)
    body = json.dumps(batch).encode()
    headers = {"content-type": "application/json", "x-request-id": "ray-1"}
    answer = httpx2.post(f"{served.base_url}/update", content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    # Once: Serve's proxy stamps the id itself, and the app's copy is not repeated.
    assert answer.headers.get_list("x-request-id") == ["ray-1"]
    weights = np.array(answer.json()["weights"])
    assert np.array_equal(weights, _local_update(batch))
    # ... within rounding of an exact reference, so the equality above is of right answers.
    exact = reference_update(
        batch["weights"],
        batch["rewards"],
        batch["policy_log_probs"],
        batch["ref_log_probs"],
        batch["log_prob_grads"],
        batch["beta"],
        batch["lr"],
    )
    assert weights == pytest.approx(exact.weights, rel=1e-12, abs=1e-15)
    # The whole body, stats included, is the service's own answer in this process.
    assert answer.content == _local_answer("/update", body, headers).content


def test_a_request_id_the_app_refuses_comes_back_beside_the_apps_own(served: ServeApp) -> None:
    # Serve's proxy echoes the client's id as it came; the app answers with a fresh one.
    answer = httpx2.get(f"{served.base_url}/readyz", headers={"x-request-id": "not an id"})
    ids = answer.headers.get_list("x-request-id")
    assert len(ids) == 2
    assert "not an id" in ids
    [fresh] = [value for value in ids if value != "not an id"]
    assert len(fresh) == 32
    assert int(fresh, 16) >= 0


def test_a_bad_body_gets_the_same_problem_as_over_plain_http(served: ServeApp) -> None:
    batch = random_batch(seed=3)
    batch["rewards"] = batch["rewards"][:-1]
    body = json.dumps(batch).encode()
    headers = {"content-type": "application/json", "x-request-id": "bad-1"}
    answer = httpx2.post(f"{served.base_url}/update", content=body, headers=headers, timeout=30)
    local = _local_answer("/update", body, headers)
    assert answer.status_code == local.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == local.json()


def test_the_handle_transport_answers_what_http_answers(served: ServeApp) -> None:
    batch = random_batch(seed=8, b=12, n=7)
    tensors, metadata = as_safetensors(batch)
    body = safetensors_numpy.save(tensors, metadata=metadata or None)
    headers = {**BINARY_BOTH_WAYS, "x-request-id": "handle-1"}
    transport = HandleTransport(serve.get_deployment_handle(DEPLOYMENT, APP_NAME))

    async def post() -> Any:
        try:
            return await transport.post("/update", body, headers)
        finally:
            await transport.aclose()

    answer = asyncio.run(post())
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-safetensors"
    assert answer.headers["x-request-id"] == "handle-1"
    assert np.array_equal(safetensors_numpy.load(answer.content)["weights"], _local_update(batch))
    over_http = httpx2.post(f"{served.base_url}/update", content=body, headers=headers)
    assert answer.content == over_http.content == _local_answer("/update", body, headers).content


@pytest.mark.parametrize(
    ("path", "content", "content_type", "status"),
    [
        pytest.param("/update", b'{"weights": [1.0]', "application/json", 400, id="malformed"),
        pytest.param("/update", b"{}", "text/plain", 415, id="media-type"),
        pytest.param("/update", b'{"weights": []}', "application/json", 422, id="invalid"),
        pytest.param("/nowhere", b"{}", "application/json", 404, id="no-route"),
    ],
)
def test_the_handle_transport_carries_refusals_as_http_does(
    served: ServeApp, path: str, content: bytes, content_type: str, status: int
) -> None:
    transport = HandleTransport(serve.get_deployment_handle(DEPLOYMENT, APP_NAME))
    headers = {"content-type": content_type, "x-request-id": f"refused-{status}"}
    answer = asyncio.run(transport.post(path, content, headers))
    over_http = httpx2.post(f"{served.base_url}{path}", content=content, headers=headers)
    local = _local_answer(path, content, headers)
    assert answer.status == over_http.status_code == local.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert json.loads(answer.content) == over_http.json() == local.json()


def test_a_path_that_is_not_the_services_is_refused_by_the_method(served: ServeApp) -> None:
    transport = HandleTransport(serve.get_deployment_handle(DEPLOYMENT, APP_NAME))
    # Raised in post_block itself: neither an answer nor taken for a network failure.
    with pytest.raises(ValueError, match="must be a path of the service"):
        asyncio.run(transport.post("http://elsewhere/update", b"{}", {}))


def test_a_killed_replica_costs_at_most_one_request_and_is_back_within_30_s(
    served: ServeApp,
) -> None:
    body = json.dumps(random_batch(seed=5)).encode()
    headers = {"content-type": "application/json"}
    replicas = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT}#")
    ]
    assert len(replicas) == REPLICAS

    def traffic() -> list[int]:
        statuses = []
        with httpx2.Client(base_url=served.base_url, timeout=30) as client:
            for _ in range(50):
                try:
                    statuses.append(
                        client.post("/update", content=body, headers=headers).status_code
                    )
                except httpx2.TransportError:
                    statuses.append(0)
                time.sleep(0.2)
        return statuses

    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(traffic)
        time.sleep(1.0)  # some requests in before the kill
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
        recovered = None
        while time.monotonic() - killed_at < 30:
            # Back: a replica that was not there before, and as many running as asked for.
            names = {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)}
            new = {name for name in names if name.startswith(replicas[0].rsplit("#", 1)[0])}
            if new - set(replicas) and _running_replicas() == REPLICAS:
                recovered = time.monotonic() - killed_at
                break
            time.sleep(0.25)
        statuses = sent.result(timeout=60)
    failures = sum(status != 200 for status in statuses)
    print(f"replica kill: {failures} of {len(statuses)} failed, recovered in {recovered} s")
    assert failures <= 1, statuses
    assert recovered is not None, "Serve did not bring the replica back within 30 s"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="one-call-blocks"),
        pytest.param(
            {"max_grad_norm": 0.5, "optimizer": {"type": "adamw"}}, id="clipped-adamw-two-phases"
        ),
    ],
)
def test_a_sharded_update_through_the_handle_is_the_single_answer_bit_for_bit(
    served: ServeApp, options: dict[str, Any]
) -> None:
    from rlhf_client import AsyncClient, AsyncShardedClient

    from app.core.norms import CHUNK_COLUMNS

    rng = np.random.default_rng(21)
    n = 3 * CHUNK_COLUMNS + 5
    policy = rng.standard_normal(2) - 2
    arrays = (
        rng.standard_normal(n),
        rng.standard_normal(2),
        policy,
        policy + 0.1 * rng.standard_normal(2),
        rng.standard_normal((2, n)),
    )

    async def scenario() -> tuple[Any, Any]:
        local = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=create_app(Settings())), base_url="http://app"
        )
        async with AsyncClient(http_client=local, transport="safetensors") as single:
            expected = await single.update(*arrays, beta=0.1, lr=0.01, **options)
        # One transport over the handle: Serve picks a replica for each of the four blocks.
        transport = HandleTransport(serve.get_deployment_handle(DEPLOYMENT, APP_NAME))
        try:
            async with AsyncShardedClient(
                transports=[transport], block_columns=CHUNK_COLUMNS, max_concurrency=4
            ) as sharded:
                got = await sharded.update(*arrays, beta=0.1, lr=0.01, **options)
        finally:
            await transport.aclose()
        return expected, got

    expected, got = asyncio.run(scenario())
    assert np.array_equal(got.weights, expected.weights)
    assert got.stats == expected.stats
    if "max_grad_norm" in options:
        assert got.stats.clipped
        assert set(got.optimizer_state) == set(expected.optimizer_state)
        for name, value in expected.optimizer_state.items():
            assert np.array_equal(value, got.optimizer_state[name]), name
