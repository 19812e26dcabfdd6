"""The optional algorithm settings of an update, and the checks every caller goes through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .norms import CHUNK_COLUMNS
from .optimizers import Optimizer, OptimizerState
from .overflow import finite_or_nan
from .results import Loc

__all__ = [
    "BASELINES",
    "DEFAULT_OPTIONS",
    "FLOAT_SAMPLE_OPTIONS",
    "GRPO_SCALES",
    "INTEGER_SAMPLE_OPTIONS",
    "KL_ESTIMATORS",
    "KL_ESTIMATOR_ALIASES",
    "KL_LOSS_TYPES",
    "LOSS_AGGREGATIONS",
    "LOW_VAR_KL_CLAMP",
    "PER_TOKEN_FIELDS",
    "POLICY_LOSSES",
    "TIS_MODES",
    "Baseline",
    "Groups",
    "GrpoScale",
    "KlEstimator",
    "KlEstimatorName",
    "LossAgg",
    "PolicyLoss",
    "TisMode",
    "UpdateOptions",
    "group_id_problems",
    "option_problems",
    "per_token_message",
    "sequence_length_problems",
]

# The allowed values of each option, declared once: the core checks them, the request
# schema types its fields with them.
KlEstimatorName = Literal["k1", "k2", "k3", "abs"]
# verl's names for the same estimators are accepted too.
KlEstimator = Literal[KlEstimatorName, "kl", "mse", "low_var_kl"]
Baseline = Literal["none", "mean", "rloo", "grpo", "reinforce_pp", "opo"]
GrpoScale = Literal["std", "none", "batch"]
PolicyLoss = Literal["pg", "ppo_clip", "gspo", "cispo"]
LossAgg = Literal["seq_mean", "sum", "seq_mean_token_mean", "token_mean", "constant"]
TisMode = Literal["truncate", "mask"]

KL_ESTIMATOR_ALIASES: Mapping[str, KlEstimatorName] = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
KL_ESTIMATORS: tuple[str, ...] = get_args(KlEstimatorName) + tuple(KL_ESTIMATOR_ALIASES)
_CANONICAL: Mapping[str, KlEstimatorName] = {
    **{name: name for name in get_args(KlEstimatorName)},
    **KL_ESTIMATOR_ALIASES,
}
BASELINES: tuple[str, ...] = get_args(Baseline)
GRPO_SCALES: tuple[str, ...] = get_args(GrpoScale)
POLICY_LOSSES: tuple[str, ...] = get_args(PolicyLoss)
LOSS_AGGREGATIONS: tuple[str, ...] = get_args(LossAgg)
# The KL in the loss offers the four estimators under their own names only.
KL_LOSS_TYPES: tuple[str, ...] = get_args(KlEstimatorName)
TIS_MODES: tuple[str, ...] = get_args(TisMode)
# verl's `kl_penalty` clamps "low_var_kl" (and its own "k3") to this bound.
LOW_VAR_KL_CLAMP = 10.0
# Aggregations that weigh a sample by its number of tokens, and the losses and baselines
# that read `sequence_lengths` too.
_TOKEN_AGGREGATIONS = ("seq_mean_token_mean", "token_mean")
_DUAL_CLIP_LOSSES = ("ppo_clip", "gspo")
# Options that take a number which must be finite and > 0 when given.
POSITIVE_OPTIONS = (
    "kl_clamp",
    "max_grad_norm",
    "target_kl",
    "kl_horizon",
    "log_ratio_clamp",
    "loss_agg_constant",
    "kl_loss_clamp",
    "tis_max",
)
# Options that take a number which must be finite and >= 0 when given.
_NON_NEGATIVE_OPTIONS = ("clip_eps_high", "kl_loss_coef", "tis_min")
# Options that hold one value per sample: a binary request carries them as tensors.
INTEGER_SAMPLE_OPTIONS = ("group_ids", "sequence_lengths")
FLOAT_SAMPLE_OPTIONS = ("old_log_probs", "behavior_log_probs")
# Names of settings that the frameworks offer but that need each token's data, which a
# request here (one log-prob per sample) does not carry; each maps to what it would need.
PER_TOKEN_FIELDS: Mapping[str, str] = {
    "entropy_coef": "an entropy bonus needs the distribution of every token",
    "importance_sampling_level": (
        "token-level importance ratios need every token's log-prob; for sequence-level "
        "ratios send policy_loss 'gspo'"
    ),
}
_BOOLEAN_OPTIONS = ("normalize_advantages", "tis_batch_normalize")


def per_token_message(name: str, what: str) -> str:
    """The refusal of a request that needs per-token data, e.g. a 2-D `policy_log_probs`.

    >>> per_token_message("entropy_coef", "is not an option here")  # doctest: +ELLIPSIS
    'entropy_coef is not an option here: it needs per-token data, ...'
    """
    reason = PER_TOKEN_FIELDS.get(name, "per-token log-probs need every token's values")
    return (
        f"{name} {what}: it needs per-token data, which this service does not take "
        f"({reason}); send one sequence-level value per sample (the sum over its tokens)"
    )


@dataclass(frozen=True, slots=True, eq=False)
class UpdateOptions:
    """How to turn rewards into advantages, advantages into a gradient, and it into a step.

    The defaults give the plain update: k1 KL in the reward, no baseline, the REINFORCE
    policy loss averaged over the samples, no clipping. `kl_estimator` accepts verl's
    aliases ("kl", "mse", "low_var_kl") as well; "low_var_kl" is clamped to
    ``LOW_VAR_KL_CLAMP`` unless `kl_clamp` is given, as verl does.
    """

    kl_estimator: KlEstimator = "k1"
    kl_clamp: float | None = None
    reward_clip: float | Sequence[float] | None = None
    group_ids: Sequence[int] | NDArray[np.integer] | None = None
    baseline: Baseline = "none"
    grpo_scale: GrpoScale = "std"
    normalize_advantages: bool = False
    max_grad_norm: float | None = None
    target_kl: float | None = None
    kl_horizon: float | None = None
    policy_loss: PolicyLoss = "pg"
    old_log_probs: ArrayLike | None = None
    clip_eps_low: float = 0.2
    clip_eps_high: float | None = None
    dual_clip_c: float | None = None
    log_ratio_clamp: float = 20.0
    sequence_lengths: Sequence[int] | NDArray[np.integer] | None = None
    loss_agg: LossAgg | None = None
    loss_agg_constant: float | None = None
    kl_loss_coef: float = 0.0
    kl_loss_type: KlEstimatorName = "k3"
    kl_loss_clamp: float | None = None
    behavior_log_probs: ArrayLike | None = None
    tis_mode: TisMode | None = None
    tis_max: float = 2.0
    tis_min: float | None = None
    tis_batch_normalize: bool = False
    optimizer: Optimizer | None = None
    optimizer_state: OptimizerState | None = None
    # A block of a sharded update: its first column in the whole vector (`app.core.norms`).
    column_offset: int | None = None

    @property
    def estimator(self) -> KlEstimatorName:
        """The canonical estimator name: "k1", "k2", "k3" or "abs"."""
        return _CANONICAL[self.kl_estimator]

    @property
    def reward_kl_clamp(self) -> float | None:
        """The bound of the KL in the reward: `kl_clamp`, else verl's for "low_var_kl"."""
        if self.kl_clamp is not None:
            return float(self.kl_clamp)
        return LOW_VAR_KL_CLAMP if self.kl_estimator == "low_var_kl" else None

    @property
    def aggregation(self) -> LossAgg:
        """`loss_agg`, or the policy loss's default: "seq_mean_token_mean" for gspo."""
        if self.loss_agg is not None:
            return self.loss_agg
        return "seq_mean_token_mean" if self.policy_loss == "gspo" else "seq_mean"

    @property
    def eps_high(self) -> float:
        """`clip_eps_high`, which defaults to `clip_eps_low`."""
        return float(self.clip_eps_low if self.clip_eps_high is None else self.clip_eps_high)


