"""Why a JSON body is refused, worded field by field, at a cost bounded by the answer.

`json_codec` decodes a valid body in one pass of msgspec. A body that pass refuses is read
again here, in pieces: its top level first, each value kept as raw JSON, stopping as soon
as it has more distinct keys than the contract; then each field on its own, with the
decoder of its type (`json_fields`). A field's first problem is worded from where msgspec
says it is and from the raw text of the value there, never from a Python copy of the whole
body; problems past the listed maximum are counted, not worded, and no suggestion is
computed for a name that will not be listed. The options are read by `read_options`, as on
the fast path. And a large body with a field longer than any valid body of its size allows
is refused by `overfull`, from counts of brackets and commas, before msgspec builds a
Python object per entry.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from ..core import (
    DEFAULT_OPTIONS,
    MAX_LISTED_PROBLEMS,
    InputProblem,
    UpdateOptions,
    format_loc,
)
from ..core.results import Loc
from ..errors import InvalidPayloadError, MalformedJsonError, ProblemError
from .json_fields import ARRAYS, FIELD_DECODERS, ITEMS, MATRIX, ROW_DECODER, SCALARS
from .json_pieces import NUMBERS, ROWS, TYPED_PIECE_BYTES, array_pieces
from .messages import (
    ARRAYS_AND_SCALARS,
    FIELDS,
    OPTIONS,
    describe_validation_error,
    empty_array,
    json_kind,
    missing_field,
    negative_number,
    not_a_number,
    not_an_array,
    not_an_object,
    not_finite,
    not_int64,
    shorten,
    unknown_field,
    wrong_row_length,
)
from .schemas import UpdateOptionsModel

__all__ = [
    "field_order",
    "field_problem",
    "most_arrays",
    "most_short_numbers",
    "nested_too_deeply",
    "overfull",
    "read_options",
    "refusal",
    "value_problems",
]

_GROUP_IDS = "group_ids"
# How deep in each field a number sits: weights[i], log_prob_grads[i][j], beta.
_NUMBER_DEPTH = {**dict.fromkeys(ARRAYS, 1), "log_prob_grads": 2, **dict.fromkeys(SCALARS, 0)}
_ANY = msgspec.json.Decoder()
_STRING = msgspec.json.Decoder(str)
_WHITESPACE = b" \t\n\r"
_SPACE = re.compile(rb"[ \t\n\r]*")
_NUMBER_TOKEN = re.compile(rb"[-+0-9.eE]+")
_MALFORMED = re.compile(r"JSON is malformed: (.+) \(byte (\d+)\)")
# Where msgspec says a value of a field decoded on its own went wrong: "... - at `$[3][0]`";
# and where the fast path's decoder of the whole body stopped: in a field, at an unknown
# key, or at the end of the object (a field is missing).
_AT = re.compile(r" - at `\$((?:\[\d+\])*)`$")
_FAILED_AT = re.compile(r" - at `\$\.(\w+)((?:\[\d+\])*)`$")
_FAILED_KEY = re.compile(r"Object (contains unknown|missing required) field `(.*)`")
_NON_EMPTY = ("weights", "rewards")
_EMPTY_ARRAY = re.compile(rb"\[[ \t\n\r]*\]")

# NaN, Infinity and -Infinity are not JSON, but Python's json module writes them for
# float("nan") and float("inf"). They are answered like 1e999 (422, naming the value),
# so before a body that holds them is read here, each becomes a number literal beyond
# float64 that no client writes, and messages show these as nan, inf and -inf. The
# patterns match the words as values; inside a string they only change what is echoed.
_NAN_MARK = b"1e+00999999999999999999999999"
_INFINITY_MARK = b"2e+00999999999999999999999999"
# (The look-behinds come after the words, so that the search runs on the words' letters.)
_NAN = re.compile(rb"NaN(?<![\w.\"]NaN)(?![\w.\"])")
_INFINITY = re.compile(rb"Infinity(?<![\w.\"]Infinity)(?![\w.\"])")
_SHOWN_MARKS = {_NAN_MARK: "nan", _INFINITY_MARK: "inf", b"-" + _INFINITY_MARK: "-inf"}


class _TopLevelKey(str):
    """A key of the body's top level: msgspec hands each one to a key budget as it reads it."""


