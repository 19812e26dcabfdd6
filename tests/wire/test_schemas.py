"""The request and response models of the wire, against the core they describe."""

from __future__ import annotations

from dataclasses import fields

from app.core import RatioStats, TisStats, UpdateStats
from app.wire.schemas import UpdateStatsModel
from app.wire.stats import WIRE_STATS


def test_documented_stats_are_the_computed_stats() -> None:
    assert list(UpdateStatsModel.model_fields) == list(WIRE_STATS)
    # The policy loss's and TIS's statistics are shown flat, among the others.
    grouped = [field.name for group in (RatioStats, TisStats) for field in fields(group)]
    plain = [field.name for field in fields(UpdateStats) if field.name not in ("ratio", "tis")]
    assert sorted(WIRE_STATS) == sorted(plain + grouped)
