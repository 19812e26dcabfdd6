"""JSON on the wire: bytes to an `UpdatePayload`, an `UpdateResult` to bytes.

Valid requests take a fast path with no Python float per number: msgspec checks the
body's structure (strict: no unknown fields, the scalars as numbers) and keeps each array,
and each row of `log_prob_grads`, as raw JSON; pysimdjson then parses each of those
straight into float64 buffers. The few algorithm options, also raw JSON, go to the
Pydantic model of the options. The number of elements is known from the structure, so
RLHF_MAX_ELEMENTS is checked before the gradient matrix is parsed or allocated, and one
row is parsed at a time, so what the parser holds stays the size of a row.

Bodies up to 16 KiB, and those the fast path does not take whole (integers beyond 64 bits,
which pysimdjson does not parse, among others), go to msgspec's typed decode into lists of
floats; a body that one refuses goes through the Pydantic model of the whole request, only
to word its errors. Every path refuses exactly the same bodies and parses each number to
the same correctly rounded float64. The README's Performance section has the measurements
behind this split.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, cast

import msgspec
import numpy as np
import orjson
import simdjson
from numpy.typing import NDArray
from pydantic import ValidationError

from ..core import InputProblem, UpdateOptions, UpdateResult
from ..errors import InvalidPayloadError, MalformedJsonError
from .limits import check_element_count
from .messages import describe_validation_error
from .payload import UpdatePayload
from .schemas import UpdateOptionsModel, UpdateRequest
from .stats import stats_as_dict

__all__ = ["decode_fast", "decode_request", "encode_response"]

_OPTIONS = tuple(UpdateOptionsModel.model_fields)
# The 1-D arrays of the request, in the order the fast path reads them; one name each (an
# UpdatePayload field of the same name receives it, on both paths).
_VECTORS = ("weights", "rewards", "policy_log_probs", "ref_log_probs")
_MATRIX = "log_prob_grads"
# Bodies up to this size take the typed decode: with one call instead of one per array
# and row it is the faster there (about 30 against 40 us for 8 x 64), and the Python
# floats of 16 KiB of text weigh a few hundred KB at most, whatever RLHF_MAX_ELEMENTS.
_TYPED_BYTES = 16 * 1024
# Arrays longer than this are parsed piece by piece (see `_pieces`).
_PIECE_BYTES = 1 << 20
_SCALARS = ("beta", "lr")
# The narrowest float orjson prints itself (as its shortest round trip).
_SHORTEST_PRINTED = np.dtype(np.float32)


class _FastArrays(msgspec.Struct, forbid_unknown_fields=True):
    """The request for msgspec: the types of `UpdateRequest`, its value checks done after."""

    weights: list[float]
    rewards: list[float]
    policy_log_probs: list[float]
    ref_log_probs: list[float]
    log_prob_grads: list[list[float]]
    beta: float
    lr: float


def _with_options(name: str, arrays: list[tuple[str, object]]) -> type:
    """A msgspec struct of `arrays` and the scalars, with every option kept as raw JSON.

    The options are few and small: UpdateOptionsModel reads them, so that they follow the
    Pydantic path's rules exactly. An absent option is an empty `Raw`.
    """
    return msgspec.defstruct(
        name,
        [
            *arrays,
            *((scalar, float) for scalar in _SCALARS),
            *((option, msgspec.Raw, msgspec.Raw()) for option in _OPTIONS),
        ],
        forbid_unknown_fields=True,
    )


# The typed decode, the path for what pysimdjson does not parse.
_TypedRequest = msgspec.defstruct(
    "_TypedRequest",
    [(option, msgspec.Raw, msgspec.Raw()) for option in _OPTIONS],
    bases=(_FastArrays,),
    forbid_unknown_fields=True,
)
_TYPED_DECODER = msgspec.json.Decoder(_TypedRequest)
# The structure only: each vector and each row of the matrix as raw JSON, a view on the body.
_RAW_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    _with_options(
        "_RawRequest",
        [*((vector, msgspec.Raw) for vector in _VECTORS), (_MATRIX, list[msgspec.Raw])],
    )
)
# What pysimdjson raises on anything but numbers: a non-number, a literal beyond float64
# (1e999), an integer beyond 64 bits, a malformed document.
_SIMDJSON_ERRORS = (ValueError, TypeError, RuntimeError)


def decode_request(body: bytes | bytearray, max_elements: int | None = None) -> UpdatePayload:
    """Parse and validate a JSON request body straight from its bytes.

    Raises `TooManyElementsError` when B*N + B + N exceeds `max_elements` (when given):
    for a body over 16 KiB before the gradient matrix is parsed, for a smaller one once it
    is decoded.
    """
    if not body or body.isspace():
        msg = "request body is empty; expected a JSON object"
        raise MalformedJsonError(msg)
    payload = None if len(body) <= _TYPED_BYTES else decode_fast(body, max_elements)
    if payload is None:
        payload = _decode_typed(body)
    if payload is None:
        raise _refusal(body)
    if max_elements is not None:
        check_element_count(
            payload.rewards.size,
            payload.weights.size,
            payload.log_prob_grads.size,
            max_elements,
        )
    return payload


def _refusal(body: bytes | bytearray) -> MalformedJsonError | InvalidPayloadError:
    """Why the fast path refused `body`, in the words of the Pydantic model."""
    try:
        request = UpdateRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors[0]["type"] == "json_invalid":
            return MalformedJsonError(f"malformed JSON: {errors[0]['ctx']['error']}")
        return InvalidPayloadError([describe_validation_error(error) for error in errors])
    # The model accepted it: what the fast path refuses beyond the model is ragged rows.
    n = len(request.weights)
    ragged = [
        InputProblem(
            ("log_prob_grads", i),
            f"log_prob_grads[{i}] has {len(row)} entries; expected {n} (= len(weights))",
        )
        for i, row in enumerate(request.log_prob_grads)
        if len(row) != n
    ]
    return InvalidPayloadError(
        ragged or [InputProblem((), "the body does not satisfy the request contract")]
    )


def decode_fast(body: bytes | bytearray, max_elements: int | None) -> UpdatePayload | None:
    """The fast path alone: the payload of a valid body, with no Python float per number.

    None for a body it does not take whole (an invalid one, or integers beyond 64 bits),
    which `decode_request` then hands to the typed path. Raises `TooManyElementsError`
    when B*N + B + N exceeds `max_elements` (when given), before the gradient matrix is
    parsed or allocated.
    """
    try:
        request = _RAW_DECODER.decode(body)
    except msgspec.DecodeError:
        return None
    rows: list[msgspec.Raw] = getattr(request, _MATRIX)
    options = _fast_options(request)
    # Every '[' in a valid body opens an array this path reads (the keys and option values
    # that are strings are fixed words): one more is an array nested where a number
    # belongs, which the flat buffers below would silently flatten.
    brackets = len(_VECTORS) + 1 + len(rows)
    brackets += sum(bytes(raw).count(b"[") for name in _OPTIONS if (raw := getattr(request, name)))
    if options is None or body.count(b"[") != brackets:
        return None
    parser = simdjson.Parser()
    try:
        vectors = {name: _vector(parser, getattr(request, name)) for name in _VECTORS}
        n = vectors["weights"].size
        if max_elements is not None:
            check_element_count(vectors["rewards"].size, n, len(rows) * n, max_elements)
        grads = np.empty((len(rows), n))
        for row, out in zip(rows, grads, strict=True):
            filled = 0
            for piece in _pieces(parser, row):
                out[filled : filled + piece.size] = piece[: n - filled]
                filled += piece.size
            if filled != n:
                return None
    except _SIMDJSON_ERRORS:
        return None
    return _payload(vectors, grads, request, options)


def _vector(parser: simdjson.Parser, raw: msgspec.Raw) -> NDArray[np.float64]:
    """A flat JSON array of numbers as float64, each the correctly rounded value."""
    pieces = list(_pieces(parser, raw))
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _pieces(parser: simdjson.Parser, raw: msgspec.Raw) -> Iterator[NDArray[np.float64]]:
    """The numbers of a flat JSON array, as float64 arrays of consecutive pieces.

    pysimdjson's document holds about 16 bytes per number besides the text, several times
    the float64 result for short literals: a long array is parsed in pieces cut at commas,
    so that what the parser holds stays the size of one piece.
    """
    if len(raw) <= _PIECE_BYTES:
        yield _parsed(parser, raw)
        return
    text = memoryview(raw)
    if text[0] != ord("[") or text[-1] != ord("]"):
        raise TypeError
    start, end = 1, len(text) - 1
    while start < end:
        piece = bytes(text[start : min(start + _PIECE_BYTES, end)])
        cut = len(piece) if start + len(piece) == end else piece.rfind(b",")
        if cut <= 0:  # a single literal longer than a piece: the typed path reads it
            raise ValueError
        yield _parsed(parser, b"[%s]" % piece[:cut])
        start += cut + 1


def _parsed(parser: simdjson.Parser, text: msgspec.Raw | bytes) -> NDArray[np.float64]:
    document = parser.parse(text)
    if not isinstance(document, simdjson.Array):
        raise TypeError
    values = np.frombuffer(document.as_buffer(of_type="d"), dtype=np.float64)
    # The parser holds one document at a time: let go of this one before the next.
    del document
    return values


def _decode_typed(body: bytes | bytearray) -> UpdatePayload | None:
    """The payload of a valid body, through lists of Python floats; else None."""
    try:
        request = cast(_FastArrays, _TYPED_DECODER.decode(body))
    except msgspec.DecodeError:
        return None
    options = _fast_options(request)
    n = len(request.weights)
    if any(len(row) != n for row in request.log_prob_grads) or options is None:
        return None
    vectors = {name: np.array(getattr(request, name), dtype=np.float64) for name in _VECTORS}
    return _payload(vectors, _matrix(request.log_prob_grads, n), request, options)


def _payload(
    vectors: dict[str, NDArray[np.float64]],
    grads: NDArray[np.float64],
    request: object,
    options: UpdateOptions,
) -> UpdatePayload | None:
    """The payload, once the rules of `UpdateRequest` beyond the core's shapes hold."""
    beta, lr = (cast(float, getattr(request, name)) for name in _SCALARS)
    if vectors["weights"].size == 0 or vectors["rewards"].size == 0 or beta < 0 or lr < 0:
        return None
    # Each vector by its name: a name added to _VECTORS reaches the payload field of that name.
    arrays: dict[str, Any] = vectors
    return UpdatePayload(**arrays, log_prob_grads=grads, beta=beta, lr=lr, options=options)