class _TooManyKeys(Exception):
    """The body has more distinct top-level keys than the contract; `keys` are those read."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(len(keys))
        self.keys = keys


def refusal(body: bytes | bytearray, failure: msgspec.DecodeError | None = None) -> ProblemError:
    """Why the fast path refused `body` (msgspec's `failure`): a 400 for what is not JSON,
    else the problems of every field, up to the listed maximum."""
    try:
        fields, once = _top_level(body)
    except ProblemError as problem:
        return problem
    accepted, stopped_at, path = _accepted(failure, fields, once)
    problems: list[InputProblem] = []
    decoded: dict[str, Any] = {}
    for name in ARRAYS_AND_SCALARS:
        raw = fields.get(name)
        if raw is None:
            problems.append(InputProblem((name,), missing_field(name)))
        elif name == stopped_at and path is not None:
            problems.append(_problem_at(name, raw, path))
        elif name in accepted and name in ARRAYS:
            if name in _NON_EMPTY and _EMPTY_ARRAY.fullmatch(memoryview(raw)):
                problems.append(InputProblem((name,), empty_array(name)))
        elif name == MATRIX:
            if (row_problem := _matrix_problem(raw)) is not None:
                problems.append(row_problem)
        elif name in SCALARS:
            try:
                decoded[name] = FIELD_DECODERS[name].decode(raw)
            except msgspec.ValidationError as exc:
                problems.append(field_problem(name, raw, exc))
        else:
            # An array's size is all that is looked at.
            size = _array_size(name, raw)
            if isinstance(size, InputProblem):
                problems.append(size)
            else:
                decoded[name] = size
    scalars = {name: (decoded[name], bytes(fields[name])) for name in SCALARS if name in decoded}
    # Rows of the wrong length are looked for on the fast path only, once every field has
    # the right type: here something else is always wrong, and which fields were decoded
    # again depends on the order of the keys.
    found, unlisted = value_problems(decoded.get("weights"), decoded.get("rewards"), None, scalars)
    _, option_problems = read_options({name: fields[name] for name in OPTIONS if name in fields})
    problems = sorted([*problems, *found, *option_problems], key=field_order)
    unknown = [key for key in fields if key not in FIELDS]
    room = max(MAX_LISTED_PROBLEMS - len(problems), 0)
    problems += [InputProblem((key,), unknown_field(key)) for key in unknown[:room]]
    unlisted += len(unknown) - min(room, len(unknown))
    if not problems:  # the checks above accept everything the fast path accepts
        problems = [InputProblem((), "the body does not satisfy the request contract")]
    return InvalidPayloadError(problems, unlisted=unlisted)


def most_rows(size: int) -> int:
    """How many samples (B) a valid body of `size` bytes can hold at most.

    Each takes at least 10 bytes: its row "[x]," and an entry "x," in each of rewards,
    policy_log_probs and ref_log_probs.
    """
    return (size + 4) // 10


def most_arrays(size: int) -> int:
    """How many arrays a valid body of `size` bytes can hold: five fields, group_ids, B rows."""
    return most_rows(size) + 6


def most_short_numbers(size: int) -> int:
    """How many commas a body of `size` bytes has before it is worth checking each field's
    length against `most_rows`: numbers of fewer than three characters on average."""
    return size // 4


# How many entries a field of a valid body of `size` bytes can have: B for the arrays of
# samples and their rows, N for the weights (each weight comes with its column of
# log_prob_grads: at least 4 bytes).
_MOST_ENTRIES = {
    "weights": lambda size: size // 4,
    **dict.fromkeys(("rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads"), most_rows),
    _GROUP_IDS: most_rows,
}


def overfull(body: bytes | bytearray, *, sure: bool) -> ProblemError | None:
    """The refusal of a body with a field longer than any valid body of its size allows,
    found from the fields' raw text before msgspec builds a Python object per entry.

    `sure` says that the body is known to be invalid (it has more arrays than
    `most_arrays`): then, if no field is too long, the body is refused as any other.
    Otherwise None means that every field fits.
    """
    try:
        fields, _ = _top_level(body)
    except ProblemError as problem:
        return problem
    size = len(body)
    for name, raw in fields.items():
        text = bytes(raw) if name in _MOST_ENTRIES else b""
        if not text.startswith(b"["):
            continue
        # Upper bounds: brackets or commas inside nested arrays or strings count too,
        # and a field holding those is refused all the same.
        rows = name == "log_prob_grads"
        entries = text.count(b"[") - 1 if rows else text.count(b",") + 1
        most = _MOST_ENTRIES[name](size)
        if entries > most:
            what = "rows" if rows else "entries"
            msg = (
                f"{name} has {entries} {what}; a valid body of {size} bytes has at most {most} "
                "(a sample takes at least 10 bytes: its row of log_prob_grads and its entries "
                "in rewards, policy_log_probs and ref_log_probs; a weight at least 4)"
            )
            return InvalidPayloadError([InputProblem((name,), msg)])
    return refusal(body) if sure else None


def value_problems(
    weights: int | None,
    rewards: int | None,
    row_lengths: NDArray[np.int64] | None,
    scalars: Mapping[str, tuple[float, bytes]],
) -> tuple[list[InputProblem], int]:
    """Problems of values that decoded to the right types, and how many more were counted.

    Empty weights or rewards (`weights` and `rewards` are their sizes, when decoded), rows
    of log_prob_grads whose length (in `row_lengths`) is not that of the weights (the first
    `MAX_LISTED_PROBLEMS` worded, the rest counted), beta or lr below 0. `scalars` maps
    beta and lr, when decoded, to their value and their raw JSON text.
    """
    problems = [
        InputProblem((name,), empty_array(name))
        for name, size in (("weights", weights), ("rewards", rewards))
        if size == 0
    ]
    unlisted = 0
    n = weights or 0
    if n and row_lengths is not None and (row_lengths != n).any():
        ragged = np.flatnonzero(row_lengths != n)
        problems += [
            InputProblem((MATRIX, int(i)), wrong_row_length(int(i), int(row_lengths[i]), n))
            for i in ragged[:MAX_LISTED_PROBLEMS]
        ]
        unlisted = max(ragged.size - MAX_LISTED_PROBLEMS, 0)
    problems += [
        InputProblem((name,), negative_number(name, shorten(raw.strip().decode())))
        for name, (value, raw) in scalars.items()
        if value < 0
    ]
    return problems, unlisted


def read_options(
    raws: Mapping[str, msgspec.Raw | bytes],
) -> tuple[UpdateOptions | None, list[InputProblem]]:
    """The options given as raw JSON values, checked by the Pydantic model of the options.

    msgspec decodes each value exactly as JSON says (integers as integers, numbers
    correctly rounded), and the model validates them in strict mode, where it accepts what
    it accepts from JSON. A number beyond what msgspec holds reaches the model as an
    infinity (NaN for NaN), which it refuses in the words of any non-finite number.
    """
    if not raws:
        return DEFAULT_OPTIONS, []
    values: dict[str, Any] = {}
    problems: list[InputProblem] = []
    for name, raw in raws.items():
        try:
            values[name] = _ANY.decode(raw)
        except RecursionError:
            raise nested_too_deeply() from None
        except msgspec.ValidationError as exc:
            path = _path(exc)
            if name == _GROUP_IDS and path:
                loc: Loc = (name, *path)
                shown = _number_text(_element(raw, path))
                problems.append(InputProblem(loc, not_int64(format_loc(loc), shown)))
                continue
            values[name] = _stand_in(bytes(raw))
        except msgspec.DecodeError as exc:  # invalid UTF-8 in a string, which skipping lets by
            msg = f"malformed JSON in {name}: {shorten(str(exc), 200)}"
            raise MalformedJsonError(msg) from None
    try:
        model = UpdateOptionsModel.model_validate(values, strict=True)
    except ValidationError as exc:
        problems += [describe_validation_error(e) for e in exc.errors(include_url=False)]
    if problems:
        return None, sorted(problems, key=field_order)
    return model.to_options(), []


def nested_too_deeply() -> MalformedJsonError:
    """The error of a body nested deeper than msgspec reads (its recursion limit)."""
    msg = (
        "malformed JSON: arrays or objects are nested deeper than the service reads; "
        "no field of /update nests more than two levels"
    )
    return MalformedJsonError(msg)


def field_order(problem: InputProblem) -> int:
    """Problems in the order of the request's fields; those of the body as a whole last."""
    head = problem.loc[0] if problem.loc else None
    return FIELDS.index(head) if head in FIELDS else len(FIELDS)


def _accepted(
    failure: msgspec.DecodeError | None, fields: Mapping[str, msgspec.Raw], once: set[str]
) -> tuple[set[str], str | None, tuple[int, ...] | None]:
    """What the fast path's msgspec accepted before `failure`, and where it stopped.

    msgspec reads the fields in the body's order: those before the key it stopped at
    (written once) have the right types already, and need not be decoded again. Returns
    them, the field it stopped in and the indices within it, from msgspec's message;
    nothing when the message does not say, and then every field is decoded again.
    """
    message = "" if failure is None else str(failure)
    path: tuple[int, ...] | None = None
    if match := _FAILED_AT.search(message):
        stopped_at = match[1]
        path = tuple(int(index) for index in re.findall(r"\d+", match[2]))
    elif (match := _FAILED_KEY.fullmatch(message)) and match[1] == "missing required":
        return set(fields) & once, None, None  # it read the whole object
    elif match:
        stopped_at = match[2]
    else:
        return set(), None, None
    if stopped_at not in once:
        return set(), None, None
    before = itertools.takewhile(lambda key: key != stopped_at, fields)
    return set(before) & once, stopped_at, path


# -- the top level -------------------------------------------------------------------------


def _top_level(body: bytes | bytearray) -> tuple[dict[str, msgspec.Raw], set[str]]:
    """The body's top-level values as raw JSON, and the keys written only once.

    Read at most `len(FIELDS)` distinct keys far.

    Raises
    ------
    ProblemError
        400 when the body is not JSON (or nests deeper than msgspec reads), 422 when it
        is not an object or has more distinct keys than the contract.
    """
    try:
        return _read_keys(body)
    except msgspec.ValidationError:
        raise InvalidPayloadError([InputProblem((), not_an_object(_raw_kind(body)))]) from None
    except msgspec.DecodeError as exc:
        position = _byte(exc)
        if position is None or not _non_finite_literal_at(body, position):
            raise _malformed(exc, body) from None
    marked = _INFINITY.sub(_INFINITY_MARK, _NAN.sub(_NAN_MARK, body))
    try:
        return _read_keys(marked)
    except msgspec.ValidationError:
        raise InvalidPayloadError([InputProblem((), not_an_object(_raw_kind(marked)))]) from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc, body, marked) from None


