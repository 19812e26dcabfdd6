"""What the deployment files under deploy/ are checked against: the Dockerfile, the settings.

Rendering uses `kubectl kustomize` (`make test` installs kubectl when it is missing; see the
README's Development section).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import AliasChoices, ByteSize, TypeAdapter
from safetensors.numpy import save

from app.api.body import UPLOAD_BUDGET_BODIES
from app.main import create_app
from app.settings import Settings
from tests.helpers.reference import EXAMPLE
from tests.helpers.tensors import example_tensors

__all__ = [
    "DEPLOY",
    "ROOT",
    "Image",
    "exported_series",
    "image",
    "kubectl",
    "kubernetes_bytes",
    "kustomize",
    "memory_floor",
    "setting_variables",
    "systemd_bytes",
]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MIB = 1024 * 1024
# kubectl's embedded kustomize from this major on reads `labels`, `patches` and directories
# under `resources`, as deploy/k8s does (Debian 12's kubectl 1.20 has kustomize 2).
KUSTOMIZE_MAJOR = 5


def kubectl() -> str:
    """The kubectl on PATH, checked to embed a recent enough kustomize."""
    found = shutil.which("kubectl")
    if found is None:
        msg = "kubectl is not installed: `make test` installs it (apt-get, as root)"
        raise RuntimeError(msg)
    done = subprocess.run(
        [found, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    version = json.loads(done.stdout).get("kustomizeVersion", "v0")
    if int(version.lstrip("v").split(".")[0]) < KUSTOMIZE_MAJOR:
        msg = f"{found} embeds kustomize {version}; deploy/k8s needs v{KUSTOMIZE_MAJOR} or later"
        raise RuntimeError(msg)
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Every object `kubectl kustomize directory` renders; RuntimeError with its stderr."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return [document for document in yaml.safe_load_all(done.stdout) if document]


class Image:
    """The facts of the Dockerfile's final stage that a deployment must agree with."""

    def __init__(self, path: Path) -> None:
        parser = DockerfileParser(str(path))
        final = [
            instruction
            for instruction in parser.structure
            if instruction["startline"] > _last_from(parser.structure)
        ]
        self.user = int(_only(final, "USER"))
        self.exposed = [int(port.split("/")[0]) for port in _only(final, "EXPOSE").split()]
        self.env: dict[str, str] = dict(parser.envs)
        self.command: list[str] = json.loads(_only(final, "CMD"))

    def flag(self, name: str) -> str:
        """The value after `name` in the command."""
        return self.command[self.command.index(name) + 1]


def _last_from(structure: list[dict[str, Any]]) -> int:
    return max(int(i["startline"]) for i in structure if i["instruction"] == "FROM")


def _only(instructions: list[dict[str, Any]], name: str) -> str:
    values = [str(i["value"]) for i in instructions if i["instruction"] == name]
    assert len(values) == 1, f"expected one {name} in the final stage, found {values}"
    return values[0]


def image() -> Image:
    """The facts of the repository's Dockerfile."""
    return Image(ROOT / "Dockerfile")


def setting_variables() -> set[str]:
    """The environment variables `Settings` reads (each field's first alias)."""
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices)
        names.add(str(alias.choices[0]))
    return names


# Measured by `python -m benchmarks.workers`: a worker at rest is about 80 MiB of RSS, the
# bodies it holds at once at most its upload budget, and each compute slot decoding a JSON
# body of zeros (the worst case) about 2.2 x the body limit more; the floor adds headroom
# (docs/scaling.md, "Memory per worker").
_WORKER_BASE = 128 * MIB
_PER_SLOT = 2.5


def memory_floor(max_body_size: str, slots: int) -> int:
    """The memory one worker needs, in bytes, for a body limit and its compute slots."""
    body = TypeAdapter(ByteSize).validate_python(max_body_size)
    return int(_WORKER_BASE + (UPLOAD_BUDGET_BODIES + _PER_SLOT * slots) * body)


def _scaled(text: str, units: dict[str, int]) -> int:
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text.removesuffix(unit)) * factor
    return int(text)


def kubernetes_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity in binary units (`640Mi`) or plain bytes."""
    return _scaled(quantity, {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30})


def systemd_bytes(size: str) -> int:
    """Bytes of a systemd size (`1200M`: systemd's K, M and G are powers of 1024)."""
    return _scaled(size, {"K": 2**10, "M": 2**20, "G": 2**30})


def exported_series() -> dict[str, set[str]]:
    """Each sample name the app exports, with its labels: a scrape after a few updates.

    Updates as JSON and as safetensors succeed, one is refused for its token and one for its
    body, and one block of a sharded update is answered, so that every labelled series has
    appeared at least once.
    """
    token = "t"
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(Settings(api_token=token))) as client:
        for _ in range(3):
            assert client.post("/update", json=EXAMPLE, headers=auth).status_code == 200
        binary = {"content-type": "application/x-safetensors"}
        body = save(example_tensors())
        assert client.post("/update", content=body, headers=auth | binary).status_code == 200
        assert client.post("/update", json=EXAMPLE).status_code == 401
        assert client.post("/update", content=b"{", headers=auth).status_code == 400
        # A sharded update's block: the block series appear too.
        block = {**EXAMPLE, "column_offset": 0}
        assert client.post("/update/grad", json=block, headers=auth).status_code == 200
        text = client.get("/metrics").text
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    return dict(labels)
