"""The core against the independent `math.fsum` reference, over random shapes and magnitudes."""

from __future__ import annotations

import math
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import compute_update
from tests.helpers.reference import reference_update

EPS = np.finfo(np.float64).eps
TINY = np.finfo(np.float64).smallest_subnormal

# Hundreds of examples each: a property run, not the inner loop.
pytestmark = pytest.mark.slow


@st.composite
def update_inputs(draw: st.DrawFn) -> dict[str, Any]:
    b = draw(st.integers(1, 12))
    n = draw(st.integers(1, 12))

    # Each array gets its own magnitude, from 1e-30 to 1e30, so the terms of a column
    # can differ by many orders and cancel; values stay clear of float64 overflow.
    def values(shape: tuple[int, ...]) -> Any:
        scale = 10.0 ** draw(st.integers(-30, 30))
        unit = hnp.arrays(np.float64, shape, elements=st.floats(-1, 1, allow_subnormal=False))
        return draw(unit) * scale

    return {
        "weights": values((n,)),
        "rewards": values((b,)),
        "policy_log_probs": values((b,)),
        "ref_log_probs": values((b,)),
        "log_prob_grads": values((b, n)),
        "beta": draw(st.sampled_from([0.0, 0.01, 0.1, 1.0, 5.0])),
        "lr": draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.1, 1.0, 10.0])),
    }


@settings(max_examples=300, deadline=None)
@given(update_inputs())
def test_update_matches_the_fsum_reference(args: dict[str, Any]) -> None:
    as_lists = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    ref = reference_update(**as_lists)
    result = compute_update(**args)
    b = len(ref.kl)
    lr = float(args["lr"])
    for j, (got, want) in enumerate(zip(result.weights.tolist(), ref.weights, strict=True)):
        # Any summation order of B products is within B * eps * sum|terms| of the exact sum
        # (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, eq. 3.5);
        # / B, * lr and + w add a rounding each.
        grad_error = ((b + 2) * EPS * ref.abs_terms[j] + b * TINY) / b
        bound = lr * grad_error + 4 * EPS * (abs(want) + abs(lr * ref.grad[j])) + TINY
        assert abs(got - want) <= bound, (j, got, want, bound)


@settings(max_examples=200, deadline=None)
@given(update_inputs())
def test_stats_match_the_reference(args: dict[str, Any]) -> None:
    as_lists = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    ref = reference_update(**as_lists)
    stats = compute_update(**args).stats
    b = len(ref.kl)

    def mean_close(got: float, values: list[float]) -> bool:
        exact = math.fsum(values) / b
        return bool(abs(got - exact) <= 2 * b * EPS * math.fsum(map(abs, values)) / b + TINY)

    assert mean_close(stats.kl_mean, ref.kl)
    assert mean_close(stats.reward_mean, as_lists["rewards"])
    assert mean_close(stats.adjusted_reward_mean, ref.adjusted)
    # The norm of a gradient known to within its per-entry error bound.
    grad_error = math.hypot(*(((b + 2) * EPS * t + b * TINY) / b for t in ref.abs_terms))
    want = math.hypot(*ref.grad)
    assert abs(stats.grad_norm - want) <= grad_error + 8 * EPS * want + TINY
    lr = float(args["lr"])
    assert abs(stats.update_norm - lr * want) <= lr * grad_error + 8 * EPS * lr * want + TINY


@settings(max_examples=100, deadline=None)
@given(update_inputs())
def test_inputs_are_left_unchanged(args: dict[str, Any]) -> None:
    copies = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    compute_update(**args)
    for name, copy in copies.items():
        assert np.array_equal(args[name], copy), name
