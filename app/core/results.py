"""What an update returns, and the errors it raises: plain data, no arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from .optimizers import OptimizerState

__all__ = [
    "COLUMN_STATS",
    "MAX_LISTED_PROBLEMS",
    "AnyFloatArray",
    "AppliedStep",
    "ColumnPartials",
    "FloatArray",
    "GradientResult",
    "InputProblem",
    "InvalidInputError",
    "KlEstimates",
    "Loc",
    "RatioStats",
    "TisStats",
    "UpdateError",
    "UpdateOverflowError",
    "UpdateResult",
    "UpdateStats",
    "format_loc",
]

Loc = tuple[str | int, ...]
FloatArray = NDArray[np.float64]
# float64, or float32 as a binary body may send (see `app.core.update.in_weights_dtype`).
AnyFloatArray = NDArray[np.float64] | NDArray[np.float32]
# More problems than this in one error are summarised, not listed: a million bad entries
# help nobody.
MAX_LISTED_PROBLEMS = 20


def format_loc(loc: Loc) -> str:
    """A location as the caller writes it, e.g. ``log_prob_grads[2][0]``; "body" for ().

    >>> format_loc(("log_prob_grads", 2, 0)), format_loc(())
    ('log_prob_grads[2][0]', 'body')
    """
    head, *indices = loc or ("body",)
    return str(head) + "".join(f"[{i}]" for i in indices)


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One thing wrong with the inputs: where (`loc`) and what was expected (`msg`)."""

    loc: Loc
    msg: str


class UpdateError(ValueError):
    """The update cannot be computed for these inputs; `problems` says why, field by field."""

    def __init__(self, problems: Sequence[InputProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problem.msg for problem in self.problems))


class InvalidInputError(UpdateError):
    """An argument has the wrong shape, or holds a value outside its domain."""


class UpdateOverflowError(UpdateError):
    """Valid inputs whose update (or one of its statistics) overflows float64."""


@dataclass(frozen=True, slots=True)
class KlEstimates:
    """Batch means of the k1, k2 and k3 KL estimates, whatever estimator the update used.

    An entry is None when that mean overflows float64 (only for absurd log-ratios).
    """

    k1: float | None
    k2: float | None
    k3: float | None


@dataclass(frozen=True, slots=True)
class RatioStats:
    """What a clipped surrogate did to the batch (`app.core.policy_loss`).

    Every fraction is of all B samples. ``clip_frac_high``: ``A > 0`` and ``rho > 1 +
    eps_high``; ``clip_frac_low``: ``A < 0`` and ``rho < 1 - eps_low``; ``clip_frac``
    their sum (for "cispo" the fraction with ``rho != clip(rho)``, as verl counts);
    ``dual_clip_frac``: ``A < 0`` and ``rho > dual_clip_c`` (None without dual clip);
    ``active_frac``: a policy coefficient that is not 0; ``approx_kl_old``:
    ``mean(old - logp)``.
    """

    ratio_mean: float
    ratio_min: float
    ratio_max: float
    clip_frac: float
    clip_frac_low: float
    clip_frac_high: float
    dual_clip_frac: float | None
    log_ratio_clamped_frac: float
    active_frac: float
    approx_kl_old: float


@dataclass(frozen=True, slots=True)
class TisStats:
    """The truncated importance weights after truncation or masking and normalisation.

    ``tis_truncated_frac``: weights changed by either bound ("truncate");
    ``tis_masked_frac``: weights set to 0 ("mask"); ``tis_ess = 1 / mean((w / mean w)**2)``.
    """

    tis_weight_mean: float
    tis_weight_min: float
    tis_weight_max: float
    tis_truncated_frac: float
    tis_masked_frac: float
    tis_ess: float


@dataclass(frozen=True, slots=True)
class UpdateStats:
    """Diagnostics of one update, for the caller's logs.

    `ratio`, `kl_loss_mean`, `tis` and `optimizer_step` are None unless their option is
    on: a policy loss other than "pg", `kl_loss_coef` > 0, `tis_mode`, `optimizer`.
    """

    kl_mean: float
    kl_max: float
    reward_mean: float
    reward_std: float
    adjusted_reward_mean: float
    advantage_mean: float
    advantage_std: float
    grad_norm: float
    clipped: bool
    update_norm: float
    next_beta: float | None
    kl_estimates: KlEstimates
    ratio: RatioStats | None = None
    kl_loss_mean: float | None = None
    tis: TisStats | None = None
    optimizer_step: int | None = None


# The statistics reduced over the columns (or stepped with them): a block of a sharded
# update has its own, which the client replaces by the whole's. The others are the batch's,
# the same in every block.
COLUMN_STATS = ("grad_norm", "clipped", "update_norm", "optimizer_step")


@dataclass(frozen=True, slots=True)
class ColumnPartials:
    """A block's chunk partials (`app.core.norms.chunk_partials`), each of shape (k, 2).

    `grad`: of the gradient before clipping; `step`: after clipping, when it clipped;
    `update`: of ``new_weights - weights``, when the step is an optimizer's rather than
    ``weights + lr * grad`` (whose norm is ``lr`` times the step's).
    """

    grad: FloatArray | None
    step: FloatArray | None = None
    update: FloatArray | None = None


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The new weights (shape (N,), float64 unless cast) and the diagnostics of the step."""

    weights: AnyFloatArray
    stats: UpdateStats
    # The optimizer's new state, with `optimizer` only (`app.core.optimizers`).
    optimizer_state: OptimizerState | None = None
    # With `column_offset` only: the block's partials of the norms over N.
    partials: ColumnPartials | None = None


@dataclass(frozen=True, slots=True)
class GradientResult:
    """A block's gradient before clipping, its chunk partials and the batch's statistics.

    In `stats`, those of `COLUMN_STATS` are the block's own, as if it were the whole.
    """

    grad: FloatArray
    partials: FloatArray
    stats: UpdateStats


@dataclass(frozen=True, slots=True)
class AppliedStep:
    """A block's step from its gradient: new weights, new state, and its partials."""

    weights: AnyFloatArray
    optimizer_state: OptimizerState | None
    clipped: bool
    partials: ColumnPartials