# Every option at its default, one shared instance: the decoders answer it for a request
# that sends no option, and `compute_update` knows it by identity (options compare by
# identity, as their arrays would not compare as one truth value).
DEFAULT_OPTIONS = UpdateOptions()


@dataclass(frozen=True, slots=True)
class Groups:
    """Which group each sample belongs to: `index[i]` in ``range(len(sizes))``."""

    index: NDArray[np.intp]
    sizes: NDArray[np.float64]
    # The group id of each group, as the caller sent it; and its first sample.
    ids: NDArray[np.integer]
    first: NDArray[np.intp]

    @classmethod
    def whole_batch(cls, batch_size: int) -> Groups:
        """Every sample in one group (no `group_ids` given)."""
        return cls(
            index=np.zeros(batch_size, dtype=np.intp),
            sizes=np.array([batch_size], dtype=np.float64),
            ids=np.zeros(1, dtype=np.int64),
            first=np.zeros(1, dtype=np.intp),
        )

    @classmethod
    def from_ids(cls, ids: NDArray[np.integer]) -> Groups:
        """Group the samples by equal id."""
        unique, first, index, counts = np.unique(
            ids, return_index=True, return_inverse=True, return_counts=True
        )
        return cls(
            index=index.reshape(-1).astype(np.intp, copy=False),
            sizes=counts.astype(np.float64),
            ids=unique,
            first=first.astype(np.intp, copy=False),
        )


