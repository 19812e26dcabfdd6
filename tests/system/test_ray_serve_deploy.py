"""deploy/ray/rayservice.yaml's serveConfigV2, as KubeRay would apply it, on a local Ray.

The embedded Serve config is taken out of the manifest, checked against Serve's own
schema, and deployed with the ``serve deploy`` CLI to a ``ray start --head`` on loopback
(only its HTTP address changed, to a free port on 127.0.0.1); the service it starts is
probed. Teardown ends every process of that Ray and fails if one outlives it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest

from app.core.update import compute_update
from scripts.live_server import free_port
from scripts.ray_cluster import RayHead, ray_cli, ray_head
from tests.helpers.batches import random_batch

pytest.importorskip(
    "ray.serve", reason="the Ray Serve tests need ray[serve]==2.60.0, which `make test` installs"
)
yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.slow

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "rayservice.yaml"


def _serve_config() -> dict[str, Any]:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["kind"] == "RayService"
    config: dict[str, Any] = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    return config


def test_the_embedded_config_is_a_valid_serve_config_of_this_application() -> None:
    from ray.serve.schema import ServeDeploySchema

    from app import ray_serve

    config = ServeDeploySchema.model_validate(_serve_config())
    [application] = config.applications
    module, _, name = application.import_path.partition(":")
    assert module == "rlhf_update_server.ray_serve"
    assert getattr(ray_serve, name) is ray_serve.app
    [deployment] = application.deployments
    assert deployment.name == ray_serve.UpdateService.name
    autoscaling = deployment.autoscaling_config
    assert isinstance(autoscaling, dict)
    assert 1 <= autoscaling["min_replicas"] <= autoscaling["max_replicas"]
    assert autoscaling["target_ongoing_requests"] > 0


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = _serve_config()
    port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    path = tmp_path_factory.mktemp("serve") / "serve.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with ray_head() as head:
        _serve(head, "deploy", str(path))
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_running(head, base_url, timeout=120)
            yield base_url
        finally:
            _serve(head, "shutdown", "--yes")


def _serve(head: RayHead, *arguments: str) -> str:
    done = subprocess.run(
        [ray_cli("serve"), arguments[0], "--address", head.dashboard_url, *arguments[1:]],
        env=head.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _wait_running(head: RayHead, base_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = _serve(head, "status")
        if "status: RUNNING" in status and "DEPLOY_FAILED" not in status:
            try:
                if httpx2.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
        assert "DEPLOY_FAILED" not in status, status
        time.sleep(1)
    pytest.fail(f"the application was not running within {timeout} s:\n{status}")


def test_the_deployed_manifest_serves_the_update(deployed: str) -> None:
    batch = random_batch(seed=34, b=8, n=6)
    answer = httpx2.post(f"{deployed}/update", json=batch, timeout=30)
    assert answer.status_code == 200, answer.text
    arrays = [
        np.asarray(batch[name], dtype=np.float64)
        for name in ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")
    ]
    expected = compute_update(*arrays, beta=batch["beta"], lr=batch["lr"]).weights
    assert np.array_equal(np.array(answer.json()["weights"]), expected)


def test_the_deployed_manifest_takes_its_settings_from_the_config(deployed: str) -> None:
    limits = httpx2.get(f"{deployed}/info", timeout=10).json()["limits"]
    # RLHF_MAX_IN_FLIGHT from the config's runtime_env, not the machine's CPU count.
    env_vars = _serve_config()["applications"][0]["runtime_env"]["env_vars"]
    assert limits["max_in_flight"] == int(env_vars["RLHF_MAX_IN_FLIGHT"]) == 1
