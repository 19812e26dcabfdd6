"""The rules every input of an update follows: shapes, ranks, domains, finite values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.core import InvalidInputError, UpdateOverflowError, rlhf_weight_update
from tests.helpers.reference import EXAMPLE

OK_ARGS: dict[str, Any] = dict(EXAMPLE)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"weights": []}, r"weights is empty", id="empty-weights"),
        pytest.param({"rewards": []}, r"rewards is empty", id="empty-rewards"),
        pytest.param({"weights": [[1.0, 1.0]]}, r"weights is 2-D; expected 1-D", id="2d-weights"),
        pytest.param({"rewards": 1.0}, r"rewards is 0-D; expected 1-D", id="scalar-rewards"),
        pytest.param(
            {"policy_log_probs": [-1.5]},
            r"policy_log_probs has 1 entries; expected 2 \(= len\(rewards\)\)",
            id="short-policy",
        ),
        pytest.param(
            {"ref_log_probs": [-1.5, -1.5, 0.0]},
            r"ref_log_probs has 3 entries; expected 2",
            id="long-ref",
        ),
        pytest.param(
            {"log_prob_grads": [[0.5, -0.5]]},
            r"log_prob_grads has 1 rows; expected 2 \(= len\(rewards\)\)",
            id="grads-rows",
        ),
        pytest.param(
            {"log_prob_grads": [[0.5], [0.5]]},
            r"log_prob_grads has rows of 1 entries; expected 2 \(= len\(weights\)\)",
            id="grads-cols",
        ),
        pytest.param(
            {"log_prob_grads": [0.5, -0.5]}, r"log_prob_grads is 1-D; expected 2-D", id="grads-1d"
        ),
        # Empty arrays are named as empty, whatever shape NumPy gives them.
        pytest.param(
            {"policy_log_probs": []},
            r"policy_log_probs is empty; expected 2 entries \(= len\(rewards\)\)",
            id="empty-policy",
        ),
        pytest.param(
            {"log_prob_grads": []},
            r"log_prob_grads is empty; expected shape \(B, N\)",
            id="empty-grads",
        ),
        pytest.param(
            {"log_prob_grads": np.zeros((0, 2))},
            r"log_prob_grads is empty; expected 2 rows \(= len\(rewards\)\)",
            id="no-rows",
        ),
        pytest.param(
            {"log_prob_grads": [[], []]},
            r"log_prob_grads has empty rows; expected 2 entries \(= len\(weights\)\)",
            id="empty-rows",
        ),
        pytest.param(
            {"log_prob_grads": [[0.5, -0.5], [1.0]]}, r"log_prob_grads is not a 2-D", id="ragged"
        ),
        pytest.param({"weights": ["a", "b"]}, r"weights is not a 1-D array", id="strings"),
        pytest.param({"weights": [10**400, 1]}, r"weights is not a 1-D array", id="huge-int"),
        pytest.param({"beta": 10**400}, r"beta is not a number", id="huge-int-beta"),
        pytest.param({"weights": [1.0, np.nan]}, r"weights\[1\] is nan", id="nan-weight"),
        pytest.param({"rewards": [np.inf, 1.0]}, r"rewards\[0\] is inf", id="inf-reward"),
        pytest.param(
            {"log_prob_grads": [[0.5, -0.5], [0.5, -np.inf]]},
            r"log_prob_grads\[1\]\[1\] is -inf",
            id="inf-grad",
        ),
        pytest.param({"beta": -0.1}, r"beta is -0.1; expected a finite number >= 0", id="neg-beta"),
        pytest.param({"lr": np.nan}, r"lr is nan; expected a finite number >= 0", id="nan-lr"),
        pytest.param({"lr": [0.1]}, r"lr has shape \(1,\); expected a scalar", id="vector-lr"),
        pytest.param({"beta": "x"}, r"beta is not a number", id="string-beta"),
    ],
)
def test_raise_error(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match) as info:
        rlhf_weight_update(**dict(OK_ARGS, **changes))
    assert isinstance(info.value, ValueError)
    assert info.value.problems


def test_every_shape_problem_is_reported_at_once() -> None:
    args = dict(OK_ARGS, policy_log_probs=[0.0], ref_log_probs=[0.0], log_prob_grads=[[1.0]])
    with pytest.raises(InvalidInputError) as info:
        rlhf_weight_update(**args)
    assert [p.loc for p in info.value.problems] == [
        ("policy_log_probs",),
        ("ref_log_probs",),
        ("log_prob_grads",),
        ("log_prob_grads",),
    ]


def test_a_finite_sum_that_overflows_is_not_mistaken_for_a_non_finite_input() -> None:
    big = 1.7e308
    new = rlhf_weight_update([big, big], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [[big, big]] * 2, 0, 1)
    assert new.tolist() == [big, big]


# The gradients' pass for values that are not finite is deferred to the product (a finite
# gradient with no zero coefficient proves them finite): the answers are those of a check
# of every input first.


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_gradient_in_a_row_whose_coefficient_is_0_is_named(bad: float) -> None:
    # adjusted = rewards - beta * kl = [0, 1]: row 0 adds 0 * bad to the product, a term a
    # product may skip, so the gradient cannot vouch for that row.
    args = dict(OK_ARGS, rewards=[0.0, 1.0], log_prob_grads=[[0.5, bad], [0.5, -0.5]])
    with pytest.raises(InvalidInputError) as info:
        rlhf_weight_update(**args)
    assert [p.loc for p in info.value.problems] == [("log_prob_grads", 0, 1)]
    assert info.value.problems[0].msg == f"log_prob_grads[0][1] is {bad}; expected a finite number"


def test_non_finite_gradients_are_listed_with_the_other_non_finite_inputs() -> None:
    args = dict(OK_ARGS, weights=[1.0, np.nan], log_prob_grads=[[0.5, -0.5], [np.inf, -0.5]])
    with pytest.raises(InvalidInputError) as info:
        rlhf_weight_update(**args)
    assert [p.loc for p in info.value.problems] == [("weights", 1), ("log_prob_grads", 1, 0)]


def test_a_non_finite_gradient_is_the_answer_before_a_later_overflow() -> None:
    # The KL estimate 1e308 - (-1e308) overflows; without the gradients' inf that is the
    # answer (an UpdateOverflowError), with it the input comes first.
    args = dict(
        OK_ARGS,
        policy_log_probs=[1e308, -1.5],
        ref_log_probs=[-1e308, -1.5],
        log_prob_grads=[[0.5, -0.5], [-np.inf, -0.5]],
    )
    with pytest.raises(InvalidInputError) as info:
        rlhf_weight_update(**args)
    assert [p.loc for p in info.value.problems] == [("log_prob_grads", 1, 0)]
    finite = dict(args, log_prob_grads=[[0.5, -0.5], [0.5, -0.5]])
    with pytest.raises(UpdateOverflowError) as overflow:
        rlhf_weight_update(**finite)
    assert overflow.value.problems[0].loc == ("kl", 0)
