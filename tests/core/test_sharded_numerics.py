"""A column-sharded update, block by block, equals the single update bit for bit.

Blocks of the columns go through the core as the service's routes run them: one
`compute_update` with `column_offset` without clipping; `compute_gradient`, the norm
combined from every block's partials, then `apply_gradient` with it when clipping. The
shape is just past 7 chunks, so that 1, 2, 3, 5 and 7 shards cut at chunk boundaries
and leave a short last block.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from app.core import (
    InvalidInputError,
    UpdateOptions,
    UpdateOverflowError,
    UpdateResult,
    compute_update,
    in_weights_dtype,
)
from app.core.norms import CHUNK_COLUMNS, norm_of_partials
from app.core.optimizers import Optimizer, OptimizerState
from app.core.update import apply_gradient, compute_gradient

N = 7 * CHUNK_COLUMNS + 123
B = 3
SHARDS = (1, 2, 3, 5, 7)
OPTIMIZERS: dict[str, Optimizer | None] = {
    "none": None,
    "sgd": Optimizer("sgd"),
    "sgd-decay": Optimizer("sgd", weight_decay=0.1),
    "momentum": Optimizer("sgd", momentum=0.9, dampening=0.1),
    "nesterov": Optimizer("sgd", momentum=0.9, nesterov=True),
    "adam": Optimizer("adam", weight_decay=0.05),
    "adamw": Optimizer("adamw"),
    "amsgrad": Optimizer("adamw", amsgrad=True),
}
# Off; binding (the norm is about 7); not binding.
CLIPS = {"off": None, "binds": 1.0, "loose": 1e6}


def _batch(dtype: type[np.floating[Any]]) -> dict[str, Any]:
    rng = np.random.default_rng(21)
    policy = rng.standard_normal(B) - 3.0
    return {
        "weights": rng.standard_normal(N).astype(dtype),
        "rewards": rng.standard_normal(B),
        "policy_log_probs": policy,
        "ref_log_probs": policy + 0.1 * rng.standard_normal(B),
        # Entries over many binades, so that any change in the order of a sum shows.
        "log_prob_grads": rng.standard_normal((B, N)) * 10.0 ** rng.integers(-3, 3, (B, N)),
    }


def _single(batch: dict[str, Any], options: UpdateOptions) -> UpdateResult:
    result = compute_update(**batch, beta=0.1, lr=0.01, options=options)
    return in_weights_dtype(result, batch["weights"].dtype)


def _sharded(batch: dict[str, Any], options: UpdateOptions, shards: int) -> UpdateResult:
    """The update as a sharded client assembles it from the blocks' answers."""
    width = math.ceil(N / shards / CHUNK_COLUMNS) * CHUNK_COLUMNS
    blocks = [slice(o, min(o + width, N)) for o in range(0, N, width)]
    state = options.optimizer_state

    def block_options(block: slice) -> UpdateOptions:
        vectors = (
            {} if state is None else {k: np.asarray(v)[block] for k, v in state.vectors().items()}
        )
        block_state = None if state is None else OptimizerState(step=state.step, **vectors)
        return UpdateOptions(
            max_grad_norm=options.max_grad_norm,
            optimizer=options.optimizer,
            optimizer_state=block_state,
            column_offset=block.start,
        )

    def block_batch(block: slice) -> dict[str, Any]:
        return {
            **batch,
            "weights": batch["weights"][block],
            "log_prob_grads": batch["log_prob_grads"][:, block],
        }

    dtype = batch["weights"].dtype
    if options.max_grad_norm is None:
        answers = [
            in_weights_dtype(
                compute_update(**block_batch(b), beta=0.1, lr=0.01, options=block_options(b)),
                dtype,
            )
            for b in blocks
        ]
        parts = [a.partials for a in answers]
        assert all(p is not None for p in parts)
        grad_norm = norm_of_partials([p.grad for p in parts if p and p.grad is not None])
        first = answers[0].stats
        clipped = False
        steps = answers
        step_parts: list[Any] = [p.update for p in parts if p is not None]
    else:
        gradients = [
            compute_gradient(**block_batch(b), beta=0.1, lr=0.01, options=block_options(b))
            for b in blocks
        ]
        grad_norm = norm_of_partials([g.partials for g in gradients])
        applied = [
            in_weights_dtype(
                apply_gradient(
                    batch["weights"][b],
                    g.grad,
                    lr=0.01,
                    grad_norm=grad_norm,
                    options=block_options(b),
                ),
                dtype,
            )
            for b, g in zip(blocks, gradients, strict=True)
        ]
        first = gradients[0].stats
        clipped = applied[0].clipped
        assert {a.clipped for a in applied} == {clipped}
        steps = applied  # type: ignore[assignment]
        step_parts = [a.partials.update for a in applied]
    step_norm = grad_norm
    if clipped:
        step_norm = norm_of_partials([a.partials.step for a in applied])  # type: ignore[misc]
    if step_parts[0] is not None:
        update_norm = norm_of_partials([p for p in step_parts if p is not None])
    else:
        update_norm = 0.01 * step_norm
    new_states = [s.optimizer_state for s in steps]
    new_state = None
    if new_states[0] is not None:
        vectors = {
            name: np.concatenate([np.asarray(s.vectors()[name]) for s in new_states if s])
            for name in new_states[0].vectors()
        }
        new_state = OptimizerState(step=new_states[0].step, **vectors)
    stats = type(first)(
        **{
            **{name: getattr(first, name) for name in type(first).__slots__},
            "grad_norm": grad_norm,
            "clipped": clipped,
            "update_norm": update_norm,
            "optimizer_step": None if new_state is None else new_state.step,
        }
    )
    weights = np.concatenate([s.weights for s in steps])
    return UpdateResult(weights=weights, stats=stats, optimizer_state=new_state)


