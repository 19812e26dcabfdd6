"""The request and response models of the wire, against the core they describe."""

from __future__ import annotations

from app.core import UpdateStats
from app.wire.schemas import UpdateStatsModel


def test_documented_stats_are_the_computed_stats() -> None:
    assert list(UpdateStatsModel.model_fields) == list(UpdateStats.__dataclass_fields__)
