"""The client is usable without the service's stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The service's stack (Ray Serve's too), and the service itself under either of its names.
SERVICE_MODULES = (
    "fastapi",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "starlette",
    "app",
    "rlhf_update_server",
    "ray",
)

pytestmark = pytest.mark.slow


def test_client_imports_without_the_service_stack() -> None:
    code = (
        "import json, sys\n"
        "import rlhf_client, rlhf_client.cli, rlhf_client.demo.run\n"
        f"print(json.dumps(sorted(m for m in {SERVICE_MODULES!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []
