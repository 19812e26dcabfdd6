"""Wording shared by the decoders: echoed values cut short, locations, did-you-mean, and
Pydantic's errors rephrased as the field, what it got and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, get_args

from pydantic_core import ErrorDetails

from ..core import InputProblem, format_loc
from ..core.inputs import LOG_PROB_ARRAYS
from ..core.optimizers import OPTIMIZER_TYPES
from ..core.options import PER_TOKEN_FIELDS, per_token_message
from .schemas import (
    REWARD_CLIP_ERROR,
    OptimizerModel,
    OptimizerStateModel,
    UpdateOptionsModel,
    UpdateRequest,
)

__all__ = ["describe_validation_error", "did_you_mean", "format_loc", "shorten"]

_FIELDS = tuple(UpdateRequest.model_fields)
_OPTIONS = tuple(UpdateOptionsModel.model_fields)
_ARRAYS_AND_SCALARS = tuple(name for name in _FIELDS if name not in _OPTIONS)


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal type, also inside `... | None`."""
    args = get_args(annotation)
    if type(None) in args:
        args = tuple(value for arg in args if arg is not type(None) for value in get_args(arg))
    return args


# The allowed values of each option with a closed set, read off the schema's Literal types.
_ALLOWED: dict[str, tuple[str, ...]] = {
    name: values
    for name, info in UpdateOptionsModel.model_fields.items()
    if (values := _literal_values(info.annotation)) and all(isinstance(v, str) for v in values)
}
_EXPECTED = {
    "weights": "a non-empty array of N numbers",
    "rewards": "a non-empty array of B numbers",
    "policy_log_probs": "an array of B numbers",
    "ref_log_probs": "an array of B numbers",
    "log_prob_grads": "an array of B arrays of N numbers",
    "beta": "a number >= 0",
    "lr": "a number >= 0",
    "group_ids": "an array of B integers, or null",
    "sequence_lengths": "an array of B integers >= 1, or null",
    "old_log_probs": "an array of B numbers, or null",
    "behavior_log_probs": "an array of B numbers, or null",
}

# The bounds of the integer options that say "within int64".
_INT64_BOUNDS = {
    ("greater_than_equal", "group_ids"),
    ("less_than_equal", "group_ids"),
    ("less_than_equal", "sequence_lengths"),
}

# An echoed value is cut to this many characters: a message must not echo a megabyte back.
_SHOWN_CHARACTERS = 40


