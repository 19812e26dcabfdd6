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
from app.wire import json_codec
from app.wire.json_codec import _decode_staged, _decode_typed, decode_request
from app.wire.payload import UpdatePayload

# Rows of 100 numbers, 300 to 400 bytes each: a body of few arrays, as decode_request
# hands such bodies to the staged decode.
N = 100
ROW = "[" + ", ".join(f"{0.25 * (i - 50)}" for i in range(N)) + "]"


def body_of(rows: list[str] | None = None, /, **fields: str) -> bytes:
    rows = rows if rows is not None else [ROW] * 60
    parts = {
        "weights": ROW,
        "rewards": "[" + ",".join(["1"] * len(rows)) + "]",
        "policy_log_probs": "[" + ",".join(["-1"] * len(rows)) + "]",
        "ref_log_probs": "[" + ",".join(["-1.5"] * len(rows)) + "]",
        "log_prob_grads": "[" + ",".join(rows) + "]",
        "beta": "0.5",
        "lr": "0.01",
    } | fields
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in parts.items()) + "}").encode()


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
    "valid": body_of(),
    "an integer beyond 64 bits": body_of([ROW] * 59 + [ending(BIG)]),
    "a string in the last row": body_of([ROW] * 59 + [ending('"x"')]),
    "a string in a vector": body_of(weights=ending('"x"')),
    "an array in a row": body_of([ROW] * 59 + [ending("[1]")]),
    "a row that is not an array": body_of([ROW] * 59 + ['"row"']),
    "a literal beyond float64": body_of([ROW] * 59 + [ending("1e999")]),
    "NaN in a row": body_of([ROW] * 59 + [ending("NaN")]),
    "a short row": body_of([ROW] * 30 + [SHORT] + [ROW] * 29),
    "many short rows": body_of([SHORT] * 60),
    "empty weights": body_of(weights="[]"),
    "a negative beta": body_of(beta="-0.5"),
    "a string beta": body_of(beta='"x"'),
    "a string beta and a short row": body_of([ROW] * 59 + [SHORT], beta='"x"'),
    "an option": body_of(max_grad_norm="1.0"),
    "a bad option": body_of(max_grad_norm='"x"'),
    "an unknown key": body_of(bogus="1"),
    "an unknown key and a string in a row": body_of([ROW] * 59 + [ending('"x"')], bogus="1"),
    "a missing field": body_of().replace(b', "lr": 0.01', b""),
    "a matrix that is not an array": body_of(log_prob_grads='{"a": 1}', beta="0.5" + " " * 2**15),
    "trailing characters": body_of() + b" x",
    "a repeated field": body_of().replace(b'"lr": 0.01', b'"lr": 0.01, "lr": -1'),
    # Over 1 MiB, of more arrays than the fast paths take: 200000 rows of two numbers.
    "many rows": body_of(["[1, 2]"] * 200_000, weights="[0.5, 0.25]"),
    "many rows, a string in the last": body_of(
        ["[1, 2]"] * 199_999 + ['[1, "x"]'], weights="[0.5, 0.25]"
    ),
}


@pytest.mark.parametrize("body", list(CASES.values()), ids=list(CASES))
def test_the_staged_decode_answers_as_the_typed_decode(body: bytes) -> None:
    assert len(body) > 16 * 1024
    assert outcome(_decode_staged, body) == outcome(_decode_typed, body)


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
    body = body_of([ROW] * 59 + [ending('"x"')], weights=weights)
    with pytest.raises(TooManyElementsError) as info:
        _decode_staged(body, 10**6)
    assert "B*N + B + N = 1220060 elements (B = 60, N = 20000)" in str(info.value)
    with pytest.raises(TooManyElementsError):
        decode_request(body, 10**6)


FRAGMENTS = [b'"x"', b"null", b"true", b"[]", b"[1]", b"{}", b"1e999", b"-", b",", b"]", b"["]
FRAGMENTS += [b"1" * 40, b"NaN", b"-Infinity", b'"lr"', b'"bogus": 1, ', b" ", b""]


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 4), st.sampled_from(FRAGMENTS)),
        min_size=1,
        max_size=3,
    )
)
def test_a_broken_large_body_is_answered_as_the_typed_decode_answers_it(
    edits: list[tuple[int, int, bytes]],
) -> None:
    body = bytearray(body_of())
    for position, removed, fragment in edits:
        at = position % len(body)
        body[at : at + removed] = fragment
    assert outcome(_decode_staged, bytes(body)) == outcome(_decode_typed, bytes(body))