def option_problems(options: UpdateOptions) -> list[tuple[str, str]]:
    """(option name, message) for every option outside its domain; shapes are checked later."""
    problems: list[tuple[str, str]] = []
    for name, allowed, optional in (
        ("kl_estimator", KL_ESTIMATORS, False),
        ("baseline", BASELINES, False),
        ("grpo_scale", GRPO_SCALES, False),
        ("policy_loss", POLICY_LOSSES, False),
        ("loss_agg", LOSS_AGGREGATIONS, True),
        ("kl_loss_type", KL_LOSS_TYPES, False),
        ("tis_mode", TIS_MODES, True),
    ):
        value = getattr(options, name)
        if value not in allowed and not (optional and value is None):
            problems.append((name, f"{name} is {value!r}; expected one of {_listed(allowed)}"))
    for name in _BOOLEAN_OPTIONS:
        value = getattr(options, name)
        if not isinstance(value, bool | np.bool_):
            problems.append((name, f"{name} is {value!r}; expected true or false"))
    problems += _number_problems(options)
    if problems:
        # The rules below combine options, and read them as the numbers checked above.
        return problems
    return _combination_problems(options)


def _number_problems(options: UpdateOptions) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name in POSITIVE_OPTIONS:
        value = getattr(options, name)
        if value is not None and not finite_or_nan(value) > 0:
            problems.append((name, f"{name} is {value!r}; expected a finite number > 0"))
    for name in _NON_NEGATIVE_OPTIONS:
        value = getattr(options, name)
        if value is not None and not finite_or_nan(value) >= 0:
            problems.append((name, f"{name} is {value!r}; expected a finite number >= 0"))
    if not 0 <= finite_or_nan(options.clip_eps_low) < 1:
        msg = f"clip_eps_low is {options.clip_eps_low!r}; expected a number in [0, 1)"
        problems.append(("clip_eps_low", msg))
    if options.dual_clip_c is not None and not finite_or_nan(options.dual_clip_c) > 1:
        msg = f"dual_clip_c is {options.dual_clip_c!r}; expected a finite number > 1"
        problems.append(("dual_clip_c", msg))
    problems += _reward_clip_problems(options.reward_clip)
    problems += _column_offset_problems(options.column_offset)
    return problems


def _column_offset_problems(offset: object) -> list[tuple[str, str]]:
    """A block's first column: an integer >= 0, a whole number of norm chunks."""
    if offset is None:
        return []
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int | np.integer)
        or offset < 0
        or offset % CHUNK_COLUMNS
    ):
        msg = (
            f"column_offset is {offset!r}; expected an integer >= 0 and a multiple of "
            f"{CHUNK_COLUMNS} (the column chunk whose norms a sharded update combines)"
        )
        return [("column_offset", msg)]
    return []


def _reward_clip_problems(value: object) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str):
        pair = [finite_or_nan(bound) for bound in value]
        # finite_or_nan makes a bound that is not finite NaN, which fails the comparison.
        if len(pair) == 2 and pair[0] < pair[1]:
            return []
        shown = "[" + ", ".join(repr(bound) for bound in value) + "]"
        msg = f"reward_clip is {shown}; expected [low, high], finite numbers with low < high"
        return [("reward_clip", msg)]
    if finite_or_nan(value) > 0:
        return []
    msg = f"reward_clip is {value!r}; expected a finite number > 0, or [low, high]"
    return [("reward_clip", msg)]


