"""The JSON fast paths: numbers straight into float64 buffers, exactly as Python reads them.

Each takes only what it can read whole and leaves the rest (None) to the typed decode:
`decode_split` and then `decode_fast` for bodies over 16 KiB (the first only when they send
no option), `decode_plain` for smaller ones that send no option.

The reference is independent of every decoder under test: Python's `float()` of each
literal as written (for an integer literal, `float(int(literal))`: JSON's `-0` is the
integer 0, and every path of the service, like msgspec and Pydantic, reads it as 0.0).
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import DEFAULT_OPTIONS
from app.errors import InvalidPayloadError, ProblemError, TooManyElementsError
from app.wire.json_brackets import bracket_positions
from app.wire.json_codec import (
    _decode_typed,
    _small_document,
    decode_fast,
    decode_plain,
    decode_request,
    decode_split,
)
from app.wire.payload import UpdatePayload
from tests.helpers.json_bodies import Edits, body_of, broken, edits


def split(body: bytes | bytearray, max_elements: int | None) -> UpdatePayload | None:
    """`decode_split` with the offsets of the body's '[' found as decode_request finds them."""
    opening = bracket_positions(body, b"[", len(body))
    assert opening is not None
    return decode_split(body, max_elements, opening)


# Each fast path, by name; all must read and refuse alike.
DECODERS = pytest.mark.parametrize(
    "decoder", [decode_fast, decode_plain, split], ids=["fast", "plain", "split"]
)
Decoder = Callable[[bytes, int | None], UpdatePayload | None]

# The length above which an array is parsed in pieces is 1 MiB of text.
PIECE_BYTES = 1 << 20


def reference(literal: str) -> float:
    """Python's own reading of one JSON number literal."""
    is_integer = not any(c in literal for c in ".eE")
    return float(int(literal)) if is_integer else float(literal)


def bits(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


CORPUS = [
    "0",
    "-0",
    "0.0",
    "-0.0",
    "-0e0",
    "5e-324",  # the smallest subnormal
    "-4.9406564584124654e-324",
    "2.2250738585072009e-308",  # the largest subnormal
    "2.2250738585072014e-308",  # the smallest normal
    "1.7976931348623157e308",  # the largest float64
    "-1.7976931348623157e308",
    "1.7976931348623158e308",  # rounds down to the largest float64
    "2.4703282292062328e-324",  # just above half the smallest subnormal: rounds up
    "2.4703282292062327e-324",  # just below: rounds to zero
    "9007199254740993",  # 2**53 + 1: an integer float64 cannot hold, rounded to even
    "9223372036854775807",  # the largest int64
    "-9223372036854775808",  # the smallest int64
    "18446744073709551615",  # the largest uint64
    "0.1",
    "1E+2",
    "1e-400",  # underflows to 0
    "123456789012345678901234567890e-10",
    "0.30000000000000004",
    "1." + "0" * 30 + "1",
]


@DECODERS
def test_the_corpus_takes_the_fast_path_and_reads_as_python_does(decoder: Decoder) -> None:
    weights = "[" + ", ".join(CORPUS) + "]"
    payload = decoder(body_of(weights), None)
    assert payload is not None
    expected = bits([reference(literal) for literal in CORPUS])
    assert payload.weights.tobytes() == expected
    assert payload.log_prob_grads.shape == (2, len(CORPUS))
    assert payload.log_prob_grads[1].tobytes() == expected
    assert payload.log_prob_grads.dtype == np.float64


literal = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**63), 2**64 - 1).map(str),
    st.builds(
        lambda sign, digits, fraction, exponent: f"{sign}{digits}{fraction}e{exponent}",
        st.sampled_from(["", "-"]),
        st.integers(0, 10**25).map(str),
        st.sampled_from(["", ".5", ".000123", ".9999999999999999"]),
        st.integers(-340, 310),
    ),
)


@DECODERS
@settings(deadline=None)  # no wall-clock limit on a shared machine
@given(literals=st.lists(literal, min_size=1, max_size=30))
def test_any_literal_reads_as_python_reads_it(decoder: Decoder, literals: list[str]) -> None:
    expected = [reference(text) for text in literals]
    finite = all(np.isfinite(expected))
    weights = "[" + ",".join(literals) + "]"
    body = body_of(weights)
    if finite:
        payload = decoder(body, None)
        assert payload is not None
        assert payload.weights.tobytes() == bits(expected)
        assert payload.log_prob_grads[0].tobytes() == bits(expected)
        assert decode_request(body).weights.tobytes() == bits(expected)
    else:
        # A literal beyond float64 (e.g. 1e999) is refused, by the fast path and in all.
        assert decoder(body, None) is None
        with pytest.raises(InvalidPayloadError):
            decode_request(body)


