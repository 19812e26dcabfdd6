"""JSON on the wire: bytes to an `UpdatePayload`, an `UpdateResult` to bytes.

Valid requests over 16 KiB take a fast path with no Python float per number. One that
sends no option is split by its brackets (`decode_split`, `json_brackets`): its skeleton,
the body without the numbers of its arrays, is parsed whole and must hold exactly the
request's fields; then pysimdjson parses each array and each row of `log_prob_grads` on its
own, straight into float64 buffers. Any other (options, or a skeleton that is not a plain
request's) goes to `decode_fast`: msgspec checks the body's structure (strict: no unknown
fields, the scalars as numbers) and keeps each array and row as raw JSON, which pysimdjson
parses the same way. Either way the number of elements is known before the gradient
matrix is parsed or allocated, so RLHF_MAX_ELEMENTS is checked first, and one row is parsed
at a time, so what the parser holds stays the size of a row.

Bodies up to 16 KiB that send no option are parsed whole by pysimdjson (`decode_plain`):
one document, each array read into a float64 buffer, the rows' lengths and the count of
brackets checked, so that a ragged or nested array never passes as a flat one.

Bodies neither path takes whole (integers beyond 64 bits, which pysimdjson does not parse,
small bodies with options, and every invalid body) go to msgspec's typed decode
into lists of floats (`json_fields.RequestFields`). There the few algorithm options, kept
as raw JSON, are read by the Pydantic model of the options (`json_refusal.read_options`);
a body of the right types whose values break a rule (empty arrays, rows of the wrong
length, a negative beta or lr) is worded from what msgspec decoded, and any other body
msgspec refuses is read again, field by field, by `json_refusal.refusal`, at a cost
bounded by its answer. A body over 16 KiB of few arrays (the fast paths' kind), or any
over 1 MiB, takes that typed decode a piece of an array at a time (`_decode_staged`,
`json_pieces`): the same answers, with the Python floats of one piece at most held at
once. Every path parses each number to the same correctly rounded float64. The README's
Performance section has the measurements behind this split.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, cast

import msgspec
import numpy as np
import orjson
import simdjson
from numpy.typing import NDArray

from ..core import DEFAULT_OPTIONS, InputProblem, UpdateOptions, UpdateResult
from ..core.results import AppliedStep, GradientResult
from ..errors import InvalidPayloadError, MalformedJsonError
from .json_brackets import bracket_positions, count_byte, skeleton
from .json_fields import (
    FIELD_DECODERS,
    FLOAT,
    ITEMS,
    MATRIX,
    ROW_DECODER,
    SCALARS,
    RequestFields,
)
from .json_pieces import NUMBERS, PARSED_PIECE_BYTES, ROWS, TYPED_PIECE_BYTES, array_pieces
from .json_refusal import (
    field_order,
    field_problem,
    most_arrays,
    most_short_numbers,
    nested_too_deeply,
    overfull,
    read_options,
    refusal,
    value_problems,
)
from .limits import check_element_count
from .messages import OPTIONS
from .partials import GRAD_PARTIALS, partials_fields
from .payload import UpdatePayload
from .stats import batch_stats_as_dict, stats_as_dict

__all__ = [
    "decode_fast",
    "decode_plain",
    "decode_request",
    "decode_split",
    "encode_applied",
    "encode_gradient",
    "encode_response",
]

# The 1-D arrays of the request, in the order the fast path reads them; one name each (an
# UpdatePayload field of the same name receives it, on both paths).
_VECTORS = ("weights", "rewards", "policy_log_probs", "ref_log_probs")
# Bodies up to this size take the typed decode: with one call instead of one per array
# and row it is the faster there, and the Python floats of 16 KiB of text weigh a few
# hundred KB at most, whatever RLHF_MAX_ELEMENTS.
_TYPED_BYTES = 16 * 1024
# The fast path parses each array and row on its own: for arrays shorter than this on
# average (millions of short rows), msgspec's decoders are the faster.
_FAST_ROW_BYTES = 256
# Below this size, decoding costs tens of milliseconds at worst: counting the brackets and
# commas of every small body (about a nanosecond a byte) would cost more than it saves.
_COUNTED_BODY_BYTES = 1 << 20

# The typed decode: the options are few and small, msgspec keeps each as its raw JSON
# (empty when absent) and read_options has the Pydantic model of the options read them.
_FastRequest = msgspec.defstruct(
    "_FastRequest",
    [(name, msgspec.Raw, msgspec.Raw()) for name in OPTIONS],
    bases=(RequestFields,),
    forbid_unknown_fields=True,
)
_FAST_DECODER = msgspec.json.Decoder(_FastRequest)


def _structure_decoder(name: str, scalar: type, matrix: Any) -> msgspec.json.Decoder[Any]:
    """The structure only: each vector as raw JSON, a view on the body, the matrix as
    `matrix` (its rows raw, or itself raw); beta and lr as `scalar`."""
    return msgspec.json.Decoder(
        msgspec.defstruct(
            name,
            [
                *((vector, msgspec.Raw) for vector in _VECTORS),
                (MATRIX, matrix),
                *((field, scalar) for field in SCALARS),
                *((option, msgspec.Raw, msgspec.Raw()) for option in OPTIONS),
            ],
            forbid_unknown_fields=True,
        )
    )


_RAW_DECODER = _structure_decoder("_RawRequest", float, list[msgspec.Raw])
# The typed decode's, for `_decode_staged`: the scalars raw, as there, so that a message
# can quote them; the matrix raw too, its rows read a piece at a time.
_STAGED_DECODER = _structure_decoder("_StagedRequest", msgspec.Raw, msgspec.Raw)
# The fields of a body that sends no option: `decode_plain` reads these bodies whole.
_PLAIN_FIELDS = frozenset((*_VECTORS, MATRIX, *SCALARS))
# What the skeleton of such a body (`decode_split`) holds beyond its arrays' brackets: its
# keys, its two scalars and the whitespace between them, at most this many bytes; and per
# array, its brackets, a comma and the whitespace of a line of its own. A larger skeleton
# (a million keys, say) is another body's, left to the paths that word its refusal.
_SKELETON_BYTES = 4096
_SKELETON_BYTES_PER_ARRAY = 64
# The narrowest float orjson prints itself (as its shortest round trip).
_SHORTEST_PRINTED = np.dtype(np.float32)
# What pysimdjson raises on anything but numbers: a non-number, a literal beyond float64
# (1e999), an integer beyond 64 bits, a malformed document.
_SIMDJSON_ERRORS = (ValueError, TypeError, RuntimeError)
# `_small_document`'s parser of each thread.
_SMALL_PARSERS = threading.local()


def decode_request(body: bytes | bytearray, max_elements: int | None = None) -> UpdatePayload:
    """Parse and validate a JSON request body straight from its bytes.

    Raises `TooManyElementsError` when B*N + B + N exceeds `max_elements` (when given),
    before the arrays are built; `MalformedJsonError` or `InvalidPayloadError` naming what
    is wrong otherwise.
    """
    if not body or body.isspace():
        msg = "request body is empty; expected a JSON object"
        raise MalformedJsonError(msg)
    if len(body) <= _TYPED_BYTES:
        payload = decode_plain(body, max_elements)
        return _decode_typed(body, max_elements) if payload is None else payload
    # Every later use of the brackets reads these; their offsets only for a body of few
    # arrays, the only one the fast paths take.
    opening = bracket_positions(body, b"[", len(body) // _FAST_ROW_BYTES)
    brackets = count_byte(body, b"[") if opening is None else opening.size
    if len(body) > _COUNTED_BODY_BYTES:
        _refuse_overfull(body, brackets)
    if opening is not None:
        payload = decode_split(body, max_elements, opening)
        if payload is None:
            payload = decode_fast(body, max_elements, brackets)
        if payload is not None:
            return payload
    if opening is not None or len(body) > _COUNTED_BODY_BYTES:
        return _decode_staged(body, max_elements)
    return _decode_typed(body, max_elements)


def decode_plain(body: bytes | bytearray, max_elements: int | None) -> UpdatePayload | None:
    """The payload of a small valid body that sends no option, parsed whole by pysimdjson.

    None for any other body, which the typed decode then reads (and words, if it refuses
    it): one with options, fields missing, unknown or repeated, a scalar that is not a
    number >= 0, an empty array, a row of another length than the weights, or anything
    pysimdjson does not parse into numbers. The count of brackets proves each array flat.
    """
    try:
        fields = _plain_fields(_small_document(body))
        if fields is None:
            return None
        beta, lr, vectors, rows, row_lengths = fields
        lengths = [len(vector) for vector in vectors]
        if not all(lengths) or body.count(b"[") != len(_VECTORS) + 1 + len(rows):
            return None
        n = lengths[0]
        if any(length != n for length in row_lengths):
            return None
        if max_elements is not None:
            check_element_count(lengths[1], n, len(rows) * n, max_elements)
        parsed = {
            name: np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
            for name, array in zip(_VECTORS, vectors, strict=True)
        }
        grads = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64).reshape(-1, n)
    except _SIMDJSON_ERRORS:
        return None
    return _plain_payload(parsed, grads, beta, lr)


def _small_document(body: bytes | bytearray) -> Any:
    """`body` parsed by this thread's parser for small bodies, kept from one to the next.

    A parser's first document allocates its buffers, which costs more than parsing a
    small body; a kept one reuses them, and holds at most a small body's worth. A parser
    still referenced by an earlier document (an array of it kept by a traceback) refuses
    to parse another: that thread then takes a new one.
    """
    parser = getattr(_SMALL_PARSERS, "parser", None)
    if parser is not None:
        try:
            return parser.parse(body)
        except RuntimeError:
            pass
    parser = _SMALL_PARSERS.parser = simdjson.Parser()
    return parser.parse(body)


def decode_split(
    body: bytes | bytearray, max_elements: int | None, opening: NDArray[np.intp]
) -> UpdatePayload | None:
    """The payload of a valid body that sends no option, its arrays found by their brackets.

    One pass over the body finds its ']' (`opening` holds the offsets of its '['); the
    skeleton, the body without the numbers of its innermost arrays, is parsed whole and
    must hold exactly the fields of `decode_plain`, with each vector and each row an empty
    array in it; then each array's content is parsed on its own, straight into float64,
    piece by piece as in `decode_fast`. That proves the split right (`json_brackets`), and
    it reads the body twice (the ']' and the numbers) where msgspec's structure and the
    arrays read it three times. RLHF_MAX_ELEMENTS is checked once the weights are read,
    before the gradient matrix is parsed or allocated. None for any other body.
    """
    closing = bracket_positions(body, b"]", opening.size)
    found = None if closing is None else skeleton(body, opening, closing)
    if found is None or found.size > _SKELETON_BYTES + _SKELETON_BYTES_PER_ARRAY * len(found):
        return None
    try:
        document = simdjson.Parser().parse(found.text())
        fields = _plain_fields(document)
        if fields is None:
            return None
        beta, lr, vectors, rows, row_lengths = fields
        if any(map(len, vectors)) or any(row_lengths) or len(found) != len(_VECTORS) + len(rows):
            return None
        # The innermost arrays come in the order of the keys: a vector's one, or the rows.
        vector_spans: dict[str, int] = {}
        first_row = index = 0
        for name in cast(simdjson.Object, document).keys():  # noqa: SIM118 (not a dict)
            if name == MATRIX:
                first_row = index
                index += len(rows)
            elif name not in SCALARS:
                vector_spans[name] = index
                index += 1
        parser = simdjson.Parser()
        parsed = {name: _vector(parser, found.span(vector_spans[name])) for name in _VECTORS}
        n = parsed["weights"].size
        if not all(array.size for array in parsed.values()):
            return None
        if max_elements is not None:
            check_element_count(parsed["rewards"].size, n, len(rows) * n, max_elements)
        grads = np.empty((len(rows), n))
        for row, out in enumerate(grads, start=first_row):
            if not _fill_row(parser, found.span(row), out):
                return None
    except _SIMDJSON_ERRORS:
        return None
    return _plain_payload(parsed, grads, beta, lr)


class _PlainFields(NamedTuple):
    beta: float
    lr: float
    vectors: list[simdjson.Array]  # in the order of _VECTORS
    rows: simdjson.Array
    row_lengths: list[int]


def _plain_fields(document: object) -> _PlainFields | None:
    """The fields of a document with exactly the fields of a body that sends no option,
    once each: beta and lr numbers >= 0, each vector and each row of `log_prob_grads` an
    array of any length. None for any other document.
    """
    if not isinstance(document, simdjson.Object) or len(document) != len(_PLAIN_FIELDS):
        return None
    keys = list(document.keys())  # a repeated key is listed twice
    if len(keys) != len(_PLAIN_FIELDS) or set(keys) != _PLAIN_FIELDS:
        return None
    beta, lr = (_plain_scalar(document[name]) for name in SCALARS)
    rows = document[MATRIX]
    vectors = [document[name] for name in _VECTORS]
    if (
        beta is None
        or lr is None
        or not isinstance(rows, simdjson.Array)
        or not all(isinstance(vector, simdjson.Array) for vector in vectors)
    ):
        return None
    row_lengths = [len(row) if isinstance(row, simdjson.Array) else -1 for row in rows]
    if -1 in row_lengths:
        return None
    return _PlainFields(beta, lr, cast(list[simdjson.Array], vectors), rows, row_lengths)


def _plain_payload(
    parsed: dict[str, NDArray[np.float64]], grads: NDArray[np.float64], beta: float, lr: float
) -> UpdatePayload:
    # Each vector by its name: a name added to _VECTORS reaches the payload field of that name.
    fields: dict[str, Any] = parsed
    return UpdatePayload(**fields, log_prob_grads=grads, beta=beta, lr=lr, options=DEFAULT_OPTIONS)


def _plain_scalar(value: object) -> float | None:
    """beta or lr as the typed decode reads it, when it is a finite number >= 0."""
    # bool is an int to Python, not a number to JSON.
    if type(value) is int or type(value) is float:
        number = float(value)
        if math.isfinite(number) and number >= 0:
            return number
    return None


def _decode_typed(body: bytes | bytearray, max_elements: int | None) -> UpdatePayload:
    """The payload of a body through lists of Python floats, or the problems that refuse it."""
    request = _fast_decode(body)
    if isinstance(request, msgspec.DecodeError):
        raise refusal(body, request)
    rows = request.log_prob_grads
    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
    n = len(request.weights)
    beta, lr, options = _checked_values(request, n, len(request.rewards), lengths)
    if max_elements is not None:
        check_element_count(len(request.rewards), n, int(lengths.sum()), max_elements)
    return UpdatePayload(
        weights=np.array(request.weights, dtype=np.float64),
        rewards=np.array(request.rewards, dtype=np.float64),
        policy_log_probs=np.array(request.policy_log_probs, dtype=np.float64),
        ref_log_probs=np.array(request.ref_log_probs, dtype=np.float64),
        log_prob_grads=_matrix(rows, n),
        beta=beta,
        lr=lr,
        options=options,
    )


def _decode_staged(body: bytes | bytearray, max_elements: int | None) -> UpdatePayload:
    """`_decode_typed` for a large body, a piece of an array at a time (`json_pieces`).

    The same decoders on the same values, so the same payload or the same refusal; but
    the Python floats of one piece at most are held at once, each piece turned into
    float64 as soon as it is read. A body the fast paths did not take whole
    (a non-number in an array, a ragged row, an integer beyond 64 bits, a bad option,
    millions of short rows) costs the float64 of its arrays, not 32 bytes a number.
    """
    try:
        request = _STAGED_DECODER.decode(body)
    except RecursionError:
        raise nested_too_deeply() from None
    except msgspec.DecodeError:
        # Not JSON, not an object, a key unknown or missing, a matrix that is not an
        # array: the typed decode refuses each of these too, and `refusal` words them.
        raise refusal(body) from None
    arrays = _staged_arrays(request, max_elements)
    if arrays is None:
        # Raised here, once the arrays read so far and the failure's frames are gone.
        raise refusal(body)
    vectors, grads, lengths = arrays
    # Every row is as long as the weights once these pass: the element count checked
    # before the rows were read is the update's.
    beta, lr, options = _checked_values(
        request, vectors["weights"].size, vectors["rewards"].size, lengths
    )
    fields: dict[str, Any] = vectors
    return UpdatePayload(**fields, log_prob_grads=grads, beta=beta, lr=lr, options=options)


def _staged_arrays(
    request: object, max_elements: int | None
) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.float64], NDArray[np.int64]] | None:
    """The vectors, the rows of the weights' length and every row's length; None when an
    array does not decode (msgspec's typed decode would refuse the body).

    Raises `TooManyElementsError` as `decode_fast` does, once the vectors are read and
    before the rows are.
    """
    vectors: dict[str, NDArray[np.float64]] = {}
    try:
        for name in _VECTORS:
            vectors[name] = _typed_vector(getattr(request, name), FIELD_DECODERS[name])
        matrix: msgspec.Raw = getattr(request, MATRIX)
        counted = _rows_in_pieces(matrix)
        # Not an array, or cut inside a row (one longer than a piece): its rows read whole.
        whole = ITEMS.decode(matrix) if counted is None else None
        rows = len(whole) if whole is not None else cast(int, counted)
        n = vectors["weights"].size
        if max_elements is not None:
            check_element_count(vectors["rewards"].size, n, rows * n, max_elements)
        lengths = np.empty(rows, np.int64)
        # Pages are taken as rows are written: a refused body touches those read so far.
        grads = np.empty((rows, n))
        if whole is None:
            done = 0
            for piece in array_pieces(matrix, ROWS, TYPED_PIECE_BYTES):
                done += _fill_rows(piece, grads[done:], lengths[done:])
        else:
            for index, raw in enumerate(whole):
                lengths[index] = _fill_typed_row(raw, grads[index])
    except msgspec.DecodeError:  # a ValidationError, or a piece pysimdjson alone took
        return None
    return vectors, grads, lengths


def _rows_in_pieces(matrix: msgspec.Raw) -> int | None:
    """How many rows the matrix has, when it can be read in pieces of whole rows.

    Counted by pysimdjson, which makes no Python object per row; msgspec counts a piece
    pysimdjson does not take (an integer beyond 64 bits). None for a matrix that is not an
    array, or whose pieces are not whole rows.
    """
    parser = simdjson.Parser()
    rows = 0
    try:
        for piece in array_pieces(matrix, ROWS, TYPED_PIECE_BYTES):
            try:
                rows += len(cast(simdjson.Array, parser.parse(piece)))
            except _SIMDJSON_ERRORS:
                rows += len(ITEMS.decode(piece))
    except (ValueError, msgspec.DecodeError):
        return None
    return rows


def _fill_rows(
    piece: msgspec.Raw | memoryview | bytes,
    grads: NDArray[np.float64],
    lengths: NDArray[np.int64],
) -> int:
    """Read a piece of whole rows into the first rows of `grads`, those of its width; each
    row's length into `lengths`. How many rows the piece held."""
    rows = FIELD_DECODERS[MATRIX].decode(piece)
    count = len(rows)
    lengths[:count] = np.fromiter(map(len, rows), np.int64, count)
    fitting = lengths[:count] == grads.shape[1]
    if count and fitting.all():
        grads[:count] = rows
    else:
        for index in np.flatnonzero(fitting).tolist():
            grads[index] = rows[index]
    return count


def _fill_typed_row(raw: msgspec.Raw, out: NDArray[np.float64]) -> int:
    """Read a row as msgspec does into `out` when it is of its width; the row's length."""
    if len(raw) > TYPED_PIECE_BYTES:
        # A row of the wrong length is refused, whatever its numbers.
        return _typed_fill(raw, ROW_DECODER, out)
    row = ROW_DECODER.decode(raw)
    if len(row) == out.size:
        out[:] = row
    return len(row)


def _typed_vector(raw: msgspec.Raw, decoder: msgspec.json.Decoder[Any]) -> NDArray[np.float64]:
    """A vector as `decoder` reads it, in float64, the Python floats of a piece at a time.

    Raises `msgspec.ValidationError` as `decoder` would on the whole vector.
    """
    if len(raw) <= TYPED_PIECE_BYTES:
        # One expression: the list of Python floats goes as soon as it is copied.
        return np.array(decoder.decode(raw), dtype=np.float64)
    # As many entries as commas and one at most: np.empty takes no page until written.
    out = np.empty(count_byte(memoryview(raw), NUMBERS) + 1)
    return out[: _typed_fill(raw, decoder, out)]


def _typed_fill(
    raw: msgspec.Raw, decoder: msgspec.json.Decoder[Any], out: NDArray[np.float64]
) -> int:
    """Read the array `raw` as `decoder` does into `out`, as far as it fits, a piece at a
    time (`json_pieces`); its length.

    Raises `msgspec.ValidationError` as `decoder` would on the whole array.
    """
    try:
        filled = 0
        for piece in array_pieces(raw, NUMBERS, TYPED_PIECE_BYTES):
            filled += _copied(decoder.decode(piece), out, filled)
        return filled
    except msgspec.ValidationError:
        raise
    except (ValueError, msgspec.DecodeError):
        pass  # a piece that is not whole elements: the array is read whole
    return _copied(decoder.decode(raw), out, 0)


def _copied(values: Sequence[float], out: NDArray[np.float64], at: int) -> int:
    """Copy what fits of `values` into `out` from `at`; how many values there were."""
    room = max(min(len(values), out.size - at), 0)
    if room:
        out[at : at + room] = values[:room]
    return len(values)


def _checked_values(
    request: object, weights: int, rewards: int, row_lengths: NDArray[np.int64]
) -> tuple[float, float, UpdateOptions]:
    """beta, lr and the options of a body whose arrays have the right types (`weights`
    and `rewards` their sizes, `row_lengths` the rows').

    Raises
    ------
    InvalidPayloadError
        Naming every problem of its values: beta or lr not a number or below 0, empty
        weights or rewards, rows of another length than the weights, the options'.
    """
    problems: list[InputProblem] = []
    scalars: dict[str, tuple[float, bytes]] = {}
    for name in SCALARS:
        raw = getattr(request, name)
        try:
            scalars[name] = (FLOAT.decode(raw), bytes(raw))
        except msgspec.ValidationError as exc:
            problems.append(field_problem(name, raw, exc))
    found, unlisted = value_problems(weights, rewards, row_lengths, scalars)
    options, option_problems = read_options(
        {name: raw for name in OPTIONS if (raw := getattr(request, name))}
    )
    problems = sorted([*problems, *found, *option_problems], key=field_order)
    if problems or options is None:
        raise InvalidPayloadError(problems, unlisted=unlisted)
    return scalars["beta"][0], scalars["lr"][0], options


def decode_fast(
    body: bytes | bytearray, max_elements: int | None, brackets: int | None = None
) -> UpdatePayload | None:
    """The fast path alone: the payload of a valid body, with no Python float per number.

    None for a body it does not take whole (an invalid one, or integers beyond 64 bits),
    which `decode_request` then hands to the typed path. Raises `TooManyElementsError`
    when B*N + B + N exceeds `max_elements` (when given), before the gradient matrix is
    parsed or allocated. `brackets`, when the caller has counted them, is the number of
    '[' in `body`.
    """
    try:
        request = _RAW_DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):  # the typed path words either
        return None
    rows: list[msgspec.Raw] = getattr(request, MATRIX)
    options, option_problems = read_options(
        {name: raw for name in OPTIONS if (raw := getattr(request, name))}
    )
    # Every '[' in a valid body opens an array this path reads (the keys and option values
    # that are strings are fixed words): one more is an array nested where a number
    # belongs, which the flat buffers below would silently flatten.
    expected = len(_VECTORS) + 1 + len(rows)
    expected += sum(bytes(raw).count(b"[") for name in OPTIONS if (raw := getattr(request, name)))
    if brackets is None:
        brackets = count_byte(body, b"[")
    if options is None or option_problems or brackets != expected:
        return None
    parser = simdjson.Parser()
    try:
        vectors = {name: _vector(parser, getattr(request, name)) for name in _VECTORS}
        n = vectors["weights"].size
        if max_elements is not None:
            check_element_count(vectors["rewards"].size, n, len(rows) * n, max_elements)
        grads = np.empty((len(rows), n))
        for row, out in zip(rows, grads, strict=True):
            if not _fill_row(parser, row, out):
                return None
    except _SIMDJSON_ERRORS:
        return None
    return _payload(vectors, grads, request, options)