def _assert_identical(single: UpdateResult, sharded: UpdateResult) -> None:
    assert single.weights.dtype == sharded.weights.dtype
    assert np.array_equal(single.weights, sharded.weights)
    assert single.stats == sharded.stats
    if single.optimizer_state is None:
        assert sharded.optimizer_state is None
        return
    assert sharded.optimizer_state is not None
    assert single.optimizer_state.step == sharded.optimizer_state.step
    mine, theirs = single.optimizer_state.vectors(), sharded.optimizer_state.vectors()
    assert set(mine) == set(theirs)
    for name, vector in mine.items():
        assert np.array_equal(np.asarray(vector), np.asarray(theirs[name])), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_shard_count_gives_the_single_update_bit_for_bit(
    optimizer: str, clip: str, dtype: type[np.floating[Any]]
) -> None:
    batch = _batch(dtype)
    rule = OPTIMIZERS[optimizer]
    options = UpdateOptions(max_grad_norm=CLIPS[clip], optimizer=rule)
    if rule is not None and rule.vectors:
        # A second step, from a state with every vector the rule keeps.
        first = compute_update(**batch, beta=0.1, lr=0.01, options=options)
        options = UpdateOptions(
            max_grad_norm=CLIPS[clip], optimizer=rule, optimizer_state=first.optimizer_state
        )
    single = _single(batch, options)
    if clip == "binds":
        assert single.stats.clipped
    elif clip == "loose":
        assert not single.stats.clipped
    for shards in SHARDS:
        _assert_identical(single, _sharded(batch, options, shards))


def test_a_block_names_a_bad_column_by_its_index_in_the_whole() -> None:
    batch = _batch(np.float64)
    column = 5 * CHUNK_COLUMNS + 7
    grads = batch["log_prob_grads"].copy()
    grads[1, column] = np.nan
    bad = {**batch, "log_prob_grads": grads}
    with pytest.raises(InvalidInputError) as whole:
        compute_update(**bad, beta=0.1, lr=0.01)
    block = slice(4 * CHUNK_COLUMNS, 6 * CHUNK_COLUMNS)
    with pytest.raises(InvalidInputError) as part:
        compute_update(
            **{**bad, "weights": bad["weights"][block], "log_prob_grads": grads[:, block]},
            beta=0.1,
            lr=0.01,
            options=UpdateOptions(column_offset=block.start),
        )
    assert part.value.problems == whole.value.problems
    assert whole.value.problems[0].loc == ("log_prob_grads", 1, column)


def test_a_block_names_an_overflowing_weight_by_its_index_in_the_whole() -> None:
    weights = np.zeros(2 * CHUNK_COLUMNS)
    weights[CHUNK_COLUMNS + 3] = 1.7e308
    grads = np.ones((1, weights.size))
    args: dict[str, Any] = {
        "rewards": [1.0],
        "policy_log_probs": [0.0],
        "ref_log_probs": [0.0],
        "beta": 0.0,
        "lr": 1e308,
    }
    with pytest.raises(UpdateOverflowError) as whole:
        compute_update(weights, log_prob_grads=grads, **args)
    block = slice(CHUNK_COLUMNS, 2 * CHUNK_COLUMNS)
    with pytest.raises(UpdateOverflowError) as part:
        compute_update(
            weights[block],
            log_prob_grads=grads[:, block],
            **args,
            options=UpdateOptions(column_offset=CHUNK_COLUMNS),
        )
    assert part.value.problems == whole.value.problems


@pytest.mark.parametrize("offset", [-CHUNK_COLUMNS, 1, CHUNK_COLUMNS + 1, 2.0, True])
def test_column_offset_must_be_a_whole_number_of_chunks(offset: object) -> None:
    batch = _batch(np.float64)
    with pytest.raises(InvalidInputError) as caught:
        compute_update(**batch, beta=0.1, lr=0.01, options=UpdateOptions(column_offset=offset))  # type: ignore[arg-type]
    (problem,) = caught.value.problems
    assert problem.loc == ("column_offset",)
    assert f"a multiple of {CHUNK_COLUMNS}" in problem.msg


def test_column_offset_with_clipping_is_refused_on_the_one_call_path() -> None:
    batch = _batch(np.float64)
    options = UpdateOptions(column_offset=0, max_grad_norm=1.0)
    with pytest.raises(InvalidInputError) as caught:
        compute_update(**batch, beta=0.1, lr=0.01, options=options)
    assert caught.value.problems[0].loc == ("column_offset",)
    assert "/update/grad" in caught.value.problems[0].msg


def test_without_column_offset_the_answer_has_no_partials() -> None:
    batch = _batch(np.float64)
    assert compute_update(**batch, beta=0.1, lr=0.01).partials is None