def _read_keys(body: bytes | bytearray) -> tuple[dict[str, msgspec.Raw], set[str]]:
    """msgspec's read of the top level, cut short by a budget of distinct keys."""
    seen: dict[str, int] = {}

    def count(_: type, key: str) -> _TopLevelKey:
        if key not in seen and len(seen) == len(FIELDS):
            raise _TooManyKeys([*seen, key])
        seen[key] = seen.get(key, 0) + 1
        return _TopLevelKey(key)

    decoder = msgspec.json.Decoder(dict[_TopLevelKey, msgspec.Raw], dec_hook=count)
    try:
        fields = {str(key): value for key, value in decoder.decode(body).items()}
    except RecursionError:
        raise nested_too_deeply() from None
    except _TooManyKeys as exc:
        raise _too_many_keys(exc.keys) from None
    return fields, {key for key, times in seen.items() if times == 1}


def _too_many_keys(keys: list[str]) -> InvalidPayloadError:
    unknown = [key for key in keys if key not in FIELDS]
    problems = [InputProblem((key,), unknown_field(key)) for key in unknown]
    msg = (
        f"the body has more than {len(FIELDS)} distinct top-level keys, more than the "
        "request has; it was not read further"
    )
    return InvalidPayloadError([*problems, InputProblem((), msg)])