def test_arrays_longer_than_a_piece_read_exactly_and_whole() -> None:
    rng = np.random.default_rng(7)
    values = rng.standard_normal(150_000) * 10.0 ** rng.integers(-300, 300, 150_000)
    literals = [repr(float(v)) for v in values]
    weights = "[ " + " , ".join(literals) + " ]"
    assert len(weights) > 3 * PIECE_BYTES
    payload = decode_fast(body_of(weights), None)
    assert payload is not None
    assert payload.weights.tobytes() == bits([float(text) for text in literals])
    assert payload.log_prob_grads[1].tobytes() == payload.weights.tobytes()


def test_a_literal_longer_than_a_piece_is_read_exactly_by_the_typed_path() -> None:
    long_literal = "0." + "0" * PIECE_BYTES + "1"
    weights = f"[1.5, {long_literal}]"
    body = body_of(weights)
    assert decode_fast(body, None) is None
    payload = decode_request(body)
    assert payload.weights.tolist() == [1.5, float(long_literal)]


@pytest.mark.parametrize(
    "big", ["18446744073709551616", "-9223372036854775809", "1" + "0" * 30, "-" + "9" * 25]
)
@DECODERS
def test_integers_beyond_64_bits_go_to_the_typed_path_and_read_exactly(
    decoder: Decoder, big: str
) -> None:
    body = body_of(f"[{big}, 2]")
    assert decoder(body, None) is None
    payload = decode_request(body)
    assert payload.weights.tobytes() == bits([float(int(big)), 2.0])
    assert payload.log_prob_grads.tobytes() == bits([float(int(big)), 2.0] * 2)


@pytest.mark.parametrize(
    ("weights", "rows", "index", "entries"),
    [
        # Flattened, these hold B*N numbers: only the row lengths tell them apart.
        pytest.param("[1, 2]", ["[1, 2, 3]", "[4]"], 0, 3, id="long-then-short"),
        pytest.param("[1, 2]", ["[1]", "[2, 3, 4]"], 0, 1, id="short-then-long"),
        pytest.param("[1, 2, 3]", ["[1, 2, 3]", "[4, 5]"], 1, 2, id="one-short"),
    ],
)
@DECODERS
def test_ragged_rows_never_pass_as_a_matrix(
    decoder: Decoder, weights: str, rows: list[str], index: int, entries: int
) -> None:
    body = body_of(weights, rows)
    assert decoder(body, None) is None
    with pytest.raises(InvalidPayloadError) as info:
        decode_request(body)
    problem = info.value.problems[0]
    assert problem.loc == ("log_prob_grads", index)
    assert f"has {entries} entries" in problem.msg


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        pytest.param({"weights": "[[1], [2]]"}, ("weights", 0), id="nested-vector"),
        pytest.param({"rewards": "[[1], [1]]"}, ("rewards", 0), id="nested-rewards"),
        pytest.param({"log_prob_grads": "[[[1], [2]], [[1], [2]]]"}, None, id="nested-rows"),
        pytest.param({"log_prob_grads": "[[1, [2]], [1, 2]]"}, None, id="nested-entry"),
        pytest.param({"log_prob_grads": "[1, 2]"}, None, id="flat-matrix"),
        pytest.param({"weights": "[1, true]"}, ("weights", 1), id="boolean"),
        pytest.param({"weights": '[1, "2"]'}, ("weights", 1), id="string"),
        pytest.param({"weights": "[1, null]"}, ("weights", 1), id="null"),
        pytest.param({"weights": "[]"}, None, id="empty"),
        pytest.param({"beta": "-1"}, ("beta",), id="negative-beta"),
        pytest.param({"lr": "true"}, ("lr",), id="boolean-lr"),
        pytest.param({"beta": '"0.5"'}, ("beta",), id="string-beta"),
        pytest.param({"beta": "[0.5]"}, ("beta",), id="array-beta"),
        pytest.param({"lr": "1e999"}, None, id="lr-beyond-float64"),
        pytest.param({"extra": "[1]"}, None, id="unknown-field"),
    ],
)
@DECODERS
def test_bodies_the_fast_path_refuses_get_the_worded_errors(
    decoder: Decoder, fields: dict[str, str], loc: tuple[Any, ...] | None
) -> None:
    body = body_of("[1, 2]", **fields)
    assert decoder(body, None) is None
    with pytest.raises(InvalidPayloadError) as info:
        decode_request(body)
    if loc is not None:
        assert info.value.problems[0].loc == loc


@DECODERS
def test_a_repeated_field_is_left_to_the_typed_decode(decoder: Decoder) -> None:
    # Which of the two a parser keeps is its own choice: the typed decode's is the answer.
    body = body_of("[1, 2]", rewards='[5, 5], "rewards": [7, 7]')
    assert decoder(body, None) is None
    assert decode_request(body).rewards.tolist() == [7.0, 7.0]