def _matrix(rows: list[list[float]], n: int) -> NDArray[np.float64]:
    """Rows of n floats each as one (len(rows), n) array."""
    # Filled from one flat iterator of known length, without np.array's walk of the
    # nested lists to find their shape.
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64, len(rows) * n)
    return flat.reshape(-1, n)


def _fast_options(request: object) -> UpdateOptions | None:
    """The options of a body msgspec decoded, or None when UpdateOptionsModel refuses them."""
    given = [(name, bytes(raw)) for name in _OPTIONS if (raw := getattr(request, name))]
    if not given:
        return UpdateOptions()
    document = b"{" + b",".join(b'"%s":%s' % (name.encode(), raw) for name, raw in given) + b"}"
    try:
        return UpdateOptionsModel.model_validate_json(document).to_options()
    except ValidationError:
        return None


def encode_response(result: UpdateResult) -> bytes:
    """Serialise straight from the float64 buffer; floats print as their shortest round trip.

    float32 weights print as float32's shortest decimals; half-precision ones (from a binary
    request) are widened to float64 first, exactly, as orjson knows no bfloat16.
    """
    weights = result.weights
    if weights.dtype.itemsize < _SHORTEST_PRINTED.itemsize:
        weights = weights.astype(np.float64)
    body = {"weights": weights, "stats": stats_as_dict(result)}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
