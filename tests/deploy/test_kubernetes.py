"""deploy/k8s: the kustomize base and the production overlay, rendered and checked offline.

Every rendered object is validated in strict mode (unknown keys are errors) against the
schemas of one pinned Kubernetes version, and agrees with the app, its settings and the
Dockerfile: the variables it sets, its probes, its port, its user, its shutdown, its memory.
"""

from __future__ import annotations

import base64
import shutil
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings, load_settings
from tests.helpers.deploy import (
    DEPLOY,
    ROOT,
    exported_series,
    image,
    kubernetes_bytes,
    kustomize,
    memory_floor,
    setting_variables,
)

# The oldest Kubernetes the manifests promise to be valid for (its schemas ship with
# kubernetes-validate).
KUBERNETES_VERSION = "1.34"
TOKEN = "a-token-for-the-test-only\n"
SECRET_NAME = "rlhf-update-token"


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/k8s copied, with the overlay's token file that is never committed."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy)
    (copy / "overlays" / "production" / "token").write_text(TOKEN, encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def renders(k8s_copy: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        "base": kustomize(k8s_copy / "base"),
        "production": kustomize(k8s_copy / "overlays" / "production"),
    }


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1  # one uvicorn process per pod, replicas for scale
    container: dict[str, Any] = containers[0]
    return container


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in _container(objects)["env"]}


RENDERS = ["base", "production"]


