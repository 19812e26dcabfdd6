"""The statistics of an update as both wire formats show them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..core import KlEstimates, UpdateResult, UpdateStats

__all__ = ["stats_as_dict"]


def stats_as_dict(result: UpdateResult) -> dict[str, Any]:
    """The stats as the wire shows them: `next_beta` only when adaptive KL computed one."""
    stats = result.stats
    wire = {name: getattr(stats, name) for name in _STATS_FIELDS}
    wire["kl_estimates"] = {name: getattr(stats.kl_estimates, name) for name in _KL_FIELDS}
    if wire["next_beta"] is None:
        del wire["next_beta"]
    return wire


_STATS_FIELDS = tuple(field.name for field in fields(UpdateStats))
_KL_FIELDS = tuple(field.name for field in fields(KlEstimates))
