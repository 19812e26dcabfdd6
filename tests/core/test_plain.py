"""The default-options path (`app.core.plain`) against the general path, bit for bit.

`compute_update` with no options (or `DEFAULT_OPTIONS`) answers from `plain_update` when
it can; a fresh `UpdateOptions()` is the same options by value but not that instance, so
it takes the general path: comparing the two shows the shortcut changes no bit, and that
it declines whatever the general path would refuse or handle on its own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app.core.plain as plain_module
import app.core.update as core_update
from app.core import DEFAULT_OPTIONS, UpdateOptions, UpdateResult, compute_update
from app.core.plain import plain_update
from app.core.results import UpdateError
from tests.helpers.reference import EXAMPLE

ARRAYS = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")
# Magnitudes that reach the ends of float64: products and sums that overflow, squares that
# underflow, subnormals, signed zeros.
EDGE_VALUES = [0.0, -0.0, 5e-324, -2.2e-308, 1e-160, 1.0, -3.5, 1e154, 1e300, -1.7e308]


def general(args: dict[str, Any]) -> UpdateResult:
    """The general path, with the defaults as a separate instance."""
    return compute_update(**args, options=UpdateOptions())


def shortcut(args: dict[str, Any]) -> UpdateResult | None:
    """`plain_update` as `compute_update` runs it, overflow looked for rather than warned of."""
    with np.errstate(over="ignore", invalid="ignore"):
        return plain_update(**args)


def bits(result: UpdateResult) -> tuple[bytes, str, str]:
    """The weights' bytes and dtype, and every statistic by its repr (-0.0 is not 0.0)."""
    return (
        result.weights.tobytes(),
        str(result.weights.dtype),
        repr(dataclasses.astuple(result.stats)),
    )


def outcome(args: dict[str, Any], options: UpdateOptions | None) -> tuple[Any, ...]:
    """The result's bits, or the error's type and problems."""
    try:
        return bits(compute_update(**args, options=options))
    except UpdateError as exc:
        return (type(exc), exc.problems)


@st.composite
def update_inputs(draw: st.DrawFn, *, edges: bool) -> dict[str, Any]:
    b = draw(st.integers(1, 9))
    n = draw(st.integers(1, 9))

    def values(shape: tuple[int, ...]) -> Any:
        if edges:
            return draw(hnp.arrays(np.float64, shape, elements=st.sampled_from(EDGE_VALUES)))
        scale = 10.0 ** draw(st.integers(-20, 20))
        unit = hnp.arrays(np.float64, shape, elements=st.floats(-1, 1, allow_subnormal=False))
        return draw(unit) * scale

    return {
        "weights": values((n,)),
        "rewards": values((b,)),
        "policy_log_probs": values((b,)),
        "ref_log_probs": values((b,)),
        "log_prob_grads": values((b, n)),
        "beta": draw(st.sampled_from([0.0, 0.1, 1.0, 3.0])),
        "lr": draw(st.sampled_from([0.0, 1e-3, 0.5, 10.0])),
    }


@settings(max_examples=300, deadline=None)
@given(update_inputs(edges=False))
def test_ordinary_updates_take_the_plain_path_and_give_the_general_bits(
    args: dict[str, Any],
) -> None:
    plain = shortcut(args)
    kl = args["policy_log_probs"] - args["ref_log_probs"]
    if not np.all(args["rewards"] - args["beta"] * kl):
        assert plain is None  # a coefficient of 0 is left to the general path (below)
        return
    assert plain is not None
    assert bits(plain) == bits(general(args))
    assert bits(compute_update(**args)) == bits(plain)


@pytest.mark.slow
@settings(max_examples=600, deadline=None)
@given(update_inputs(edges=True))
def test_at_the_ends_of_float64_it_gives_the_general_bits_or_declines(
    args: dict[str, Any],
) -> None:
    plain = shortcut(args)
    if plain is not None:
        assert bits(plain) == bits(general(args))
    assert outcome(args, None) == outcome(args, UpdateOptions())


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("lr", [0.0, 0.1])
def test_a_value_that_is_not_finite_is_declined_and_refused_as_before(
    name: str, bad: float, lr: float
) -> None:
    rng = np.random.default_rng(7)
    args: dict[str, Any] = {
        "weights": rng.normal(size=5),
        "rewards": rng.normal(size=3),
        "policy_log_probs": rng.normal(size=3),
        "ref_log_probs": rng.normal(size=3),
        "log_prob_grads": rng.normal(size=(3, 5)),
        "beta": 0.1,
        "lr": lr,
    }
    array = args[name].copy()
    array.flat[array.size - 1] = bad
    args[name] = array
    assert shortcut(args) is None
    refused = outcome(args, None)
    assert isinstance(refused[0], type)  # an error's type: refused
    assert refused == outcome(args, UpdateOptions())
    assert name in repr(refused)