def _fill_row(
    parser: simdjson.Parser, raw: msgspec.Raw | memoryview, out: NDArray[np.float64]
) -> bool:
    """Parse a row into `out`; whether it held exactly as many numbers as `out`."""
    n, filled = out.size, 0
    for piece in _pieces(parser, raw):
        out[filled : filled + piece.size] = piece[: n - filled]
        filled += piece.size
    return filled == n


def _vector(parser: simdjson.Parser, raw: msgspec.Raw | memoryview) -> NDArray[np.float64]:
    """A flat JSON array of numbers as float64, each the correctly rounded value."""
    pieces = list(_pieces(parser, raw))
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _pieces(
    parser: simdjson.Parser, raw: msgspec.Raw | memoryview
) -> Iterator[NDArray[np.float64]]:
    """The numbers of a flat JSON array, as float64 arrays of consecutive pieces.

    A long array is parsed in pieces (`json_pieces`), so that what the parser holds stays
    the size of one piece.
    """
    for piece in array_pieces(raw, NUMBERS, PARSED_PIECE_BYTES):
        yield _parsed(parser, piece)


def _parsed(parser: simdjson.Parser, text: msgspec.Raw | memoryview | bytes) -> NDArray[np.float64]:
    document = parser.parse(text)
    if not isinstance(document, simdjson.Array):
        raise TypeError
    values = np.frombuffer(document.as_buffer(of_type="d"), dtype=np.float64)
    # The parser holds one document at a time: let go of this one before the next.
    del document
    return values