def _loaded(env: dict[str, str], token: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the container's environment gives, its token file standing at `token`."""
    token.write_text(TOKEN, encoding="utf-8")
    for variable, value in env.items():
        monkeypatch.setenv(variable, str(token) if variable == "RLHF_API_TOKEN_FILE" else value)
    return load_settings()


@pytest.mark.parametrize("name", RENDERS)
def test_every_rendered_object_is_valid_in_strict_mode(
    renders: dict[str, list[dict[str, Any]]], name: str
) -> None:
    kinds = set()
    for document in renders[name]:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        kinds.add(document["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


def test_a_misspelt_key_fails_the_strict_validation_and_only_it(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy)
    manifest = copy / "base" / "deployment.yaml"
    text = manifest.read_text(encoding="utf-8")
    assert text.count("readinessProbe:") == 1
    manifest.write_text(text.replace("readinessProbe:", "readinesProbe:"), encoding="utf-8")
    deployment = _one(kustomize(copy / "base"), "Deployment")
    # The lax schemas allow unknown keys: strictness is what catches the typo.
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=False)
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_production_overlay_generates_the_secret_the_deployment_mounts(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    objects = renders["production"]
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    secret = _one(objects, "Secret")
    # The generated name carries the token's hash, and the reference follows it.
    assert secret["metadata"]["name"].startswith(f"{SECRET_NAME}-")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (item,) = volume["secret"]["items"]
    assert base64.b64decode(secret["data"][item["key"]]).decode() == TOKEN
    (mount,) = [m for m in _container(objects)["volumeMounts"] if m["name"] == volume["name"]]
    assert _env(objects)["RLHF_API_TOKEN_FILE"] == f"{mount['mountPath']}/{item['path']}"
    # The file is readable by the image's user through fsGroup (the file is root's).
    assert pod["securityContext"]["fsGroup"] == image().user
    assert volume["secret"]["defaultMode"] & 0o040


def test_the_overlay_does_not_render_without_a_token_file(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy)
    (copy / "overlays" / "production" / "token").unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="token"):
        kustomize(copy / "overlays" / "production")


def test_the_base_mounts_the_secret_the_docs_tell_to_create(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    objects = renders["base"]
    assert all(o["kind"] != "Secret" for o in objects)
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    (item,) = volume["secret"]["items"]
    command = f"kubectl create secret generic {SECRET_NAME} --from-file={item['key']}="
    assert volume["secret"]["secretName"] == SECRET_NAME
    assert command in (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", RENDERS)
def test_the_environment_is_made_of_real_settings_that_load(
    renders: dict[str, list[dict[str, Any]]],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _env(renders[name])
    assert set(env) <= setting_variables() | {"PROMETHEUS_MULTIPROC_DIR"}
    settings = _loaded(env, tmp_path / "token", monkeypatch)
    assert settings.bearer_token() == TOKEN.strip()
    assert settings.web_concurrency == 1  # the image's default: one process per container


@pytest.mark.parametrize("name", RENDERS)
def test_the_port_and_the_probes_are_the_app_s_and_the_image_s(
    renders: dict[str, list[dict[str, Any]]], name: str
) -> None:
    container = _container(renders[name])
    assert container["image"].split(":")[0] == "rlhf-update"
    assert "command" not in container  # the image's own command
    assert "args" not in container
    (port,) = container["ports"]
    assert [port["containerPort"]] == image().exposed
    assert str(port["containerPort"]) == image().env["PORT"]
    probes = {key: container[key]["httpGet"] for key in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert all(probe["port"] == port["name"] for probe in probes.values())
    with TestClient(create_app(Settings())) as client:
        assert client.get("/livez").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}


@pytest.mark.parametrize("name", RENDERS)
def test_the_grace_period_outlasts_the_drain_and_the_shutdown_timeout(
    renders: dict[str, list[dict[str, Any]]],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _loaded(_env(renders[name]), tmp_path / "token", monkeypatch)
    cut_after = int(image().flag("--timeout-graceful-shutdown"))
    pod = _one(renders[name], "Deployment")["spec"]["template"]["spec"]
    assert settings.shutdown_drain_seconds + cut_after < pod["terminationGracePeriodSeconds"]
    # The readiness probe sees the 503 well within the drain.
    readiness = _container(renders[name])["readinessProbe"]
    seen_within = readiness["periodSeconds"] * readiness["failureThreshold"]
    assert seen_within < settings.shutdown_drain_seconds


@pytest.mark.parametrize("name", RENDERS)
def test_the_pod_runs_as_the_image_s_user_on_a_read_only_root(
    renders: dict[str, list[dict[str, Any]]], name: str
) -> None:
    pod = _one(renders[name], "Deployment")["spec"]["template"]["spec"]
    container = _container(renders[name])
    assert pod["securityContext"]["runAsUser"] == image().user
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert writable == {"/tmp"}
    assert {m["name"] for m in container["volumeMounts"] if not m.get("readOnly")} <= empty_dirs


@pytest.mark.parametrize("name", RENDERS)
def test_the_resources_cover_the_body_limit_and_the_compute_slots(
    renders: dict[str, list[dict[str, Any]]],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _env(renders[name])
    settings = _loaded(env, tmp_path / "token", monkeypatch)
    resources = _container(renders[name])["resources"]
    limit = kubernetes_bytes(resources["limits"]["memory"])
    assert limit >= memory_floor(env["RLHF_MAX_BODY_SIZE"], settings.max_in_flight)
    assert kubernetes_bytes(resources["requests"]["memory"]) == limit  # never overcommitted
    # A compute slot per reserved core: more would queue behind each other on the CPU.
    assert settings.max_in_flight == int(resources["requests"]["cpu"])


@pytest.mark.parametrize("name", RENDERS)
def test_the_service_the_budget_and_the_autoscaler_select_the_deployment_s_pods(
    renders: dict[str, list[dict[str, Any]]], name: str
) -> None:
    objects = renders[name]
    deployment = _one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    budget = _one(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscaler = _one(objects, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # The autoscaler owns the count; a replicas field would be reset by every apply.
    assert "replicas" not in deployment["spec"]
    assert 2 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
    assert budget["spec"]["maxUnavailable"] < autoscaler["spec"]["minReplicas"]


def test_the_production_image_tag_is_the_project_s_version(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert _container(renders["production"])["image"] == (
        f"rlhf-update:{project['project']['version']}"
    )
    production = _one(renders["production"], "HorizontalPodAutoscaler")["spec"]
    base = _one(renders["base"], "HorizontalPodAutoscaler")["spec"]
    assert production["minReplicas"] > base["minReplicas"]


def test_the_queue_component_scales_on_a_gauge_the_service_exports(k8s_copy: Path) -> None:
    overlay = k8s_copy / "overlays" / "with-queue"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../production]\ncomponents: [../../components/queue-autoscaling]\n",
        encoding="utf-8",
    )
    objects = kustomize(overlay)
    for document in objects:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    metrics = _one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods"]
    assert metrics[1]["pods"]["metric"]["name"] in exported_series()