def _byte(exc: msgspec.DecodeError) -> int | None:
    match = _MALFORMED.fullmatch(str(exc))
    return int(match[2]) if match else None


def _non_finite_literal_at(body: bytes | bytearray, position: int) -> bool:
    return body.startswith((b"NaN", b"Infinity"), position) or (
        body.startswith(b"-Infinity", position - 1) if position else False
    )


def _malformed(
    exc: msgspec.DecodeError, body: bytes | bytearray, marked: bytes | None = None
) -> MalformedJsonError:
    """ "malformed JSON: <msgspec's reason> at line L column C" (of `body` as sent)."""
    message = str(exc)
    match = _MALFORMED.fullmatch(message)
    if match is None:  # "Input data was truncated": no position to give
        return MalformedJsonError(f"malformed JSON: {shorten(message, 200).lower()}")
    position = int(match[2])
    if marked is not None:  # the marks are longer than the words they replace
        nans = marked.count(_NAN_MARK, 0, position)
        infinities = marked.count(_INFINITY_MARK, 0, position)
        position -= nans * (len(_NAN_MARK) - len(b"NaN"))
        position -= infinities * (len(_INFINITY_MARK) - len(b"Infinity"))
    line = body.count(b"\n", 0, position) + 1
    column = position - body.rfind(b"\n", 0, position)
    return MalformedJsonError(f"malformed JSON: {match[1]} at line {line} column {column}")


