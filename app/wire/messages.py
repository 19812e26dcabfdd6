"""Wording shared by the decoders: echoed values cut short, locations, did-you-mean, the
messages of each kind of problem, and Pydantic's errors rephrased as the field, what it got
and what was expected."""

from __future__ import annotations

import difflib
import reprlib
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

__all__ = [
    "ARRAYS_AND_SCALARS",
    "FIELDS",
    "OPTIONS",
    "describe_validation_error",
    "did_you_mean",
    "empty_array",
    "format_loc",
    "json_kind",
    "missing_field",
    "negative_number",
    "not_a_number",
    "not_an_array",
    "not_an_object",
    "not_finite",
    "not_int64",
    "shorten",
    "unknown_field",
    "wrong_row_length",
]

FIELDS = tuple(UpdateRequest.model_fields)
OPTIONS = tuple(UpdateOptionsModel.model_fields)
ARRAYS_AND_SCALARS = tuple(name for name in FIELDS if name not in OPTIONS)


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
_ROW = "an array of N numbers"

# An echoed value is cut to this many characters: a message must not echo a megabyte back.
_SHOWN_CHARACTERS = 40
# Containers are shown this many levels deep at most, so that no nesting makes a message
# recurse (reprlib bounds its own recursion).
_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = _REPR.maxother = _SHOWN_CHARACTERS
# A name this much longer than every known one is no misspelling of them; difflib's work
# grows with the length of the name, so it is not asked.
_SUGGESTION_LENGTH_FACTOR = 2