def shorten(value: object, limit: int = _SHOWN_CHARACTERS) -> str:
    """The value as text, cut to `limit` characters with "..." when longer.

    >>> shorten("x" * 50)
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'
    >>> shorten(1.5)
    '1.5'
    """
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the known name closest to a misspelt one, or ''.

    >>> did_you_mean("weigths", ["weights", "rewards"])
    " (did you mean 'weights'?)"
    """
    hint = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def describe_validation_error(error: ErrorDetails) -> InputProblem:
    """Rephrase one Pydantic error as: the field (and index), what it got, what was expected."""
    loc = tuple(error["loc"])
    path = format_loc(loc)
    kind = error["type"]
    got = _json_kind(error.get("input"))
    field = loc[0] if loc else None
    if field in _OBJECTS:
        nested = _nested_problem(error, loc, got)
        if nested is not None:
            return nested
        # The key of an object is named with a dot: optimizer.momentum, not optimizer[momentum].
        path = f"{field}.{format_loc(loc[1:])}" if len(loc) > 1 else path
        field = loc[1] if len(loc) > 1 else field
    if kind == "model_type":
        return InputProblem((), f"the body is {got}; expected a JSON object with {_field_list()}")
    if kind == "missing":
        return InputProblem(loc, f"{path} is missing; expected {_EXPECTED[str(field)]}")
    if kind == "extra_forbidden" and field in PER_TOKEN_FIELDS:
        return InputProblem(loc, per_token_message(str(field), "is not an option here"))
    if kind == "extra_forbidden":
        suggestion = did_you_mean(str(field), _FIELDS)
        return InputProblem(
            loc, f"unknown field {field!r}{suggestion}; expected only {_field_list()}"
        )
    if kind == "float_type" and field in LOG_PROB_ARRAYS and isinstance(error.get("input"), list):
        return InputProblem(loc, per_token_message(path, "is an array"))
    if kind == "float_type":
        return InputProblem(loc, f"{path} is {got}; expected a JSON number")
    if kind == REWARD_CLIP_ERROR:
        return InputProblem(
            loc, f"{path} is {got}; expected a JSON number > 0, or an array [low, high]"
        )
    if kind == "finite_number":
        return InputProblem(
            loc,
            f"{path} is {shorten(error.get('input'))}; expected a finite number "
            "(NaN, Infinity and values beyond ±1.7976931348623157e308 are not JSON numbers here)",
        )
    if kind == "list_type":
        expected = "an array of N numbers" if len(loc) == 2 else _EXPECTED[str(field)]
        return InputProblem(loc, f"{path} is {got}; expected {expected}")
    if kind == "too_short":
        return InputProblem(loc, f"{path} is empty; expected {_EXPECTED[str(field)]}")
    if (kind, field) in _INT64_BOUNDS:
        return InputProblem(
            loc, f"{path} is {shorten(error.get('input'))}; expected an integer within int64"
        )
    bound = error.get("ctx", {})
    if kind == "greater_than_equal" and field == "sequence_lengths":
        return InputProblem(
            loc, f"{path} is {shorten(error.get('input'))}; expected an integer >= 1"
        )
    if kind == "greater_than_equal":
        return InputProblem(
            loc, f"{path} is {shorten(error.get('input'))}; expected a number >= {bound['ge']}"
        )
    if kind == "greater_than":
        return InputProblem(
            loc,
            f"{path} is {shorten(error.get('input'))}; expected a finite number > {bound['gt']}",
        )
    if kind == "less_than":
        return InputProblem(
            loc, f"{path} is {shorten(error.get('input'))}; expected a number < {bound['lt']}"
        )
    if kind in ("literal_error", "string_type") and field in _ALLOWED:
        allowed = ", ".join(repr(value) for value in _ALLOWED[str(field)])
        value = error.get("input")
        shown = repr(value) if isinstance(value, str) else got
        return InputProblem(loc, f"{path} is {shown}; expected one of {allowed}")
    if kind in ("int_type", "int_parsing"):
        return InputProblem(loc, f"{path} is {got}; expected an integer")
    if kind in ("bool_type", "bool_parsing"):
        return InputProblem(loc, f"{path} is {got}; expected true or false")
    if kind == "float_parsing":
        return InputProblem(loc, f"{path} is {got}; expected a number")
    return InputProblem(loc, f"{path}: {error['msg']}")


# The options that are objects, with the keys each takes.
_OBJECTS: dict[str, tuple[str, ...]] = {
    "optimizer": tuple(OptimizerModel.model_fields),
    "optimizer_state": tuple(OptimizerStateModel.model_fields),
}


def _nested_problem(error: ErrorDetails, loc: tuple[Any, ...], got: str) -> InputProblem | None:
    """The errors of an object option that its own keys' names word; None for the others."""
    kind, field = error["type"], str(loc[0])
    keys = _OBJECTS[field]
    if kind in ("model_type", "model_attributes_type", "dict_type") and len(loc) == 1:
        return InputProblem(loc, f"{field} is {got}; expected an object with {', '.join(keys)}")
    if kind == "extra_forbidden" and len(loc) == 2:
        key = str(loc[1])
        suggestion = did_you_mean(key, keys)
        listed = ", ".join(keys)
        msg = f"{field} has the unknown key {shorten(key)!r}{suggestion}; expected only {listed}"
        return InputProblem(loc, msg)
    if kind == "literal_error" and loc[1:] == ("type",):
        allowed = ", ".join(repr(value) for value in OPTIMIZER_TYPES)
        value = error.get("input")
        shown = repr(value) if isinstance(value, str) else got
        return InputProblem(loc, f"{field}.type is {shown}; expected one of {allowed}")
    if loc[1:2] == ("betas",):
        where = f"{field}.betas" + "".join(f"[{i}]" for i in loc[2:])
        return InputProblem(
            loc[:2], f"{where} is {shorten(error.get('input'))}; expected two numbers in [0, 1)"
        )
    return None


def _field_list() -> str:
    return "fields " + ", ".join(_ARRAYS_AND_SCALARS) + " and the optional " + ", ".join(_OPTIONS)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string ({shorten(value)!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a number ({shorten(value)})"