# -- one field -----------------------------------------------------------------------------


def field_problem(name: str, raw: msgspec.Raw, exc: msgspec.ValidationError) -> InputProblem:
    """The first problem of a field its decoder refused, at the index msgspec names."""
    path = _path(exc)
    if path is None:  # msgspec worded this error in a way not read here: pass it on
        return InputProblem((name,), f"{name}: {shorten(str(exc), 200)}")
    return _problem_at(name, raw, path)


def _array_size(name: str, raw: msgspec.Raw) -> int | InputProblem:
    """The size of the array `name` as its decoder reads it, or the first problem it names.

    A long array is read a piece at a time (`json_pieces`): the Python floats of one piece
    at most are held.
    """
    size = _size_in_pieces(FIELD_DECODERS[name], raw, name, ())
    if size is not None:
        return size
    try:
        return len(FIELD_DECODERS[name].decode(raw))
    except msgspec.ValidationError as exc:
        return field_problem(name, raw, exc)


def _size_in_pieces(
    decoder: msgspec.json.Decoder[Any], raw: msgspec.Raw, name: str, within: tuple[int, ...]
) -> int | InputProblem | None:
    """The size of the array `raw` (at `within` in the field `name`) read by `decoder` a
    piece at a time, or its first problem; None when it is short, or to be read whole."""
    if len(raw) <= TYPED_PIECE_BYTES:
        return None
    size = 0
    try:
        for piece in array_pieces(raw, NUMBERS, TYPED_PIECE_BYTES):
            try:
                values = decoder.decode(piece)
            except msgspec.ValidationError as exc:
                path = _path(exc)
                if not path:  # not an element's problem: worded from the whole
                    return None
                return _problem_at(name, piece, path, within=within, first=size)
            size += len(values)
            del values
    except (ValueError, msgspec.DecodeError):
        return None  # a piece that is not whole elements: the array is read whole
    return size


def _matrix_problem(raw: msgspec.Raw) -> InputProblem | None:
    """The first problem of log_prob_grads, read a row at a time (None if it has none).

    The problem its decoder would name, with the Python floats of one row at most held,
    and the raw views of one piece of rows (`json_pieces`).
    """
    try:
        first = 0
        for piece in array_pieces(raw, ROWS, TYPED_PIECE_BYTES):
            rows = ITEMS.decode(piece)
            problem = _first_row_problem(piece, rows, first)
            if problem is not None:
                return problem
            first += len(rows)
        return None
    except (ValueError, msgspec.DecodeError):
        pass  # not an array, or a piece cut inside a row: the rows are read whole
    try:
        rows = ITEMS.decode(raw)
    except msgspec.ValidationError as exc:
        return field_problem(MATRIX, raw, exc)
    return _first_row_problem(raw, rows, 0)


def _first_row_problem(
    text: msgspec.Raw | memoryview | bytes, rows: list[msgspec.Raw], first: int
) -> InputProblem | None:
    """The first problem among `rows`, the rows of `text` (the matrix's from the `first`)."""
    for index, row in enumerate(rows):
        problem = _row_problem(text, index, row, first)
        if problem is not None:
            return problem
    return None


