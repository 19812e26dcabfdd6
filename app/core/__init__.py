"""The numeric core: one RLHF policy-gradient update, in pure NumPy.

Imports nothing of the service outside this package: no HTTP, no Pydantic, no I/O.
"""

from .inputs import ARRAY_SHAPES, shape_text
from .options import DEFAULT_OPTIONS, UpdateOptions
from .results import (
    MAX_LISTED_PROBLEMS,
    AnyFloatArray,
    InputProblem,
    InvalidInputError,
    KlEstimates,
    RatioStats,
    TisStats,
    UpdateError,
    UpdateOverflowError,
    UpdateResult,
    UpdateStats,
    format_loc,
)
from .update import compute_update, in_weights_dtype, rlhf_weight_update

__all__ = [
    "ARRAY_SHAPES",
    "DEFAULT_OPTIONS",
    "MAX_LISTED_PROBLEMS",
    "AnyFloatArray",
    "InputProblem",
    "InvalidInputError",
    "KlEstimates",
    "RatioStats",
    "TisStats",
    "UpdateError",
    "UpdateOptions",
    "UpdateOverflowError",
    "UpdateResult",
    "UpdateStats",
    "compute_update",
    "format_loc",
    "in_weights_dtype",
    "rlhf_weight_update",
    "shape_text",
]
