"""The real entry point: `python -m app` under uvicorn, probed over loopback HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from app.healthcheck import main as healthcheck


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = os.environ | {"HOST": "127.0.0.1", "PORT": str(port), "RLHF_MAX_BODY_SIZE": "4096"}
    process = subprocess.Popen([sys.executable, "-m", "app"], env=env, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("python -m app did not answer /healthz within 30 s")
    yield base_url, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serves_the_reference_example(
    server: tuple[str, subprocess.Popen[bytes]], example: dict[str, Any]
) -> None:
    base_url, _ = server
    response = httpx2.post(f"{base_url}/update", json=example, timeout=10)
    assert response.status_code == 200
    assert response.json()["weights"] == pytest.approx([1.05, 0.95], abs=1e-15)


def test_body_limit_from_the_environment_over_real_http(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base_url, _ = server
    response = httpx2.post(
        f"{base_url}/update", content=b" " * 5000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert "limit of 4096 bytes" in response.json()["detail"]


def test_container_healthcheck_probes_the_port(
    server: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, _ = server
    monkeypatch.setenv("PORT", base_url.rsplit(":", 1)[1])
    assert healthcheck() == 0
    monkeypatch.setenv("PORT", str(_free_port()))
    assert healthcheck() == 1


def test_shuts_down_gracefully_on_sigterm(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, process = server
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    # uvicorn finishes its shutdown, then re-raises the signal it caught.
    assert process.returncode == -signal.SIGTERM, stderr.decode()
    assert b"Application shutdown complete" in stderr
    assert b"Traceback" not in stderr
