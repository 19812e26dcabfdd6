"""The typed decode of a large body of few arrays, an array or a row at a time.

`json_codec._decode_staged` must answer every body as `_decode_typed`, which reads the
whole body into Python floats first: the same payload, bit for bit, or the same refusal,
word for word.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ProblemError, TooManyElementsError
from app.wire import json_codec, json_refusal
from app.wire.json_codec import _decode_staged, _decode_typed, decode_request
from app.wire.payload import UpdatePayload
from tests.helpers.json_bodies import Edits, body_of, broken, edits

# Rows of 100 numbers, 300 to 400 bytes each: a body of few arrays, as decode_request
# hands such bodies to the staged decode.
N = 100
ROW = "[" + ", ".join(f"{0.25 * (i - 50)}" for i in range(N)) + "]"


def big_body(rows: list[str] | None = None, /, **fields: str) -> bytes:
    """A body of 60 rows of `ROW` (unless given) and weights as long, lr 0.01."""
    weights = fields.pop("weights", ROW)
    return body_of(weights, [ROW] * 60 if rows is None else rows, **{"lr": "0.01"} | fields)


def outcome(
    decode: Callable[[bytes, int | None], UpdatePayload], body: bytes
) -> tuple[object, ...]:
    """What a decoder answers, comparable: the arrays' bytes, or the refusal as sent."""
    try:
        payload = decode(body, 10**6)
    except ProblemError as problem:
        return (type(problem).__name__, problem.status, problem.detail, problem.problems)
    arrays = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")
    return (
        *((getattr(payload, name).shape, getattr(payload, name).tobytes()) for name in arrays),
        repr(payload.beta),
        repr(payload.lr),
        repr(payload.options),
    )


BIG = "1" + "0" * 30  # beyond 64 bits: pysimdjson refuses it, msgspec reads it
HEAD = ROW[:-1].rsplit(",", 1)[0]  # a row without its last number and its bracket
SHORT = HEAD + "]"


def ending(text: str) -> str:
    """A row whose last number is `text`."""
    return f"{HEAD}, {text}]"


CASES = {
    "valid": big_body(),
    "an integer beyond 64 bits": big_body([ROW] * 59 + [ending(BIG)]),
    "a string in the last row": big_body([ROW] * 59 + [ending('"x"')]),
    "a string in a vector": big_body(weights=ending('"x"')),
    "an array in a row": big_body([ROW] * 59 + [ending("[1]")]),
    "a row that is not an array": big_body([ROW] * 59 + ['"row"']),
    "a literal beyond float64": big_body([ROW] * 59 + [ending("1e999")]),
    "NaN in a row": big_body([ROW] * 59 + [ending("NaN")]),
    "a short row": big_body([ROW] * 30 + [SHORT] + [ROW] * 29),
    "many short rows": big_body([SHORT] * 60),
    "empty weights": big_body(weights="[]"),
    "a negative beta": big_body(beta="-0.5"),
    "a string beta": big_body(beta='"x"'),
    "a string beta and a short row": big_body([ROW] * 59 + [SHORT], beta='"x"'),
    "an option": big_body(max_grad_norm="1.0"),
    "a bad option": big_body(max_grad_norm='"x"'),
    "an unknown key": big_body(bogus="1"),
    "an unknown key and a string in a row": big_body([ROW] * 59 + [ending('"x"')], bogus="1"),
    "a missing field": big_body().replace(b',"lr": 0.01', b""),
    "a matrix that is not an array": big_body(log_prob_grads='{"a": 1}', beta="0.5" + " " * 2**15),
    "trailing characters": big_body() + b" x",
    "a repeated field": big_body().replace(b'"lr": 0.01', b'"lr": 0.01, "lr": -1'),
    # Over 1 MiB, of more arrays than the fast paths take: 200000 rows of two numbers.
    "many rows": big_body(["[1, 2]"] * 200_000, weights="[0.5, 0.25]"),
    "many rows, a string in the last": big_body(
        ["[1, 2]"] * 199_999 + ['[1, "x"]'], weights="[0.5, 0.25]"
    ),
    # Separators inside strings and nested arrays, where a piece may be cut (see below).
    "a string of commas in a vector": big_body(weights=ending('"a, b, c, d"')),
    "a string of row ends in a row": big_body([ROW] * 59 + [ending('"x], [1, 2], [y"')]),
    "an escaped quote and row ends in a string": big_body([ROW] * 59 + [ending(r'"x\\\"], [1"')]),
    "rows nested in a row": big_body([ROW] * 30 + ["[[1, 2], [3, 4]]"] + [ROW] * 29),
    "a row of rows and short ones": big_body(
        ["[1, 2]"] * 200_000 + ["[[1], [2]]"], weights="[0, 1]"
    ),
    "an array nested in a vector": big_body(weights=ending("[1, [2, 3], 4]")),
    "an empty matrix and long weights": big_body([], weights="[" + "0.5, " * 300_000 + "1]"),
    "spaces before the separators": big_body(
        ["[1 , 2 ] "] * 200_000 + ['[1 , "x" ] '], weights="[0 , 1]"
    ),
}

