"""The optimizer rules against an independent NumPy reference and against steps by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from app.core import UpdateOptions, compute_update
from app.core.optimizers import Optimizer, OptimizerState
from tests.helpers.batches import random_batch
from tests.helpers.optimizers import reference_steps

CONFIGS = [
    pytest.param({"type": "sgd", "momentum": 0.9}, id="sgd-momentum"),
    pytest.param({"type": "sgd", "momentum": 0.8, "dampening": 0.3}, id="sgd-dampening"),
    pytest.param({"type": "sgd", "momentum": 0.9, "nesterov": True}, id="sgd-nesterov"),
    pytest.param({"type": "sgd", "weight_decay": 0.05}, id="sgd-weight-decay"),
    pytest.param({"type": "sgd", "momentum": 0.5, "weight_decay": 0.1}, id="sgd-both"),
    pytest.param({"type": "adam"}, id="adam"),
    pytest.param({"type": "adam", "weight_decay": 0.1, "betas": (0.3, 0.9)}, id="adam-decay"),
    pytest.param({"type": "adamw"}, id="adamw"),
    pytest.param({"type": "adamw", "betas": (0.9, 0.95), "eps": 1e-6}, id="adamw-openrlhf"),
    pytest.param({"type": "adam", "amsgrad": True}, id="amsgrad"),
    pytest.param({"type": "adamw", "amsgrad": True, "weight_decay": 0.2}, id="adamw-amsgrad"),
]


def ascent(fields: dict[str, Any]) -> np.ndarray:
    """The update's direction d: the plain step from weights 0 with lr 1."""
    arrays = {k: v for k, v in fields.items() if k not in ("beta", "lr")}
    arrays["weights"] = np.zeros(len(fields["weights"]))
    return np.asarray(compute_update(**arrays, beta=fields["beta"], lr=1.0).weights)


def chained(fields: dict[str, Any], optimizer: dict[str, Any], calls: int) -> tuple[Any, Any]:
    """`calls` updates, each from the weights and state the previous one returned."""
    weights = np.asarray(fields["weights"])
    state = None
    for _ in range(calls):
        args = {**fields, "weights": weights}
        scalars = {"beta": args.pop("beta"), "lr": args.pop("lr")}
        options = UpdateOptions(optimizer=Optimizer(**optimizer), optimizer_state=state)
        result = compute_update(**args, **scalars, options=options)
        weights, state = result.weights, result.optimizer_state
        assert state is not None
        assert result.stats.optimizer_step == state.step
    return weights, state


@pytest.mark.parametrize("optimizer", CONFIGS)
def test_five_steps_equal_the_reference(optimizer: dict[str, Any]) -> None:
    # The same batch each call: d changes with the weights only through weight decay,
    # which enters the rule, not d; so d is the same five times.
    fields = random_batch(7, 6, 4)
    weights, state = chained(fields, optimizer, 5)
    expected, expected_state = reference_steps(
        np.asarray(fields["weights"]), [ascent(fields)] * 5, fields["lr"], optimizer
    )
    np.testing.assert_allclose(weights, expected, rtol=1e-13, atol=0)
    assert state.step == expected_state.pop("step") == 5
    assert set(state.vectors()) == set(expected_state)
    for name, value in expected_state.items():
        np.testing.assert_allclose(state.vectors()[name], value, rtol=1e-13, atol=0)


