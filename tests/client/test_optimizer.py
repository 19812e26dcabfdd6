"""The client's optimizer fields and its `Optimizer` helper against the real app, in-process,
over JSON and over safetensors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rlhf_client import Client, Optimizer, UnprocessableEntityError

from app.main import create_app
from app.settings import Settings
from tests.helpers.optimizers import reference_steps
from tests.helpers.reference import reference_weights

BATCH = ("rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


@pytest.fixture(params=["json", "safetensors"])
def rlhf(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Client]:
    with (
        TestClient(create_app(settings)) as http,
        Client(http_client=http, transport=request.param) as client,
    ):
        yield client


def batch(seed: int, b: int = 6, n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "rewards": rng.standard_normal(b),
        "policy_log_probs": -rng.random(b) * 3,
        "ref_log_probs": -rng.random(b) * 3,
        "log_prob_grads": rng.standard_normal((b, n)),
    }


def ascent(fields: dict[str, np.ndarray], beta: float) -> np.ndarray:
    """The plain update's direction, from the independent reference: weights 0, lr 1."""
    n = fields["log_prob_grads"].shape[1]
    return np.asarray(reference_weights({"weights": np.zeros(n), **fields}, beta, 1.0))


@pytest.mark.parametrize(
    "settings_",
    [
        {"type": "adamw", "betas": [0.9, 0.95]},
        {"type": "adam", "amsgrad": True},
        {"type": "sgd", "momentum": 0.9, "nesterov": True},
    ],
)
def test_the_helper_keeps_the_state_between_steps(rlhf: Client, settings_: dict[str, Any]) -> None:
    w0 = np.array([0.5, -0.2, 0.1, 0.0])
    opt = Optimizer(rlhf, w0, lr=0.05, beta=0.2, **settings_)
    batches = [batch(k) for k in range(3)]
    for k, fields in enumerate(batches, 1):
        result = opt.step(fields)
        assert result.stats.optimizer_step == k
        assert opt.state is not None
        assert opt.state["step"] == k
    expected, state = reference_steps(
        w0, [ascent(fields, 0.2) for fields in batches], 0.05, settings_
    )
    np.testing.assert_allclose(opt.weights, expected, rtol=1e-12)
    assert set(opt.state_dict()) == set(state)
    for name in set(state) - {"step"}:
        np.testing.assert_allclose(opt.state_dict()[name], state[name], rtol=1e-12)


def test_update_takes_the_state_a_result_returned(rlhf: Client) -> None:
    fields = batch(5)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    first = rlhf.update(w, *fields.values(), beta=0.1, lr=0.1, optimizer={"type": "adam"})
    assert first.optimizer_state is not None
    assert set(first.optimizer_state) == {"step", "exp_avg", "exp_avg_sq"}
    second = rlhf.update(
        first.weights,
        *fields.values(),
        beta=0.1,
        lr=0.1,
        optimizer={"type": "adam"},
        optimizer_state=first.optimizer_state,
    )
    expected, _ = reference_steps(w, [ascent(fields, 0.1)] * 2, 0.1, {"type": "adam"})
    np.testing.assert_allclose(second.weights, expected, rtol=1e-12)
    assert second.optimizer_state is not None
    assert second.optimizer_state["step"] == 2


def test_a_result_without_optimizer_has_no_state(rlhf: Client) -> None:
    result = rlhf.update(np.ones(4), *batch(6).values(), beta=0.1, lr=0.1)
    assert result.optimizer_state is None
    assert result.stats.optimizer_step is None


def test_the_helper_resumes_from_a_torch_like_state(rlhf: Client) -> None:
    # torch keeps the step as a float tensor; 3.0 is read as the integer 3.
    fields = batch(7)
    state = {"step": 3.0, "momentum_buffer": [0.1, 0.2, 0.3, 0.4]}
    opt = Optimizer(rlhf, np.zeros(4), lr=0.1, beta=0.0, type="sgd", momentum=0.5, state=state)
    opt.step(fields)
    d = ascent(fields, 0.0)
    buf = 0.5 * np.array([0.1, 0.2, 0.3, 0.4]) - d
    np.testing.assert_allclose(opt.state_dict()["momentum_buffer"], buf, rtol=1e-13)
    np.testing.assert_allclose(opt.weights, -0.1 * buf, rtol=1e-13)
    assert opt.state_dict()["step"] == 4


def test_a_state_of_the_wrong_length_is_refused_before_sending(rlhf: Client) -> None:
    with pytest.raises(ValueError, match=r"optimizer_state\['exp_avg'\] has shape \(2,\)"):
        rlhf.update(
            np.ones(4),
            *batch(8).values(),
            beta=0.1,
            lr=0.1,
            optimizer={"type": "adam"},
            optimizer_state={"step": 0, "exp_avg": [0.0, 0.0]},
        )


def test_the_services_refusal_names_the_field(rlhf: Client) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        rlhf.update(
            np.ones(4),
            *batch(9).values(),
            beta=0.1,
            lr=0.1,
            optimizer={"type": "sgd", "nesterov": True},
        )
    assert "Nesterov momentum requires a momentum and zero dampening" in str(caught.value)


def test_a_batch_without_an_array_is_refused(rlhf: Client) -> None:
    opt = Optimizer(rlhf, np.ones(4), lr=0.1, beta=0.1)
    with pytest.raises(ValueError, match="the batch has no log_prob_grads"):
        opt.step({name: value for name, value in batch(1).items() if name in BATCH[:3]})