@DECODERS
def test_a_repeated_field_in_place_of_a_missing_one_is_refused_as_missing(
    decoder: Decoder,
) -> None:
    # As many keys as a whole body has, one of them twice: lr is missing.
    text = body_of("[1, 2]").decode().replace('"lr": 0', '"beta": 0.25')
    body = text.encode()
    assert decoder(body, None) is None
    with pytest.raises(InvalidPayloadError) as info:
        decode_request(body)
    assert info.value.problems[0].loc == ("lr",)


def test_a_small_body_with_options_is_left_to_the_typed_decode() -> None:
    body = body_of("[1, 2]", max_grad_norm="0.5")
    assert decode_plain(body, None) is None
    assert decode_request(body).options.max_grad_norm == 0.5
    plain = decode_plain(body_of("[1, 2]"), None)
    assert plain is not None
    assert plain.options is DEFAULT_OPTIONS


@pytest.mark.parametrize(("text", "value"), [("2", 2.0), ("0", 0.0), ("-0", 0.0), ("1e-3", 1e-3)])
def test_scalars_read_as_the_typed_decode_reads_them(text: str, value: float) -> None:
    body = body_of("[1, 2]", beta=text, lr=text)
    plain = decode_plain(body, None)
    assert plain is not None
    assert (type(plain.beta), repr(plain.beta), repr(plain.lr)) == (float, repr(value), repr(value))


@DECODERS
def test_the_element_limit_is_checked_before_the_matrix_is_parsed(decoder: Decoder) -> None:
    # Row 1 is not even numbers: the limit answers first, so it was never parsed.
    body = body_of("[1, 2, 3]", ["[1, 2, 3]", '[1, "x", 3]'])
    with pytest.raises(TooManyElementsError) as info:
        decoder(body, 10)
    assert "B*N + B + N = 11 elements (B = 2, N = 3)" in str(info.value)
    with pytest.raises(TooManyElementsError):
        decode_request(body, max_elements=10)
    # decode_request takes the fast path for bodies over 16 KiB: whitespace makes this one so.
    padded = body + b" " * (16 * 1024)
    with pytest.raises(TooManyElementsError):
        decode_request(padded, max_elements=10)
    assert decoder(body_of("[1, 2, 3]"), 11) is not None


def test_small_bodies_parse_alike_whatever_their_thread_s_parser_still_holds() -> None:
    first, second = body_of("[1, 2]"), body_of("[3, 4, 5]", ["[0.5, 6, 7]"])
    held = _small_document(first)["weights"]  # keeps the thread's parser busy
    assert decode_plain(second, None) is not None
    assert list(held) == [1, 2]  # the earlier document is untouched
    # A refusal leaves the parser as usable as a success does.
    assert decode_plain(b'{"weights": [1', None) is None
    for body, weights in ((first, [1.0, 2.0]), (second, [3.0, 4.0, 5.0])):
        plain = decode_plain(body, None)
        assert plain is not None
        assert plain.weights.tolist() == weights
    # The limit refused after the document was parsed: its arrays live on in the traceback.
    with pytest.raises(TooManyElementsError) as refused:
        decode_plain(second, 3)
    assert decode_plain(first, None) is not None
    del refused

    def parse_many(body: bytes) -> list[list[float]]:
        return [decode_plain(body, None).weights.tolist() for _ in range(200)]  # type: ignore[union-attr]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(parse_many, [first, second] * 4))
    assert results == [[[1.0, 2.0]] * 200, [[3.0, 4.0, 5.0]] * 200] * 4


def test_the_element_limit_also_holds_on_the_typed_path() -> None:
    big = "1" + "0" * 30  # beyond 64 bits: the fast path leaves the body to the typed one
    body = body_of(f"[{big}, 2, 3]")
    assert decode_fast(body, None) is None
    with pytest.raises(TooManyElementsError):
        decode_request(body, max_elements=10)
    assert decode_request(body, max_elements=11).weights.size == 3


@settings(max_examples=500, deadline=None)
@given(changes=edits(6))
def test_a_broken_small_body_is_read_as_the_typed_decode_reads_it_or_left_to_it(
    changes: Edits,
) -> None:
    body = broken(body_of("[1, 2]"), changes)
    for decoder in (decode_plain, split):
        try:
            fast = decoder(body, 100)
        except TooManyElementsError:
            continue
        if fast is not None:
            _assert_same_payload(fast, _decode_typed(body, 100))


