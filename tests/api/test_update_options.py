"""Algorithm options over HTTP: passed through, validated with named 422s."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core import UpdateOptions, compute_update
from tests.helpers.batches import GROUPS_OF_3, random_batch
from tests.helpers.problems import assert_problem
from tests.helpers.reference import reference_options_update

COMBINED: dict[str, Any] = {
    "kl_estimator": "low_var_kl",
    "kl_clamp": 2.0,
    "reward_clip": 1.5,
    "group_ids": GROUPS_OF_3,
    "baseline": "grpo",
    "normalize_advantages": True,
    "max_grad_norm": 0.05,
    "target_kl": 0.1,
    "kl_horizon": 500,
}


def test_options_reach_the_core(client: TestClient) -> None:
    args = random_batch(11)
    body = client.post("/update", json={**args, **COMBINED}).json()
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in args.items() if k not in ("beta", "lr")}
    direct = compute_update(
        **arrays, beta=args["beta"], lr=args["lr"], options=UpdateOptions(**COMBINED)
    )
    assert body["weights"] == direct.weights.tolist()
    assert body["stats"]["clipped"] is True
    assert body["stats"]["next_beta"] == direct.stats.next_beta
    ref = reference_options_update(**args, **COMBINED)
    assert body["weights"] == pytest.approx(ref.weights, rel=1e-10)


def test_explicit_defaults_equal_omitted_options(client: TestClient) -> None:
    args = random_batch(12)
    defaults = {
        "kl_estimator": "k1",
        "kl_clamp": None,
        "reward_clip": None,
        "group_ids": None,
        "baseline": "none",
        "grpo_scale": "std",
        "normalize_advantages": False,
        "max_grad_norm": None,
        "target_kl": None,
        "kl_horizon": None,
    }
    plain = client.post("/update", json=args).json()
    explicit = client.post("/update", json={**args, **defaults}).json()
    assert explicit == plain
    assert "next_beta" not in plain["stats"]
    assert set(plain["stats"]["kl_estimates"]) == {"k1", "k2", "k3"}


def test_rloo_with_groups_over_http(client: TestClient) -> None:
    args = random_batch(13)
    options: dict[str, Any] = {"baseline": "rloo", "group_ids": GROUPS_OF_3}
    body = client.post("/update", json={**args, **options}).json()
    ref = reference_options_update(**args, **options)
    assert body["weights"] == pytest.approx(ref.weights, rel=1e-10)


@pytest.mark.parametrize(
    ("changes", "loc", "detail"),
    [
        pytest.param(
            {"kl_estimator": "k4"},
            ["kl_estimator"],
            "kl_estimator is 'k4'; expected one of 'k1', 'k2', 'k3', 'abs', 'kl', 'mse', "
            "'low_var_kl'",
            id="estimator",
        ),
        pytest.param(
            {"baseline": "ppo"},
            ["baseline"],
            "baseline is 'ppo'; expected one of 'none', 'mean', 'rloo', 'grpo'",
            id="baseline",
        ),
        pytest.param(
            {"baseline": 1},
            ["baseline"],
            "baseline is a number (1); expected one of 'none', 'mean', 'rloo', 'grpo'",
            id="baseline-number",
        ),
        pytest.param(
            {"grpo_scale": "mad"},
            ["grpo_scale"],
            "grpo_scale is 'mad'; expected one of 'std', 'none'",
            id="scale",
        ),
        pytest.param(
            {"group_ids": [1, 2, 3]},
            ["group_ids"],
            "group_ids has 3 entries; expected 2 integers (= len(rewards))",
            id="group-length",
        ),
        pytest.param(
            {"group_ids": [1, 1.5]},
            ["group_ids", 1],
            "group_ids[1] is a number (1.5); expected an integer",
            id="group-float",
        ),
        pytest.param(
            {"group_ids": [True, 1]},
            ["group_ids", 0],
            "group_ids[0] is a boolean (true); expected an integer",
            id="group-bool",
        ),
        pytest.param(
            {"group_ids": ["a", 1]},
            ["group_ids", 0],
            "group_ids[0] is a string ('a'); expected an integer",
            id="group-string",
        ),
        pytest.param(
            {"group_ids": [2**63, 1]},
            ["group_ids", 0],
            "group_ids[0] is 9223372036854775808; expected an integer within int64",
            id="group-huge",
        ),
        pytest.param(
            {"group_ids": 3},
            ["group_ids"],
            "group_ids is a number (3); expected an array of B integers, or null",
            id="group-scalar",
        ),
        pytest.param(
            {"baseline": "rloo", "group_ids": [4, 9]},
            ["group_ids", 0],
            "group 4 (group_ids[0]) has 1 sample; baseline 'rloo' needs at least 2 samples "
            "per group",
            id="rloo-single",
        ),
        pytest.param(
            {"max_grad_norm": 0},
            ["max_grad_norm"],
            "max_grad_norm is 0; expected a finite number > 0",
            id="zero-clip",
        ),
        pytest.param(
            {"kl_clamp": -1.0},
            ["kl_clamp"],
            "kl_clamp is -1.0; expected a finite number > 0",
            id="negative-clamp",
        ),
        pytest.param(
            {"reward_clip": "1"},
            ["reward_clip"],
            "reward_clip is a string ('1'); expected a JSON number",
            id="string-clip",
        ),
        pytest.param(
            {"kl_horizon": 100},
            ["target_kl"],
            "kl_horizon is set but target_kl is not; adaptive KL needs both",
            id="half-adaptive",
        ),
        pytest.param(
            {"normalize_advantages": "true"},
            ["normalize_advantages"],
            "normalize_advantages is a string ('true'); expected true or false",
            id="string-bool",
        ),
        pytest.param(
            {"basline": "mean"},
            ["basline"],
            "unknown field 'basline' (did you mean 'baseline'?)",
            id="misspelt-option",
        ),
    ],
)
def test_invalid_options_get_named_422(
    client: TestClient,
    example: dict[str, Any],
    changes: dict[str, Any],
    loc: list[Any],
    detail: str,
) -> None:
    problem = assert_problem(client.post("/update", json={**example, **changes}), 422)
    assert problem["errors"][0]["loc"] == loc
    assert problem["detail"].startswith(detail), problem["detail"]


def test_non_finite_option_is_rejected(client: TestClient, example: dict[str, Any]) -> None:
    # 1e999 cannot come from json.dumps; splice the literal into the body.
    body = (json.dumps(example)[:-1] + ', "max_grad_norm": 1e999}').encode()
    problem = assert_problem(client.post("/update", content=body), 422)
    assert problem["errors"][0]["loc"] == ["max_grad_norm"]
    assert "expected a finite number" in problem["detail"]