def _combination_problems(options: UpdateOptions) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for given, missing in (("target_kl", "kl_horizon"), ("kl_horizon", "target_kl")):
        if getattr(options, given) is not None and getattr(options, missing) is None:
            msg = f"{given} is set but {missing} is not; adaptive KL needs both"
            problems.append((missing, msg))
    if options.dual_clip_c is not None and options.policy_loss not in _DUAL_CLIP_LOSSES:
        msg = (
            f"dual_clip_c applies to policy_loss 'ppo_clip' and 'gspo', not "
            f"{options.policy_loss!r}; leave it out"
        )
        problems.append(("dual_clip_c", msg))
    if options.sequence_lengths is None:
        needs = [
            f"{name} {value!r}"
            for name, value, needing in (
                ("policy_loss", options.policy_loss, ("gspo",)),
                ("loss_agg", options.aggregation, _TOKEN_AGGREGATIONS),
                ("baseline", options.baseline, ("opo",)),
            )
            if value in needing
        ]
        if needs:
            msg = f"{' and '.join(needs)} needs sequence_lengths (B integers >= 1); send them"
            problems.append(("sequence_lengths", msg))
    if options.aggregation == "constant" and options.loss_agg_constant is None:
        msg = "loss_agg 'constant' needs loss_agg_constant, a number > 0 to divide the sum by"
        problems.append(("loss_agg_constant", msg))
    if options.tis_mode is not None and options.behavior_log_probs is None:
        msg = (
            f"tis_mode is {options.tis_mode!r} but behavior_log_probs is not sent; truncated "
            "importance sampling needs the rollout engine's log-probs"
        )
        problems.append(("behavior_log_probs", msg))
    if options.tis_mode is None and options.behavior_log_probs is not None:
        msg = "behavior_log_probs is sent but tis_mode is not; set it to 'truncate' or 'mask'"
        problems.append(("tis_mode", msg))
    if options.tis_min is not None and not float(options.tis_min) < float(options.tis_max):
        msg = f"tis_min is {options.tis_min!r}; expected a number below tis_max ({options.tis_max})"
        problems.append(("tis_min", msg))
    return problems


def group_id_problems(
    group_ids: Sequence[int] | NDArray[np.integer], batch_size: int
) -> tuple[NDArray[np.integer] | None, list[tuple[Loc, str]]]:
    """Convert `group_ids` to an integer array of length B, or say what is wrong with it."""
    expected = f"expected {batch_size} integers (= len(rewards))"
    try:
        ids = np.asarray(group_ids)
    except (TypeError, ValueError, OverflowError) as exc:
        return None, [
            (("group_ids",), f"group_ids is not an array of integers ({exc}); {expected}")
        ]
    if ids.ndim == 1 and ids.size == 0:
        # Checked before the dtype: NumPy gives an empty list the dtype float64.
        return None, [(("group_ids",), f"group_ids is empty; {expected}")]
    if ids.dtype.kind not in "iu":
        what = "integers beyond int64" if ids.dtype.kind == "O" else f"{ids.dtype} values"
        return None, [(("group_ids",), f"group_ids holds {what}; {expected}")]
    if ids.dtype == np.uint64 and ids.size and int(ids.max()) > np.iinfo(np.int64).max:
        # A binary body's U64 tensor: held to the same int64 range as JSON's integers.
        return None, [(("group_ids",), f"group_ids holds integers beyond int64; {expected}")]
    if ids.ndim != 1:
        return None, [(("group_ids",), f"group_ids is {ids.ndim}-D; {expected}")]
    if ids.shape[0] != batch_size:
        return None, [(("group_ids",), f"group_ids has {ids.shape[0]} entries; {expected}")]
    return ids, []


def sequence_length_problems(
    lengths: Sequence[int] | NDArray[np.integer], batch_size: int
) -> tuple[NDArray[np.float64] | None, list[tuple[Loc, str]]]:
    """`sequence_lengths` as B floats, each an integer >= 1, or what is wrong with it."""
    name = "sequence_lengths"
    expected = f"expected {batch_size} integers >= 1 (= len(rewards))"
    try:
        array = np.asarray(lengths)
    except (TypeError, ValueError, OverflowError) as exc:
        return None, [((name,), f"{name} is not an array of integers ({exc}); {expected}")]
    if array.dtype.kind not in "iuf":
        what = "integers beyond int64" if array.dtype.kind == "O" else f"{array.dtype} values"
        return None, [((name,), f"{name} holds {what}; {expected}")]
    if array.ndim != 1:
        return None, [((name,), f"{name} is {array.ndim}-D; {expected}")]
    if array.shape[0] != batch_size:
        return None, [((name,), f"{name} has {array.shape[0]} entries; {expected}")]
    values = array.astype(np.float64)
    # NaN fails both tests; so do 2.5 and 0.
    bad = np.flatnonzero(~((values >= 1) & (values == np.floor(values))))
    if array.dtype == np.uint64:
        bad = np.union1d(bad, np.flatnonzero(array > np.iinfo(np.int64).max))
    if bad.size:
        i = int(bad[0])
        return None, [((name, i), f"{name}[{i}] is {array[i]}; expected an integer >= 1")]
    return values, []


def _listed(values: Sequence[str]) -> str:
    return ", ".join(repr(value) for value in values)
