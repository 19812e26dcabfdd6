"""POST /update/grad and /update/apply, and /update with column_offset, over the app."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load, save

from app.core.norms import CHUNK_COLUMNS
from app.main import create_app
from app.settings import Settings
from tests.helpers.metrics_text import sample
from tests.helpers.problems import assert_problem
from tests.helpers.tensors import BINARY_BOTH_WAYS, SAFETENSORS


@pytest.fixture
def settings() -> Settings:
    """Room for bodies of a few chunks of columns."""
    return Settings(max_body_size=64 * 1024 * 1024, log_level="info")


def _batch(n: int = 2 * CHUNK_COLUMNS + 5, b: int = 2, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "weights": rng.standard_normal(n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": rng.standard_normal(b) - 2,
        "ref_log_probs": rng.standard_normal(b) - 2,
        "log_prob_grads": rng.standard_normal((b, n)),
        "beta": np.array(0.1),
        "lr": np.array(0.01),
    }


def _block(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {
        **batch,
        "weights": batch["weights"][start:stop],
        "log_prob_grads": np.ascontiguousarray(batch["log_prob_grads"][:, start:stop]),
    }


def _post(client: TestClient, path: str, tensors: dict[str, Any], **metadata: str) -> Any:
    body = save(tensors, metadata=metadata or None)
    return client.post(path, content=body, headers=BINARY_BOTH_WAYS)


def _metadata(content: bytes) -> dict[str, str]:
    size = int.from_bytes(content[:8], "little")
    metadata: dict[str, str] = json.loads(content[8 : 8 + size])["__metadata__"]
    return metadata


def _norm(partials: list[np.ndarray]) -> float:
    """The norm from (s, q) rows: their exact rational sum, rounded once, then sqrt."""
    total = sum(
        (Fraction(s) ** 2 * Fraction(q) for part in partials for s, q in part.tolist()),
        Fraction(0),
    )
    return math.sqrt(total)


def test_grad_blocks_equal_the_whole_gradient_and_their_partials_its_norm(
    client: TestClient,
) -> None:
    batch = _batch()
    n = batch["weights"].size
    whole = load(_post(client, "/update/grad", batch, column_offset="0").content)
    cut = CHUNK_COLUMNS
    first = _post(client, "/update/grad", _block(batch, 0, cut), column_offset="0")
    second = _post(client, "/update/grad", _block(batch, cut, n), column_offset=str(cut))
    assert first.status_code == second.status_code == 200
    parts = [load(first.content), load(second.content)]
    joined = np.concatenate([p["grad"] for p in parts])
    assert joined.tobytes() == whole["grad"].tobytes()
    assert np.concatenate([p["grad_norm_partials"] for p in parts]).tobytes() == (
        whole["grad_norm_partials"].tobytes()
    )
    # The gradient is the update's: the plain update moved each weight by lr * grad.
    plain = _post(client, "/update", batch)
    assert np.array_equal(load(plain.content)["weights"], batch["weights"] + 0.01 * joined)
    stats = json.loads(_metadata(plain.content)["stats"])
    # Every s is 1 here: the norm is sqrt of the correctly rounded sum of the q.
    assert stats["grad_norm"] == _norm(parts_partials := [p["grad_norm_partials"] for p in parts])
    assert all(row[0] == 1.0 for part in parts_partials for row in part)
    # The batch's stats, the same in every block; none of the columns' own.
    batch_stats = [json.loads(_metadata(r.content)["stats"]) for r in (first, second)]
    assert batch_stats[0] == batch_stats[1]
    assert batch_stats[0]["kl_mean"] == stats["kl_mean"]
    assert not {"grad_norm", "clipped", "update_norm"} & set(batch_stats[0])


def test_grad_takes_json_and_answers_json(client: TestClient, example: dict[str, Any]) -> None:
    response = client.post("/update/grad", json={**example, "column_offset": 0})
    assert response.status_code == 200
    body = response.json()
    assert body["grad"] == [0.5, -0.5]
    assert body["grad_norm_partials"] == [[1.0, 0.5]]
    assert body["stats"]["kl_mean"] == 0.0
    assert "grad_norm" not in body["stats"]


def test_update_with_column_offset_adds_partials_and_keeps_everything_else(
    client: TestClient, example: dict[str, Any]
) -> None:
    plain = client.post("/update", json=example).json()
    block = client.post("/update", json={**example, "column_offset": 0}).json()
    assert block.pop("grad_norm_partials") == [[1.0, 0.5]]
    assert block == plain
    adam = {**example, "column_offset": 0, "optimizer": {"type": "adam"}}
    assert "update_norm_partials" in client.post("/update", json=adam).json()


def test_apply_clips_by_the_whole_norm_as_the_single_update(client: TestClient) -> None:
    batch = _batch()
    n = batch["weights"].size
    options = {"max_grad_norm": "1.0", "optimizer": json.dumps({"type": "adamw"})}
    single = client.post("/update", content=save(batch, metadata=options), headers=BINARY_BOTH_WAYS)
    assert single.status_code == 200
    expected = load(single.content)
    cut = CHUNK_COLUMNS
    grads = [
        load(_post(client, "/update/grad", _block(batch, a, z), column_offset=str(a)).content)
        for a, z in ((0, cut), (cut, n))
    ]
    grad_norm = _norm([g["grad_norm_partials"] for g in grads])
    assert grad_norm == json.loads(_metadata(single.content)["stats"])["grad_norm"]
    steps = []
    for (a, z), g in zip(((0, cut), (cut, n)), grads, strict=True):
        tensors = {
            "weights": batch["weights"][a:z],
            "grad": g["grad"],
            "lr": np.array(0.01),
            "grad_norm": np.array(grad_norm),
        }
        answer = _post(client, "/update/apply", tensors, column_offset=str(a), **options)
        assert answer.status_code == 200, answer.text
        assert _metadata(answer.content)["clipped"] == "true"
        assert _metadata(answer.content)["optimizer_state.step"] == "1"
        steps.append(load(answer.content))
    for name in ("weights", "exp_avg", "exp_avg_sq"):
        joined = np.concatenate([s[name] for s in steps])
        assert joined.tobytes() == expected[name].tobytes(), name
    assert all("step_norm_partials" in s and "update_norm_partials" in s for s in steps)


def test_apply_refuses_json_and_names_what_it_takes(client: TestClient) -> None:
    response = client.post("/update/apply", json={"weights": [1.0]})
    problem = assert_problem(response, 415, "safetensors")
    assert "/update/apply" in problem["detail"]


def test_apply_names_missing_and_unknown_tensors_and_keys(client: TestClient) -> None:
    response = _post(
        client,
        "/update/apply",
        {"weights": np.zeros(3), "grads": np.zeros(3), "lr": np.array(0.1)},
        baseline="grpo",
    )
    problem = assert_problem(response, 422, "grad is missing")
    messages = " | ".join(error["msg"] for error in problem["errors"])
    for part in (
        "grad_norm is missing",
        "unknown tensor 'grads'",
        "did you mean 'grad'",
        "baseline",
    ):
        assert part in messages, part


def test_apply_names_a_bad_column_and_a_state_entry_by_their_global_index(
    client: TestClient,
) -> None:
    grad = np.zeros(4)
    grad[2] = np.nan
    tensors = {
        "weights": np.zeros(4),
        "grad": grad,
        "lr": np.array(0.1),
        "grad_norm": np.array(1.0),
    }
    response = _post(client, "/update/apply", tensors, column_offset=str(3 * CHUNK_COLUMNS))
    problem = assert_problem(response, 422, f"grad[{3 * CHUNK_COLUMNS + 2}] is nan")
    assert problem["errors"][0]["loc"] == ["grad", 3 * CHUNK_COLUMNS + 2]
    state = {
        **tensors,
        "grad": np.zeros(4),
        "exp_avg": np.array([0.0, 0.0, 0.0, np.inf]),
        "exp_avg_sq": np.zeros(4),
    }
    response = _post(
        client,
        "/update/apply",
        state,
        column_offset=str(CHUNK_COLUMNS),
        optimizer='{"type": "adam"}',
        **{"optimizer_state.step": "1"},
    )
    assert_problem(response, 422, f"optimizer_state.exp_avg[{CHUNK_COLUMNS + 3}] is inf")


def test_a_block_names_a_bad_gradient_entry_as_the_single_update_does(
    client: TestClient,
) -> None:
    batch = _batch(n=CHUNK_COLUMNS + 10)
    batch["log_prob_grads"][1, CHUNK_COLUMNS + 4] = np.inf
    whole = client.post("/update", content=save(batch), headers=BINARY_BOTH_WAYS)
    block = _block(batch, CHUNK_COLUMNS, CHUNK_COLUMNS + 10)
    for path in ("/update", "/update/grad"):
        part = _post(client, path, block, column_offset=str(CHUNK_COLUMNS))
        assert part.json()["errors"] == whole.json()["errors"]
        assert_problem(part, 422, f"log_prob_grads[1][{CHUNK_COLUMNS + 4}] is inf")


def test_column_offset_off_the_chunk_is_a_422_naming_it(
    client: TestClient, example: dict[str, Any]
) -> None:
    for path in ("/update", "/update/grad"):
        response = client.post(path, json={**example, "column_offset": 100})
        problem = assert_problem(response, 422, "column_offset", str(CHUNK_COLUMNS))
        assert problem["errors"][0]["loc"] == ["column_offset"]
    response = client.post("/update", json={**example, "column_offset": 0, "max_grad_norm": 1.0})
    assert_problem(response, 422, "column_offset", "/update/grad")


def test_the_block_routes_need_the_token_and_are_observed(example: dict[str, Any]) -> None:
    settings = Settings(api_token="secret", log_level="info")
    with TestClient(create_app(settings)) as client:
        for path in ("/update/grad", "/update/apply"):
            assert_problem(client.post(path, json=example), 401)
        headers = {"authorization": "Bearer secret"}
        ok = client.post("/update/grad", json={**example, "column_offset": 0}, headers=headers)
        assert ok.status_code == 200
        client.post("/update", json=example, headers=headers)
        metrics = client.get("/metrics").text
        block = "rlhf_update_block_requests_total"
        for path in ("/update/grad", "/update/apply"):
            assert sample(metrics, block, route=path, status="401", format="json") == 1
        assert sample(metrics, block, route="/update/grad", status="200", format="json") == 1
        block_seconds = "rlhf_update_block_duration_seconds_count"
        assert sample(metrics, block_seconds, route="/update/grad") == 2
        # Blocks are not updates: the update series count the one POST /update alone.
        assert sample(metrics, "rlhf_update_requests_total", status="200", format="json") == 1
        assert sample(metrics, "rlhf_update_duration_seconds_count") == 1
        assert sample(metrics, "rlhf_update_kl_mean_count") == 1
        with pytest.raises(KeyError):
            sample(metrics, "rlhf_update_requests_total", status="401", format="json")


def test_the_body_limit_holds_on_the_block_routes() -> None:
    with TestClient(create_app(Settings(max_body_size=1000))) as client:
        for path in ("/update/grad", "/update/apply"):
            response = client.post(
                path, content=b"\0" * 2000, headers={"content-type": SAFETENSORS}
            )
            assert_problem(response, 413)


def test_info_and_openapi_tell_the_chunk_and_the_routes(client: TestClient) -> None:
    assert client.get("/info").json()["chunk_columns"] == CHUNK_COLUMNS
    paths = client.get("/openapi.json").json()["paths"]
    grad = paths["/update/grad"]["post"]
    example = grad["requestBody"]["content"]["application/json"]["example"]
    assert example["column_offset"] == 0
    answer = client.post("/update/grad", json=example)
    assert answer.status_code == 200
    shown = grad["responses"]["200"]["content"]["application/json"]["example"]
    assert shown == answer.json()
    apply = paths["/update/apply"]["post"]
    assert set(apply["requestBody"]["content"]) == {SAFETENSORS}
    assert "grad_norm" in apply["requestBody"]["content"][SAFETENSORS]["schema"]["description"]