def _assert_same_payload(fast: UpdatePayload, typed: UpdatePayload) -> None:
    for name in ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads"):
        assert getattr(fast, name).tobytes() == getattr(typed, name).tobytes()
        assert getattr(fast, name).shape == getattr(typed, name).shape
    assert (repr(fast.beta), repr(fast.lr)) == (repr(typed.beta), repr(typed.lr))
    assert fast.options is DEFAULT_OPTIONS


# Brackets and quotes where a split by brackets alone would go wrong: inside keys, inside
# strings that span arrays, unbalanced, or an array's content that is not numbers.
@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param('"lr": 0', '"lr[0]": 0', id="bracket-in-key"),
        pytest.param('"lr": 0', '"lr": 0, "x": "[1]"', id="bracket-in-string"),
        pytest.param('"beta": 0.5', '"beta": "[", "y": 1]', id="string-opens-array"),
        pytest.param('"beta": 0.5', '"beta": "]"', id="string-closes-array"),
        pytest.param('"weights": [1, 2]', '"weights": [1, "2]", [3]', id="quote-in-array"),
        pytest.param('"weights": [1, 2]', '"weights": [1, 2', id="unclosed"),
        pytest.param('"weights": [1, 2]', '"weights": 1, 2]', id="unopened"),
        pytest.param('"weights": [1, 2]', '"weights": [1, {"a": 2}]', id="object-in-array"),
        pytest.param('"weights": [1, 2]', '"weights": [1,, 2]', id="double-comma"),
        pytest.param('"weights": [1, 2]', '"weights": [1, 2,]', id="trailing-comma"),
        pytest.param('"lr": 0}', '"lr": 0} [1]', id="trailing-array"),
        pytest.param('"lr": 0', '"lr": [0]', id="array-lr"),
    ],
)
def test_a_split_by_brackets_never_passes_a_body_it_misreads(old: str, new: str) -> None:
    text = body_of("[1, 2]").decode()
    assert old in text
    body = text.replace(old, new).encode()
    assert split(body, None) is None
    with pytest.raises(ProblemError):
        decode_request(body + b" " * (16 * 1024))  # over 16 KiB: through decode_split


def test_a_large_body_takes_the_split_and_reads_as_the_typed_decode() -> None:
    rng = np.random.default_rng(11)
    values = rng.standard_normal((3, 70_000)) * 10.0 ** rng.integers(-300, 300, (3, 70_000))
    rows = ["[" + ", ".join(map(repr, row)) + "]" for row in values.tolist()]
    body = body_of(rows[0], rows).replace(b'"lr": 0', b'"lr": 1e-3')
    assert len(rows[0]) > PIECE_BYTES  # each row is parsed in pieces
    payload = split(body, None)
    assert payload is not None
    _assert_same_payload(payload, _decode_typed(body, None))
    assert payload.log_prob_grads.tobytes() == values.tobytes()
    # Pretty-printed, one number a line: the same arrays.
    pretty = json.dumps(json.loads(body), indent=2).encode()
    again = split(pretty, None)
    assert again is not None
    assert again.log_prob_grads.tobytes() == values.tobytes()


def test_a_skeleton_larger_than_a_plain_body_has_is_left_to_the_other_paths() -> None:
    # Valid, but with 100 KB of whitespace between its fields: decode_fast reads it.
    body = body_of("[1, 2]", beta="0.5" + " " * 100_000)
    assert split(body, None) is None
    assert decode_request(body).beta == 0.5
    assert decode_request(body).weights.tolist() == [1.0, 2.0]


def test_the_offsets_of_brackets_stop_at_their_bound() -> None:
    body = b"[" * 10 + b" " * (1 << 19) + b"[" * 10
    found = bracket_positions(body, b"[", 20)
    assert found is not None
    assert found.tolist() == [*range(10), *range(10 + (1 << 19), 20 + (1 << 19))]
    assert bracket_positions(body, b"[", 19) is None
    assert bracket_positions(b"", b"[", 0) is not None


def test_a_split_of_many_rows_holds_no_object_per_row() -> None:
    # As many arrays as a body may have and still be split (one per 256 bytes): what the
    # split holds per row beyond its numbers must stay far below the row's text.
    row = "[" + ", ".join(["0.123456789"] * 19) + "]"
    rows = [row] * 40_000
    body = body_of(row, rows)
    assert body.count(b"[") * 256 <= len(body)
    tracemalloc.start()
    try:
        payload = split(body, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert payload is not None
    assert payload.log_prob_grads.shape == (40_000, 19)
    # Beside the numbers: the offsets of the brackets, a few NumPy integers per array
    # (about 0.25x the text of these rows). A Python object per row (a view, a tuple of
    # offsets) would weigh from half the text to more than the text.
    numbers = payload.log_prob_grads.nbytes
    assert peak - numbers < 0.35 * len(body), (peak, numbers, len(body))