def test_adam_by_hand_moves_each_weight_by_lr_for_a_constant_gradient() -> None:
    # With the same g every step, m / (1 - beta1^t) = g and sqrt(v / (1 - beta2^t)) = |g|,
    # so each step is lr * |g| / (|g| + eps * sqrt(1 - beta2^t)) ... in the direction of d.
    fields = random_batch(3, 5, 3)
    d = ascent(fields)
    lr, eps = fields["lr"], 1e-8
    weights, state = chained(fields, {"type": "adam"}, 2)
    w0 = np.asarray(fields["weights"])
    moved = [lr * abs(x) / (abs(x) + eps) for x in d]
    expected = [w + 2 * math.copysign(m, x) for w, m, x in zip(w0, moved, d, strict=True)]
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    # m after two steps: (1 - 0.9^2) g = 0.19 g; v: (1 - 0.999^2) g^2 = 0.001999 g^2.
    np.testing.assert_allclose(state.exp_avg, -0.19 * d, rtol=1e-12)
    np.testing.assert_allclose(state.exp_avg_sq, 0.001999 * d**2, rtol=1e-12)


def test_sgd_momentum_by_hand_first_step_copies_then_dampens() -> None:
    fields = random_batch(4, 5, 3)
    d = ascent(fields)
    lr = fields["lr"]
    _, first = chained(fields, {"type": "sgd", "momentum": 0.9, "dampening": 0.5}, 1)
    weights, second = chained(fields, {"type": "sgd", "momentum": 0.9, "dampening": 0.5}, 2)
    # Step 1: buf = g (undamped); step 2: buf = 0.9 g + 0.5 g = 1.4 g; w = w0 + lr (1 + 1.4) d.
    np.testing.assert_array_equal(first.momentum_buffer, -d)
    np.testing.assert_allclose(second.momentum_buffer, -1.4 * d, rtol=1e-14)
    np.testing.assert_allclose(weights, np.asarray(fields["weights"]) + 2.4 * lr * d, rtol=1e-13)


def test_adamw_decays_the_weights_before_the_step() -> None:
    # lr 0 leaves everything but the moments: AdamW's decay w (1 - lr lambda) is 1.
    fields = {**random_batch(5, 4, 3), "lr": 0.0}
    weights, state = chained(fields, {"type": "adamw", "weight_decay": 0.5}, 1)
    np.testing.assert_array_equal(weights, fields["weights"])
    np.testing.assert_allclose(state.exp_avg, -0.1 * ascent(fields), rtol=1e-14)


def test_sgd_without_momentum_and_decay_is_the_plain_step_bit_for_bit() -> None:
    fields = random_batch(9, 8, 5)
    args = {k: v for k, v in fields.items() if k not in ("beta", "lr")}
    plain = compute_update(**args, beta=fields["beta"], lr=fields["lr"])
    sgd = compute_update(
        **args,
        beta=fields["beta"],
        lr=fields["lr"],
        options=UpdateOptions(optimizer=Optimizer(), optimizer_state=OptimizerState(step=3)),
    )
    assert sgd.weights.tobytes() == plain.weights.tobytes()
    assert sgd.stats.update_norm == plain.stats.update_norm
    assert sgd.optimizer_state == OptimizerState(step=4)
    assert plain.optimizer_state is None
    assert plain.stats.optimizer_step is None


def test_a_state_from_step_zero_with_moments_is_used_as_sent() -> None:
    # torch reads whatever exp_avg holds; step 0 only sets the bias correction to t = 1.
    fields = random_batch(6, 4, 2)
    d = ascent(fields)
    m0, v0 = np.array([0.5, -0.25]), np.array([0.01, 0.02])
    args = {k: v for k, v in fields.items() if k not in ("beta", "lr")}
    state = OptimizerState(step=0, exp_avg=m0, exp_avg_sq=v0)
    result = compute_update(
        **args,
        beta=fields["beta"],
        lr=fields["lr"],
        options=UpdateOptions(optimizer=Optimizer(type="adam"), optimizer_state=state),
    )
    g = -d
    m, v = m0 + 0.1 * (g - m0), 0.999 * v0 + 0.001 * g**2
    expected = np.asarray(fields["weights"]) - (fields["lr"] / 0.1) * m / (
        np.sqrt(v) / math.sqrt(0.001) + 1e-8
    )
    np.testing.assert_allclose(result.weights, expected, rtol=1e-12)