def _payload(
    vectors: dict[str, NDArray[np.float64]],
    grads: NDArray[np.float64],
    request: object,
    options: UpdateOptions,
) -> UpdatePayload | None:
    """The payload, once the rules of `UpdateRequest` beyond the core's shapes hold."""
    beta, lr = (cast(float, getattr(request, name)) for name in SCALARS)
    if vectors["weights"].size == 0 or vectors["rewards"].size == 0 or beta < 0 or lr < 0:
        return None
    # Each vector by its name: a name added to _VECTORS reaches the payload field of that name.
    arrays: dict[str, Any] = vectors
    return UpdatePayload(**arrays, log_prob_grads=grads, beta=beta, lr=lr, options=options)


def _refuse_overfull(body: bytes | bytearray, brackets: int) -> None:
    """Refuse a body that cannot be valid for its size before any of it is decoded.

    Millions of short numbers or one-number rows cost 16 to 100 bytes of Python objects
    per few bytes of text, and hold the interpreter for seconds. A count of the body's
    brackets tells one with more arrays than a valid body of its size; for one dense with
    short numbers, each field's length is checked (`json_refusal.overfull`).
    """
    too_many_arrays = brackets > most_arrays(len(body))
    if too_many_arrays or count_byte(body, b",") > most_short_numbers(len(body)):
        problem = overfull(body, sure=too_many_arrays)
        if problem is not None:
            raise problem