def _row_problem(
    rows: msgspec.Raw | memoryview | bytes, index: int, row: msgspec.Raw, first: int
) -> InputProblem | None:
    """The problem of row `index` of `rows` (the matrix's rows from the `first`), if any."""
    in_pieces = _size_in_pieces(ROW_DECODER, row, MATRIX, (first + index,))
    if in_pieces is not None:
        return in_pieces if isinstance(in_pieces, InputProblem) else None
    try:
        ROW_DECODER.decode(row)
    except msgspec.ValidationError as exc:
        path = _path(exc)
        if path is None:
            return InputProblem((MATRIX,), f"{MATRIX}: {shorten(str(exc), 200)}")
        return _problem_at(MATRIX, rows, (index, *path), first=first)
    return None


def _problem_at(
    name: str,
    raw: msgspec.Raw | memoryview | bytes,
    path: tuple[int, ...],
    *,
    within: tuple[int, ...] = (),
    first: int = 0,
) -> InputProblem:
    """What is wrong with the value at `path` in `raw`: the field `name`'s raw JSON, or a
    piece of the array at `within` in it whose first element is that array's `first`."""
    loc: Loc = (name, *within, first + path[0], *path[1:]) if path else (name, *within)
    element = _element(raw, path)
    if len(loc) - 1 < _NUMBER_DEPTH[name]:
        return InputProblem(loc, not_an_array(loc, _raw_kind(element)))
    if _is_number(element):  # a number where one belongs, refused: beyond float64
        return InputProblem(loc, not_finite(format_loc(loc), _number_text(element)))
    return InputProblem(loc, not_a_number(format_loc(loc), _raw_kind(element)))


def _path(exc: msgspec.ValidationError) -> tuple[int, ...] | None:
    """The indices msgspec names in its error; () for the value itself, None if unread."""
    message = str(exc)
    match = _AT.search(message)
    if match:
        return tuple(int(index) for index in re.findall(r"\d+", match[1]))
    return None if " - at `" in message else ()


def _element(raw: msgspec.Raw | memoryview | bytes, path: tuple[int, ...]) -> bytes:
    """The raw JSON text at `path` inside `raw` (an index per level)."""
    value: msgspec.Raw | memoryview | bytes = raw
    for index in path:
        value = ITEMS.decode(value)[index]
    return bytes(value).strip(_WHITESPACE)


def _raw_kind(raw: bytes | bytearray) -> str:
    """`json_kind` of a raw JSON value, from its first character; strings are decoded."""
    start = _SPACE.match(raw)
    first = bytes(raw[start.end() : start.end() + 1]) if start else b""
    if first == b'"':
        try:
            return json_kind(_STRING.decode(raw))
        except msgspec.DecodeError:
            return "a string"
    kinds = {b"[": "an array", b"{": "an object", b"n": "null"}
    if first in kinds:
        return kinds[first]
    if first in (b"t", b"f"):
        return json_kind(first == b"t")
    # The number's own characters: msgspec may refuse a body's value before it looks at
    # what follows it.
    token = _NUMBER_TOKEN.match(raw, start.end() if start else 0)
    return f"a number ({_number_text(token[0] if token else b'')})"


def _is_number(raw: bytes) -> bool:
    return bool(raw) and raw[:1] in b"-0123456789"


def _number_text(token: bytes) -> str:
    """A number literal as a message shows it: integers as written, others as parsed."""
    if token in _SHOWN_MARKS:
        return _SHOWN_MARKS[token]
    text = token.decode("ascii", "replace")
    if len(text) > 100 or not any(c in text for c in ".eE"):
        return shorten(text)
    try:
        return repr(float(text))
    except ValueError:  # not a number msgspec read, so not one to parse either
        return shorten(text)


def _stand_in(raw: bytes) -> Any:
    """What the options model is given for a value msgspec cannot hold."""
    token = raw.strip(_WHITESPACE)
    if token[:1] == b"[":
        return []
    if token[:1] == b"{":
        return {}
    if token == _NAN_MARK:
        return math.nan
    return -math.inf if token[:1] == b"-" else math.inf
