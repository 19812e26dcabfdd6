"""Wording shared by the decoders: echoed values cut short, locations, did-you-mean, and
Pydantic's errors rephrased as the field, what it got and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, get_args

from pydantic_core import ErrorDetails

from ..core import InputProblem, format_loc
from .schemas import UpdateOptionsModel, UpdateRequest

__all__ = ["describe_validation_error", "did_you_mean", "format_loc", "shorten"]

_FIELDS = tuple(UpdateRequest.model_fields)
_OPTIONS = tuple(UpdateOptionsModel.model_fields)
_ARRAYS_AND_SCALARS = tuple(name for name in _FIELDS if name not in _OPTIONS)
# The allowed values of each option with a closed set, read off the schema's Literal types.
_ALLOWED: dict[str, tuple[str, ...]] = {
    name: get_args(info.annotation)
    for name, info in UpdateOptionsModel.model_fields.items()
    if get_args(info.annotation) and all(isinstance(v, str) for v in get_args(info.annotation))
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
    if kind == "model_type":
        return InputProblem((), f"the body is {got}; expected a JSON object with {_field_list()}")
    if kind == "missing":
        return InputProblem(loc, f"{path} is missing; expected {_EXPECTED[str(field)]}")
    if kind == "extra_forbidden":
        suggestion = did_you_mean(str(field), _FIELDS)
        return InputProblem(
            loc, f"unknown field {field!r}{suggestion}; expected only {_field_list()}"
        )
    if kind == "float_type":
        return InputProblem(loc, f"{path} is {got}; expected a JSON number")
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
    if kind in ("greater_than_equal", "less_than_equal") and field == "group_ids":
        return InputProblem(
            loc, f"{path} is {shorten(error.get('input'))}; expected an integer within int64"
        )
    if kind == "greater_than_equal":
        return InputProblem(loc, f"{path} is {shorten(error.get('input'))}; expected a number >= 0")
    if kind == "greater_than":
        return InputProblem(
            loc, f"{path} is {shorten(error.get('input'))}; expected a finite number > 0"
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