def _fast_decode(body: bytes | bytearray) -> RequestFields | msgspec.DecodeError:
    """The body as typed fields, or msgspec's reason to refuse it.

    The reason is returned, not raised, so that nothing msgspec decoded before it stopped
    is still referenced while the refusal reads the body again.
    """
    try:
        return cast(RequestFields, _FAST_DECODER.decode(body))
    except RecursionError:  # skipping an option nested past msgspec's recursion limit
        raise nested_too_deeply() from None
    except msgspec.DecodeError as exc:
        return exc


def _matrix(rows: Sequence[Sequence[float]], n: int) -> NDArray[np.float64]:
    """Rows of n floats each as one (len(rows), n) array."""
    # Filled from one flat iterator of known length, without np.array's walk of the
    # nested sequences to find their shape.
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64, len(rows) * n)
    return flat.reshape(-1, n)


def encode_response(result: UpdateResult) -> bytes:
    """Serialise straight from the float64 buffer; floats print as their shortest round trip.

    float32 weights print as float32's shortest decimals; half-precision ones (from a binary
    request) are widened to float64 first, exactly, as orjson knows no bfloat16.
    """
    weights = result.weights
    if weights.dtype.itemsize < _SHORTEST_PRINTED.itemsize:
        weights = weights.astype(np.float64)
    body: dict[str, Any] = {"weights": weights, "stats": stats_as_dict(result)}
    state = result.optimizer_state
    if state is not None:
        body["optimizer_state"] = {"step": state.step, **state.vectors()}
    if result.partials is not None:
        body |= partials_fields(result.partials)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_gradient(result: GradientResult) -> bytes:
    """A block's gradient, its norm partials and the batch's statistics."""
    body = {
        "grad": result.grad,
        GRAD_PARTIALS: result.partials,
        "stats": batch_stats_as_dict(result.stats),
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_applied(result: AppliedStep) -> bytes:
    """A block's new weights and state, whether it clipped, and its norm partials."""
    weights = result.weights
    if weights.dtype.itemsize < _SHORTEST_PRINTED.itemsize:
        weights = weights.astype(np.float64)
    body: dict[str, Any] = {"weights": weights, "clipped": result.clipped}
    state = result.optimizer_state
    if state is not None:
        body["optimizer_state"] = {"step": state.step, **state.vectors()}
    body |= partials_fields(result.partials)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
