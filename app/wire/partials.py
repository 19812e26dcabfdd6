"""How a block's norm partials are named on the wire, in both formats alike."""

from __future__ import annotations

from ..core.results import ColumnPartials, FloatArray

__all__ = ["GRAD_PARTIALS", "STEP_PARTIALS", "UPDATE_PARTIALS", "partials_fields"]

# Each a (k, 2) array of float64: one (s, q) row per chunk of CHUNK_COLUMNS columns, whose
# sum of squares is s**2 * q (`app.core.norms.chunk_partials`).
GRAD_PARTIALS = "grad_norm_partials"
STEP_PARTIALS = "step_norm_partials"
UPDATE_PARTIALS = "update_norm_partials"


def partials_fields(partials: ColumnPartials) -> dict[str, FloatArray]:
    """The partials a block's answer carries, by wire name; those not computed left out."""
    named = {
        GRAD_PARTIALS: partials.grad,
        STEP_PARTIALS: partials.step,
        UPDATE_PARTIALS: partials.update,
    }
    return {name: value for name, value in named.items() if value is not None}