# The piece sizes the staged decode and the refusal cut long arrays into: the service's,
# and smaller ones that cut every vector and row of these bodies, inside their strings and
# nested arrays too.
PIECE_SIZES = pytest.mark.parametrize("piece_bytes", [None, 40, 333, 4096], ids=str)


@pytest.fixture
def pieces_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[int | None], None]:
    def use(piece_bytes: int | None) -> None:
        if piece_bytes is not None:
            for module in (json_codec, json_refusal):
                monkeypatch.setattr(module, "TYPED_PIECE_BYTES", piece_bytes)

    return use


@PIECE_SIZES
@pytest.mark.parametrize("body", list(CASES.values()), ids=list(CASES))
def test_the_staged_decode_answers_as_the_typed_decode(
    body: bytes, piece_bytes: int | None, pieces_of: Callable[[int | None], None]
) -> None:
    assert len(body) > 16 * 1024
    expected = outcome(_decode_typed, body)
    pieces_of(piece_bytes)
    assert outcome(_decode_staged, body) == expected


@pytest.mark.parametrize("body", list(CASES.values()), ids=list(CASES))
def test_decode_request_never_reads_a_large_body_of_few_arrays_whole_into_floats(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def whole(body: bytes, max_elements: int | None) -> UpdatePayload:
        msg = "the typed decode of the whole body"
        raise AssertionError(msg)

    monkeypatch.setattr(json_codec, "_decode_typed", whole)
    assert outcome(decode_request, body) == outcome(_decode_staged, body)


def test_the_element_limit_is_checked_before_the_rows_are_read() -> None:
    # Rows of 100 numbers against 20000 weights, and a string in the last: the limit
    # answers first, as on the fast path, so no row was read.
    weights = "[" + ", ".join(["0"] * 20_000) + "]"
    body = big_body([ROW] * 59 + [ending('"x"')], weights=weights)
    with pytest.raises(TooManyElementsError) as info:
        _decode_staged(body, 10**6)
    assert "B*N + B + N = 1220060 elements (B = 60, N = 20000)" in str(info.value)
    with pytest.raises(TooManyElementsError):
        decode_request(body, 10**6)


@settings(max_examples=300, deadline=None)
@given(changes=edits(4), piece_bytes=st.sampled_from([None, 40, 333]))
def test_a_broken_large_body_is_answered_as_the_typed_decode_answers_it(
    changes: Edits, piece_bytes: int | None
) -> None:
    body = broken(big_body(), changes)
    expected = outcome(_decode_typed, body)
    with pytest.MonkeyPatch.context() as monkeypatch:
        if piece_bytes is not None:
            for module in (json_codec, json_refusal):
                monkeypatch.setattr(module, "TYPED_PIECE_BYTES", piece_bytes)
        assert outcome(_decode_staged, body) == expected
