"""The statistics of an update as both wire formats show them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..core import KlEstimates, RatioStats, TisStats, UpdateResult, UpdateStats
from ..core.results import COLUMN_STATS

__all__ = ["WIRE_STATS", "batch_stats_as_dict", "stats_as_dict"]


def stats_as_dict(result: UpdateResult) -> dict[str, Any]:
    """The stats as the wire shows them: one flat object, a statistic only when it is on.

    `next_beta` only with adaptive KL, the ratio statistics only with a policy loss other
    than "pg", `kl_loss_mean` only with a KL loss, the TIS ones only with `tis_mode`.
    """
    return _as_dict(result.stats, _STATS_FIELDS)


def batch_stats_as_dict(stats: UpdateStats) -> dict[str, Any]:
    """The statistics of the batch alone, as `stats_as_dict` shows them: a block's
    gradient answers these, the same in every block, and none of `COLUMN_STATS`."""
    return _as_dict(stats, _BATCH_FIELDS)


def _as_dict(stats: UpdateStats, names: tuple[str, ...]) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    for name in names:
        value = getattr(stats, name)
        if name == "kl_estimates":
            wire[name] = {key: getattr(value, key) for key in _KL_FIELDS}
        elif name in _GROUPS:
            if value is not None:
                wire.update(
                    (key, item)
                    for key in _GROUPS[name]
                    if (item := getattr(value, key)) is not None
                )
        elif value is not None:
            wire[name] = value
    return wire


_STATS_FIELDS = tuple(field.name for field in fields(UpdateStats))
_BATCH_FIELDS = tuple(name for name in _STATS_FIELDS if name not in COLUMN_STATS)
_KL_FIELDS = tuple(field.name for field in fields(KlEstimates))
# Groups of statistics that the wire shows flat, among the others.
_GROUPS = {
    "ratio": tuple(field.name for field in fields(RatioStats)),
    "tis": tuple(field.name for field in fields(TisStats)),
}
# Every statistic the wire can show, in its order.
WIRE_STATS = tuple(key for name in _STATS_FIELDS for key in _GROUPS.get(name, (name,)))