def shorten(value: object, limit: int = _SHOWN_CHARACTERS) -> str:
    """The value as text, cut to `limit` characters with "..." when longer.

    Arrays and objects are shown at most two levels deep; an integer too long for `str`
    (Python refuses more than 4300 digits) is described instead of printed.

    >>> shorten("x" * 50)
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'
    >>> shorten(1.5), shorten([[[[1]]]])
    ('1.5', '[[[...]]]')
    """
    try:
        text = value if isinstance(value, str) else _text(value)
    except ValueError:
        text = "an integer too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: object) -> str:
    if isinstance(value, list | tuple | dict | set | frozenset):
        return _REPR.repr(value)
    return str(value)


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the known name closest to a misspelt one, or ''.

    >>> did_you_mean("weigths", ["weights", "rewards"])
    " (did you mean 'weights'?)"
    """
    if len(name) > _SUGGESTION_LENGTH_FACTOR * max(map(len, known), default=0):
        return ""
    hint = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


# -- the messages, each worded once, whichever decoder found the problem ---------------------


def not_an_object(got: str) -> str:
    """The body is valid JSON but not an object."""
    return f"the body is {got}; expected a JSON object with {_field_list()}"


def missing_field(field: str) -> str:
    """A required field is absent."""
    return f"{field} is missing; expected {_EXPECTED[field]}"


def unknown_field(name: str) -> str:
    """A top-level key the contract does not have, with the closest field it may mean."""
    if name in PER_TOKEN_FIELDS:
        return per_token_message(name, "is not an option here")
    suggestion = did_you_mean(name, FIELDS)
    return f"unknown field {shorten(name)!r}{suggestion}; expected only {_field_list()}"


def not_a_number(path: str, got: str) -> str:
    """A value that should be a JSON number is `got` (see `json_kind`)."""
    if got == "an array" and path.split("[", 1)[0] in LOG_PROB_ARRAYS:
        return per_token_message(path, "is an array")
    return f"{path} is {got}; expected a JSON number"


def not_finite(path: str, shown: str) -> str:
    """A number that float64 cannot hold (or NaN): `shown` is how it reads."""
    return (
        f"{path} is {shown}; expected a finite number "
        "(NaN, Infinity and values beyond ±1.7976931348623157e308 are not JSON numbers here)"
    )


def not_int64(path: str, shown: str) -> str:
    """A group id beyond int64."""
    return f"{path} is {shown}; expected an integer within int64"


def not_an_array(loc: tuple[str | int, ...], got: str) -> str:
    """A value at `loc` (a field, or a row of log_prob_grads) that should be an array."""
    expected = _ROW if len(loc) == 2 else _EXPECTED[str(loc[0])]
    return f"{format_loc(loc)} is {got}; expected {expected}"


def empty_array(field: str) -> str:
    """A field that must not be empty is."""
    return f"{field} is empty; expected {_EXPECTED[field]}"


def negative_number(path: str, shown: str) -> str:
    """beta or lr below 0."""
    return f"{path} is {shown}; expected a number >= 0"


def wrong_row_length(row: int, length: int, n: int) -> str:
    """A row of log_prob_grads whose length is not len(weights)."""
    has = "is empty" if length == 0 else f"has {length} entries"
    entries = f"{n} entries" if length == 0 else str(n)
    return f"log_prob_grads[{row}] {has}; expected {entries} (= len(weights))"


def describe_validation_error(error: ErrorDetails) -> InputProblem:
    """Rephrase one Pydantic error of the options as: the option (and index), what it got,
    what was expected."""
    loc = tuple(error["loc"])
    path = format_loc(loc)
    kind = error["type"]
    value = error.get("input")
    got = json_kind(value)
    field = loc[0] if loc else None
    if field in _OBJECTS:
        nested = _nested_problem(error, loc, got)
        if nested is not None:
            return nested
        # The key of an object is named with a dot: optimizer.momentum, not optimizer[momentum].
        path = f"{field}.{format_loc(loc[1:])}" if len(loc) > 1 else path
        field = loc[1] if len(loc) > 1 else field
    if kind == "model_type":
        return InputProblem((), not_an_object(got))
    if kind == "missing":
        return InputProblem(loc, missing_field(str(field)))
    if kind == "extra_forbidden" and field in PER_TOKEN_FIELDS:
        return InputProblem(loc, per_token_message(str(field), "is not an option here"))
    if kind == "extra_forbidden":
        return InputProblem(loc, unknown_field(str(field)))
    if kind == "float_type" and field in LOG_PROB_ARRAYS and isinstance(value, list):
        return InputProblem(loc, per_token_message(path, "is an array"))
    if kind == "float_type" and _is_integer(value):
        # An integer too large for float64 (Python mode reads it exactly).
        return InputProblem(loc, not_finite(path, shorten(value)))
    if kind == "float_type":
        return InputProblem(loc, not_a_number(path, got))
    if kind == REWARD_CLIP_ERROR:
        return InputProblem(
            loc, f"{path} is {got}; expected a JSON number > 0, or an array [low, high]"
        )
    if kind == "finite_number":
        return InputProblem(loc, not_finite(path, shorten(value)))
    if kind == "list_type":
        return InputProblem(loc, not_an_array(loc, got))
    if kind == "too_short":
        return InputProblem(loc, empty_array(str(field)))
    if (kind, field) in _INT64_BOUNDS:
        return InputProblem(loc, not_int64(path, shorten(value)))
    bound = error.get("ctx", {})
    if kind == "greater_than_equal" and field == "sequence_lengths":
        return InputProblem(loc, f"{path} is {shorten(value)}; expected an integer >= 1")
    if kind == "greater_than_equal":
        return InputProblem(loc, f"{path} is {shorten(value)}; expected a number >= {bound['ge']}")
    if kind == "greater_than":
        return InputProblem(
            loc, f"{path} is {shorten(value)}; expected a finite number > {bound['gt']}"
        )
    if kind == "less_than":
        return InputProblem(loc, f"{path} is {shorten(value)}; expected a number < {bound['lt']}")
    if kind in ("literal_error", "string_type") and field in _ALLOWED:
        allowed = ", ".join(repr(option) for option in _ALLOWED[str(field)])
        shown = repr(shorten(value)) if isinstance(value, str) else got
        return InputProblem(loc, f"{path} is {shown}; expected one of {allowed}")
    if kind in ("int_type", "int_parsing"):
        return InputProblem(loc, f"{path} is {got}; expected an integer")
    if kind in ("bool_type", "bool_parsing"):
        return InputProblem(loc, f"{path} is {got}; expected true or false")
    if kind == "float_parsing":
        return InputProblem(loc, f"{path} is {got}; expected a number")
    return InputProblem(loc, f"{path}: {shorten(error['msg'], 200)}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    # The options are many: named by where they are listed, so that a message stays short.
    return (
        "fields " + ", ".join(ARRAYS_AND_SCALARS) + f" and the {len(OPTIONS)} optional ones "
        "that GET /info and the API documentation list"
    )


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, for a message: "a string ('x')", "an array", ..."""
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
