"""The real entry point: `python -m app` under uvicorn, probed over loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest

from app.ops.healthcheck import main as healthcheck
from scripts import shutdown
from scripts.live_server import LiveServer, free_port, live_server
from tests.helpers.metrics_text import sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    env = {"RLHF_MAX_BODY_SIZE": "4096", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0.2"}
    with live_server(env, args=()) as running:
        yield running


def test_serves_the_reference_example(server: LiveServer, example: dict[str, Any]) -> None:
    response = httpx2.post(f"{server.base_url}/update", json=example, timeout=10)
    assert response.status_code == 200
    assert response.json()["weights"] == pytest.approx([1.05, 0.95], abs=1e-15)


def test_body_limit_from_the_environment_over_real_http(server: LiveServer) -> None:
    response = httpx2.post(
        f"{server.base_url}/update",
        content=b" " * 5000,
        headers={"content-type": "application/json", "x-request-id": "big-1"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "big-1"
    assert "limit of 4096 bytes" in response.json()["detail"]


def test_container_healthcheck_probes_the_port(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", server.base_url.rsplit(":", 1)[1])
    assert healthcheck() == 0
    monkeypatch.setenv("PORT", str(free_port()))
    assert healthcheck() == 1


def test_shuts_down_with_status_0_on_sigterm_and_logs_only_json(example: dict[str, Any]) -> None:
    # Its own server, access log on: the shared one must stay up for the other tests.
    with live_server({"RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}, args=()) as running:
        assert httpx2.post(f"{running.base_url}/update", json=example).status_code == 200
        assert running.stop(timeout=15) == 0
        lines = running.log_lines()  # raises if any line is not JSON
    messages = [line["message"] for line in lines]
    assert "Application shutdown complete." in messages
    # uvicorn's own loggers, its access log (on unless --no-access-log), and the update line.
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "app.update", "app.lifecycle"} <= loggers
    assert not [line for line in lines if line["level"] in {"ERROR", "CRITICAL"}]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()


def test_no_access_log_leaves_the_update_line(example: dict[str, Any]) -> None:
    with live_server({"RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}) as running:
        httpx2.post(f"{running.base_url}/update", json=example, headers={"x-request-id": "one"})
        assert running.stop(timeout=15) == 0
        lines = running.log_lines()
    assert "uvicorn.access" not in {line["logger"] for line in lines}
    [update] = [line for line in lines if line["logger"] == "app.update"]
    assert (update["request_id"], update["status"], update["B"], update["N"]) == ("one", 200, 2, 2)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_finishes_in_flight_updates_and_exits_0(workers: int) -> None:
    report = shutdown.run(workers=workers, slow_count=3)
    assert report.passed, "\n".join(report.lines())


def test_metrics_add_up_over_two_workers(example: dict[str, Any]) -> None:
    body = json.dumps(example).encode()
    headers = {"content-type": "application/json"}
    env = {"WEB_CONCURRENCY": "2", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0", "RLHF_MAX_IN_FLIGHT": "16"}
    with live_server(env) as running:

        def post(_: int) -> int:
            # A fresh connection each time, so the kernel spreads them over the workers.
            return httpx2.post(
                f"{running.base_url}/update", content=body, headers=headers
            ).status_code

        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            while sent < 400:
                assert set(pool.map(post, range(40))) == {200}
                sent += 40
                pids = {
                    line["process"]
                    for line in running.log_lines()
                    if line["logger"] == "app.update"
                }
                if len(pids) == 2:
                    break
        assert len(pids) == 2, "every update went to one worker"
        scrapes = [httpx2.get(f"{running.base_url}/metrics").text for _ in range(4)]
        assert running.stop(timeout=20) == 0
    for text in scrapes:  # whichever worker answers the scrape, it reports the total
        assert sample(text, "rlhf_update_requests_total", status="200", format="json") == sent
        assert sample(text, "rlhf_update_duration_seconds_count") == sent
