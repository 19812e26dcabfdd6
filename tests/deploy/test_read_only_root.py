"""The service runs as the manifests run it: every file system read-only but /tmp.

deploy/k8s sets `readOnlyRootFilesystem: true` with an emptyDir on /tmp. Here the server
runs in a mount namespace of its own (`unshare`, as root) where every mount is remounted
read-only and /tmp is a fresh tmpfs, with the base manifest's environment; it must serve
an update and shut down cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import pytest

from scripts.live_server import free_port
from tests.helpers.deploy import DEPLOY, ROOT, kustomize
from tests.helpers.reference import EXAMPLE, reference_update


def _can_unshare_mounts() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _can_unshare_mounts(), reason="needs Linux, root and unshare for a mount namespace"
    ),
]

TOKEN = "read-only-root"
# In the namespace: every mount read-only, a fresh tmpfs on /tmp, the token written there
# (in a pod it is a read-only Secret volume), then the server.
# A checkout under /tmp (CI may clone there) would vanish under the fresh tmpfs: it is
# bound first to $HOLD, an empty directory outside /tmp, then back to its own path,
# read-only like every other mount.
SCRIPT = r"""
set -e
case "$ROOT" in /tmp/*) mount --bind /tmp "$HOLD" ;; esac
for mount in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
    mount -o remount,bind,ro "$mount" || { echo "cannot remount $mount read-only" >&2; exit 4; }
done
mount -t tmpfs -o size=64m tmpfs /tmp
case "$ROOT" in /tmp/*)
    mkdir -p "$ROOT"
    mount --bind "$HOLD/${ROOT#/tmp/}" "$ROOT"
    mount -o remount,bind,ro "$ROOT" ;;
esac
mkdir /tmp/secret
printf '%s\n' "$TOKEN" > /tmp/secret/token
if touch "$ROOT/written" 2>/dev/null; then echo "the root is writable" >&2; exit 3; fi
exec "$PYTHON" -m app --no-access-log
"""


def test_the_service_serves_and_stops_with_only_tmp_writable(tmp_path: Path) -> None:
    deployment = next(o for o in kustomize(DEPLOY / "k8s" / "base") if o["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = free_port()
    env = os.environ | {item["name"]: item["value"] for item in container["env"]}
    env |= {
        "RLHF_API_TOKEN_FILE": "/tmp/secret/token",
        "TOKEN": TOKEN,
        "PYTHON": sys.executable,
        "ROOT": str(ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RLHF_SHUTDOWN_DRAIN_SECONDS": "0",  # nothing to drain from
    }
    # Outside /tmp, and removed afterwards: only the namespace ever mounts anything on it.
    hold = Path(tempfile.mkdtemp(prefix="rlhf-read-only-", dir="/var/tmp"))
    env["HOLD"] = str(hold)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.1)
        assert process.poll() is None, log.read_text(encoding="utf-8")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx2.post(f"{url}/update", json=EXAMPLE, headers=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        expected = reference_update(**EXAMPLE).weights
        assert answer.json()["weights"] == pytest.approx(expected, rel=1e-12)
        assert httpx2.post(f"{url}/update", json=EXAMPLE, timeout=10).status_code == 401
        assert "rlhf_update_requests_total" in httpx2.get(f"{url}/metrics", timeout=10).text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0, log.read_text(encoding="utf-8")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        hold.rmdir()
    assert not (ROOT / "written").exists()