def test_a_gradient_that_is_not_finite_behind_a_zero_coefficient_is_declined() -> None:
    # Sample 0's adjusted reward is exactly 0 (1 - 1 * 1): 0 * inf is left to the general
    # path, which names the gradient entry.
    args: dict[str, Any] = {
        "weights": np.ones(2),
        "rewards": np.array([1.0, 2.0]),
        "policy_log_probs": np.array([0.0, 0.0]),
        "ref_log_probs": np.array([-1.0, 0.0]),
        "log_prob_grads": np.array([[math.inf, 1.0], [1.0, 1.0]]),
        "beta": 1.0,
        "lr": 0.1,
    }
    assert shortcut(args) is None
    refused = outcome(args, None)
    assert refused == outcome(args, UpdateOptions())
    assert "('log_prob_grads', 0, 0)" in repr(refused)


def test_a_zero_coefficient_with_finite_gradients_gets_the_general_answer() -> None:
    args: dict[str, Any] = {
        "weights": np.array([1.0, -0.0]),
        "rewards": np.array([1.0, 2.0]),
        "policy_log_probs": np.array([0.0, 0.0]),
        "ref_log_probs": np.array([-1.0, 0.0]),
        "log_prob_grads": np.array([[3.0, 1.0], [1.0, 0.0]]),
        "beta": 1.0,
        "lr": 0.1,
    }
    assert shortcut(args) is None
    assert outcome(args, None) == outcome(args, UpdateOptions())


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("weights", []),
        ("rewards", np.zeros(0)),
        ("policy_log_probs", np.zeros(2)),
        ("log_prob_grads", np.zeros((3, 5))),
        ("log_prob_grads", np.zeros(12)),
        ("weights", np.zeros((1, 4))),
        ("weights", ["a", "b", "c", "d"]),
        ("beta", -1.0),
        ("lr", math.inf),
        ("lr", 1),  # not a float: np.asarray's reading is the general path's
        ("beta", np.float64(0.5)),
    ],
)
def test_what_is_not_plain_float_input_of_the_right_shapes_is_declined(
    change: str, value: Any
) -> None:
    args: dict[str, Any] = {
        "weights": np.ones(4),
        "rewards": np.ones(3),
        "policy_log_probs": np.zeros(3),
        "ref_log_probs": np.zeros(3),
        "log_prob_grads": np.ones((3, 4)),
        "beta": 0.1,
        "lr": 0.1,
        change: value,
    }
    assert shortcut(args) is None
    assert outcome(args, None) == outcome(args, UpdateOptions())


def test_lists_and_float32_arrays_are_read_as_the_general_path_reads_them() -> None:
    rng = np.random.default_rng(3)
    args: dict[str, Any] = {
        "weights": rng.normal(size=6).astype(np.float32),
        "rewards": rng.normal(size=4).tolist(),
        "policy_log_probs": rng.normal(size=4).astype(np.float32),
        "ref_log_probs": rng.normal(size=4).tolist(),
        "log_prob_grads": rng.normal(size=(4, 6)).astype(np.float32),
        "beta": 0.05,
        "lr": 0.01,
    }
    plain = shortcut(args)
    assert plain is not None
    assert bits(plain) == bits(general(args))


def test_no_options_and_the_shared_defaults_take_the_plain_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def general_path(*args: object, **kwargs: object) -> None:
        msg = "the general path ran"
        raise AssertionError(msg)

    monkeypatch.setattr(core_update, "check_inputs", general_path)
    for options in (None, DEFAULT_OPTIONS):
        assert compute_update(**EXAMPLE, options=options).weights.tolist() == [1.05, 0.95]
    with pytest.raises(AssertionError, match="general path"):
        compute_update(**EXAMPLE, options=UpdateOptions())


def test_a_large_update_takes_the_tiled_kernel_with_the_same_bits() -> None:
    rng = np.random.default_rng(11)
    b, n = 4, 70_000  # past SMALL_ELEMENTS and TILE_COLUMNS, and two norm chunks
    args: dict[str, Any] = {
        "weights": rng.normal(size=n),
        "rewards": rng.normal(size=b),
        "policy_log_probs": rng.normal(size=b),
        "ref_log_probs": rng.normal(size=b),
        "log_prob_grads": rng.normal(size=(b, n)),
        "beta": 0.2,
        "lr": 1e-3,
    }
    plain = shortcut(args)
    assert plain is not None
    assert bits(plain) == bits(general(args))


@pytest.mark.parametrize("name", ["rewards", "policy_log_probs", "ref_log_probs"])
def test_a_value_that_is_not_finite_in_a_batch_array_is_declined_before_the_gradient(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def gradient(*args: object) -> None:
        msg = "the gradient was computed"
        raise AssertionError(msg)

    monkeypatch.setattr(plain_module, "weighted_row_sum", gradient)
    args: dict[str, Any] = {**EXAMPLE, name: [1.0, math.nan]}
    assert shortcut(args) is None
