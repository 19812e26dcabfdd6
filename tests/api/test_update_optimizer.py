"""The optimizers over HTTP, both wire formats: five chained calls equal five torch.optim
steps, the state comes back named as torch names it, every rule is a 422 naming the field."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load, save

from tests.helpers.batches import random_batch
from tests.helpers.problems import assert_problem
from tests.helpers.tensors import BINARY, BINARY_BOTH_WAYS, as_safetensors

STATE_VECTORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
CASES = [
    pytest.param({"type": "sgd", "momentum": 0.9}, id="sgd-momentum"),
    pytest.param({"type": "sgd", "momentum": 0.7, "dampening": 0.2}, id="sgd-dampening"),
    pytest.param(
        {"type": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        id="sgd-nesterov-decay",
    ),
    pytest.param({"type": "sgd", "weight_decay": 0.1}, id="sgd-decay"),
    pytest.param({"type": "adam", "weight_decay": 0.05}, id="adam"),
    pytest.param({"type": "adamw", "betas": [0.9, 0.95]}, id="adamw"),
    pytest.param({"type": "adam", "amsgrad": True, "eps": 1e-6}, id="amsgrad"),
    pytest.param({"type": "adamw", "amsgrad": True, "weight_decay": 0.1}, id="adamw-amsgrad"),
]
TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def json_call(client: TestClient, body: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    response = client.post("/update", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["stats"]["optimizer_step"] == answer["optimizer_state"]["step"]
    return answer["weights"], answer["optimizer_state"]


def binary_call(client: TestClient, body: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    fields = {k: v for k, v in body.items() if k != "optimizer_state"}
    tensors, metadata = as_safetensors(fields)
    state = body.get("optimizer_state")
    if state is not None:
        metadata["optimizer_state.step"] = str(state["step"])
        tensors |= {k: np.asarray(v) for k, v in state.items() if k != "step"}
    response = client.post(
        "/update", content=save(tensors, metadata=metadata), headers=BINARY_BOTH_WAYS
    )
    assert response.status_code == 200, response.text
    answer = load(response.content)
    length = int.from_bytes(response.content[:8], "little")
    header = json.loads(response.content[8 : 8 + length])["__metadata__"]
    step = int(header["optimizer_state.step"])
    assert json.loads(header["stats"])["optimizer_step"] == step
    new_state = {"step": step, **{k: answer[k].tolist() for k in answer if k != "weights"}}
    return answer["weights"].tolist(), new_state


@pytest.mark.parametrize("call", [json_call, binary_call], ids=["json", "safetensors"])
@pytest.mark.parametrize("optimizer", CASES)
def test_five_calls_equal_five_torch_optim_steps(
    client: TestClient, optimizer: dict[str, Any], call: Any
) -> None:
    torch = pytest.importorskip(
        "torch", reason="the torch cross-check needs torch==2.13.0, which `make test` installs"
    )
    # A different batch each call, so that the moments see different gradients.
    batches = [random_batch(100 + k, 6, 4) for k in range(5)]
    weights = batches[0]["weights"]
    param = torch.tensor(weights, dtype=torch.float64, requires_grad=True)
    settings = {k: v for k, v in optimizer.items() if k != "type"}
    torch_opt = getattr(torch.optim, TORCH_NAMES[optimizer["type"]])([param], lr=0.1, **settings)
    state = None
    for batch in batches:
        # The ascent direction of this batch: the plain update from 0 with lr 1.
        plain = client.post("/update", json={**batch, "weights": [0.0] * 4, "lr": 1.0}).json()
        body = {**batch, "weights": weights, "optimizer": optimizer}
        if state is not None:
            body["optimizer_state"] = state
        weights, state = call(client, body)
        param.grad = -torch.tensor(plain["weights"], dtype=torch.float64)
        torch_opt.step()
        np.testing.assert_allclose(weights, param.detach().numpy(), rtol=1e-12, atol=0)
    # torch's SGD without momentum keeps no state at all.
    expected = torch_opt.state_dict()["state"].get(0, {})
    assert state is not None
    assert set(state) - {"step"} == set(expected) - {"step"}
    for name in set(expected) - {"step"}:
        np.testing.assert_allclose(state[name], expected[name].numpy(), rtol=1e-12, atol=0)
    assert state["step"] == 5
    if "step" in expected:  # torch's SGD keeps no step
        assert float(expected["step"]) == 5.0


def test_no_optimizer_answers_as_before_and_sgd_takes_the_same_step(client: TestClient) -> None:
    body = random_batch(1, 5, 3)
    plain = client.post("/update", json=body)
    sgd = client.post("/update", json={**body, "optimizer": {"type": "sgd"}})
    answer = orjson.loads(sgd.content)
    assert "optimizer_state" not in plain.json()
    assert "optimizer_step" not in plain.json()["stats"]
    assert answer.pop("optimizer_state") == {"step": 1}
    assert answer["stats"].pop("optimizer_step") == 1
    assert orjson.dumps(answer) == plain.content


BASE = random_batch(2, 4, 3)
ADAM = {"type": "adam"}
# (fields added to BASE, the loc named, a phrase of the message)
RULES = [
    pytest.param({"lr": -0.1}, ["lr"], ">= 0", id="lr-negative"),
    pytest.param(
        {"optimizer": {"type": "adam", "eps": -1e-8}}, ["optimizer", "eps"], ">= 0", id="eps"
    ),
    pytest.param(
        {"optimizer": {"type": "adamw", "weight_decay": -0.01}},
        ["optimizer", "weight_decay"],
        ">= 0",
        id="weight-decay",
    ),
    pytest.param(
        {"optimizer": {"momentum": -0.9}}, ["optimizer", "momentum"], ">= 0", id="momentum"
    ),
    pytest.param(
        {"optimizer": {"momentum": 0.9, "dampening": -0.1}},
        ["optimizer", "dampening"],
        ">= 0",
        id="dampening",
    ),
    pytest.param(
        {"optimizer": {"type": "adam", "betas": [0.9, 1.0]}},
        ["optimizer", "betas"],
        "two numbers in [0, 1)",
        id="beta-one",
    ),
    pytest.param(
        {"optimizer": {"type": "adam", "betas": [0.9]}},
        ["optimizer", "betas"],
        "two numbers in [0, 1)",
        id="betas-one-number",
    ),
    pytest.param(
        {"optimizer": {"type": "adam", "betas": [-0.1, 0.9]}},
        ["optimizer", "betas"],
        "two numbers in [0, 1)",
        id="beta-negative",
    ),
    pytest.param(
        {"optimizer": {"nesterov": True}},
        ["optimizer", "nesterov"],
        "Nesterov momentum requires a momentum and zero dampening",
        id="nesterov-without-momentum",
    ),
    pytest.param(
        {"optimizer": {"nesterov": True, "momentum": 0.9, "dampening": 0.1}},
        ["optimizer", "nesterov"],
        "Nesterov momentum requires a momentum and zero dampening",
        id="nesterov-with-dampening",
    ),
    pytest.param(
        {"optimizer": {"type": "lion"}},
        ["optimizer", "type"],
        "expected one of 'sgd', 'adam', 'adamw'",
        id="unknown-type",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": 0, "momentum_buffer": [0, 0, 0]}},
        ["optimizer_state", "momentum_buffer"],
        "does not belong to optimizer 'adam'",
        id="foreign-key",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": 0, "max_exp_avg_sq": [0, 0, 0]}},
        ["optimizer_state", "max_exp_avg_sq"],
        "does not belong to optimizer 'adam'",
        id="amsgrad-key-without-amsgrad",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": 0, "exp_avg": [0, 0]}},
        ["optimizer_state", "exp_avg"],
        "has 2 entries; expected 3 numbers (= len(weights))",
        id="state-length",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": 0, "whatever": [0, 0, 0]}},
        ["optimizer_state", "whatever"],
        "unknown key 'whatever'",
        id="unknown-state-key",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": -1}},
        ["optimizer_state", "step"],
        ">= 0",
        id="step-negative",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": 1.5}},
        ["optimizer_state", "step"],
        "expected an integer",
        id="step-not-integer",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": 2, "exp_avg": [0, 0, 0]}},
        ["optimizer_state", "exp_avg_sq"],
        "is missing",
        id="moments-missing",
    ),
    pytest.param(
        {
            "optimizer": {"type": "adam", "amsgrad": True},
            "optimizer_state": {"step": 2, "exp_avg": [0, 0, 0], "exp_avg_sq": [0, 0, 0]},
        },
        ["optimizer_state", "max_exp_avg_sq"],
        "is missing",
        id="amsgrad-state-missing",
    ),
    pytest.param(
        {"optimizer": {"momentum": 0.9}, "optimizer_state": {"step": 1}},
        ["optimizer_state", "momentum_buffer"],
        "is missing",
        id="momentum-buffer-missing",
    ),
    pytest.param(
        {"optimizer": {"type": "adam", "momentum": 0.9}},
        ["optimizer", "momentum"],
        "applies to type 'sgd' only",
        id="momentum-with-adam",
    ),
    pytest.param(
        {"optimizer": {"type": "adamw", "dampening": 0.1}},
        ["optimizer", "dampening"],
        "applies to type 'sgd' only",
        id="dampening-with-adamw",
    ),
    pytest.param(
        {"optimizer": {"type": "sgd", "amsgrad": True}},
        ["optimizer", "amsgrad"],
        "applies to types 'adam' and 'adamw' only",
        id="amsgrad-with-sgd",
    ),
    pytest.param(
        {"optimizer": {"type": "adam", "bets": [0.9, 0.99]}},
        ["optimizer", "bets"],
        "unknown key 'bets' (did you mean 'betas'?)",
        id="unknown-optimizer-key",
    ),
    pytest.param(
        {"optimizer": "adamw"},
        ["optimizer"],
        "expected an object with type",
        id="optimizer-not-an-object",
    ),
    pytest.param(
        {"optimizer": ADAM, "optimizer_state": {"step": 0, "exp_avg": [[0, 0, 0]]}},
        ["optimizer_state", "exp_avg", 0],
        "expected a JSON number",
        id="state-vector-nested",
    ),
    pytest.param(
        {"optimizer_state": {"step": 1}},
        ["optimizer_state"],
        "optimizer is not",
        id="state-without-optimizer",
    ),
]


@pytest.mark.parametrize(("fields", "loc", "phrase"), RULES)
def test_every_rule_is_a_422_naming_the_field(
    client: TestClient, fields: dict[str, Any], loc: list[str], phrase: str
) -> None:
    problem = assert_problem(client.post("/update", json={**BASE, **fields}), 422)
    [error] = problem["errors"]
    assert error["loc"] == loc
    assert phrase in error["msg"]
    assert loc[0] in error["msg"] or loc[-1] == "nesterov"


def test_a_non_finite_state_value_is_a_422_naming_its_index(client: TestClient) -> None:
    # JSON cannot carry NaN; a binary body can.
    tensors, metadata = as_safetensors({**BASE, "optimizer": ADAM})
    metadata["optimizer_state.step"] = "1"
    tensors["exp_avg"] = np.array([0.0, np.nan, 0.0])
    tensors["exp_avg_sq"] = np.zeros(3)
    response = client.post("/update", content=save(tensors, metadata=metadata), headers=BINARY)
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["loc"] == ["optimizer_state", "exp_avg", 1]
    assert "optimizer_state.exp_avg[1] is nan; expected a finite number" in error["msg"]


@pytest.mark.parametrize(
    ("step", "phrase"), [("-1", ">= 0"), ("1.5", "expected an integer"), ("x", "an integer")]
)
def test_a_bad_step_in_the_metadata_is_a_422_naming_its_key(
    client: TestClient, step: str, phrase: str
) -> None:
    tensors, metadata = as_safetensors({**BASE, "optimizer": ADAM})
    metadata["optimizer_state.step"] = step
    response = client.post("/update", content=save(tensors, metadata=metadata), headers=BINARY)
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["loc"] == ["__metadata__", "optimizer_state.step"]
    assert phrase in error["msg"]


def test_a_zero_over_zero_step_is_a_422_that_says_why(client: TestClient) -> None:
    # eps 0 and a gradient entry that is 0: m / sqrt(v) is 0 / 0, as in torch (NaN).
    body = {
        **BASE,
        "log_prob_grads": [[row[0], row[1], 0.0] for row in BASE["log_prob_grads"]],
        "optimizer": {"type": "adam", "eps": 0},
    }
    problem = assert_problem(client.post("/update", json=body), 422)
    [error] = problem["errors"]
    assert error["loc"] == ["stepped_weights", 2]
    assert "with eps 0, a gradient entry that was 0 at every step gives 0 / 0" in error["msg"]


def test_a_state_that_overflows_is_a_422_naming_it(client: TestClient) -> None:
    # g^2 overflows float64 in v although every input is finite.
    body = {**BASE, "rewards": [1e200] * 4, "beta": 0.0, "optimizer": ADAM}
    problem = assert_problem(client.post("/update", json=body), 422)
    [error] = problem["errors"]
    assert error["loc"][0] == "optimizer_state.exp_avg_sq"
    assert "overflows float64" in error["msg"]


def test_a_state_vector_in_the_metadata_is_a_422_saying_to_send_a_tensor(
    client: TestClient,
) -> None:
    tensors, metadata = as_safetensors({**BASE, "optimizer": ADAM})
    metadata["exp_avg"] = "[0, 0, 0]"
    response = client.post("/update", content=save(tensors, metadata=metadata), headers=BINARY)
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["loc"] == ["__metadata__", "exp_avg"]
    assert "send it as a float tensor of shape (N,)" in error["msg"]
