"""How msgspec reads the fields of a JSON request: declared once, for the fast path of
`json_codec` and for the field-by-field reading of a body it refuses (`json_refusal`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

import msgspec

__all__ = [
    "ARRAYS",
    "FIELD_DECODERS",
    "FLOAT",
    "ITEMS",
    "MATRIX",
    "ROW_DECODER",
    "SCALARS",
    "RequestFields",
]


class RequestFields(msgspec.Struct, forbid_unknown_fields=True):
    """The arrays and scalars of `schemas.UpdateRequest`, its value checks done after.

    Strict, as the model: numbers only, no unknown fields, literals beyond float64
    refused. Rows are tuples: NumPy fills the matrix from them as from lists, and the
    collector untracks a tuple of floats, where it would walk every list of a body of
    millions of short rows again and again. `beta` and `lr` stay raw JSON, read by
    `FLOAT`, so that a message can quote them as they were written.
    """

    weights: list[float]
    rewards: list[float]
    policy_log_probs: list[float]
    ref_log_probs: list[float]
    log_prob_grads: list[tuple[float, ...]]
    beta: msgspec.Raw
    lr: msgspec.Raw


FLOAT = msgspec.json.Decoder(float)
SCALARS = ("beta", "lr")
ARRAYS = tuple(name for name in RequestFields.__struct_fields__ if name not in SCALARS)
# Each field on its own, as `RequestFields` reads it.
FIELD_DECODERS: Mapping[str, msgspec.json.Decoder[Any]] = {
    **{
        field.name: msgspec.json.Decoder(field.type)
        for field in msgspec.structs.fields(RequestFields)
    },
    **dict.fromkeys(SCALARS, FLOAT),
}
MATRIX = "log_prob_grads"
# One row of the matrix on its own, as `RequestFields` reads each: a body's rows can be
# read one at a time, so that their Python floats are never all held at once.
ROW_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    *get_args({field.name: field.type for field in msgspec.structs.fields(RequestFields)}[MATRIX])
)
# Any array's elements, each as raw JSON (a view on the text): its structure only.
ITEMS: msgspec.json.Decoder[list[msgspec.Raw]] = msgspec.json.Decoder(list[msgspec.Raw])
