"""A refused JSON body costs what its answer costs: bounded time, memory and wording work.

Each test builds a body an attacker could send and measures the decoder alone: wall
time (bounded generously, for a shared machine), peak traced memory against the body's
size, and how many problems were worded.
"""

from __future__ import annotations

import difflib
import json
import time
import tracemalloc
from typing import Any

import pytest

from app.core import MAX_LISTED_PROBLEMS
from app.errors import InvalidPayloadError, MalformedJsonError, ProblemError
from app.wire.json_codec import decode_request
from app.wire.messages import shorten
from app.wire.schemas import UpdateOptionsModel, UpdateRequest
from tests.helpers.reference import EXAMPLE

FIELD_COUNT = len(UpdateRequest.model_fields)


def _refused(body: bytes) -> tuple[ProblemError, float]:
    """The decoder's error for `body`, and the seconds it took."""
    start = time.perf_counter()
    with pytest.raises(ProblemError) as info:
        decode_request(body)
    return info.value, time.perf_counter() - start


def _peak_memory(body: bytes) -> int:
    """The peak of memory traced while the decoder refuses `body` (the rows' own cost is
    measured on a live server, in tests/system: tracing millions of objects is slow)."""
    tracemalloc.start()
    try:
        with pytest.raises(ProblemError):
            decode_request(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def no_pydantic_over_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any validation of the whole request by its Pydantic model fail the test."""

    def refuse(*_: object, **__: object) -> None:
        msg = "the whole body went through the Pydantic model"
        raise AssertionError(msg)

    monkeypatch.setattr(UpdateRequest, "model_validate_json", refuse)
    monkeypatch.setattr(UpdateRequest, "model_validate", refuse)


@pytest.mark.usefixtures("no_pydantic_over_the_body")
@pytest.mark.parametrize("known_first", [True, False], ids=["fields-first", "keys-first"])
def test_a_million_unknown_keys_are_refused_after_reading_a_few(known_first: bool) -> None:
    keys = {f"k{i}": 1 for i in range(1_000_000)}
    body = json.dumps(EXAMPLE | keys if known_first else keys | EXAMPLE).encode()
    error, seconds = _refused(body)
    assert isinstance(error, InvalidPayloadError)
    assert seconds < 1.0  # it took 139 s
    assert _peak_memory(body) < len(body)  # it took 2.2 GB
    assert error.problems[0].msg.startswith("unknown field 'k0'")
    assert len(error.problems) <= FIELD_COUNT + 2


def test_more_distinct_keys_than_the_contract_has_stop_the_reading() -> None:
    extra = {f"extra{i}": 1 for i in range(FIELD_COUNT)}
    error, _ = _refused(json.dumps(EXAMPLE | extra).encode())
    locs = [problem.loc for problem in error.problems]
    # The 7 fields and 11 unknown keys read before the 18th distinct key stop it.
    assert locs == [(f"extra{i}",) for i in range(FIELD_COUNT + 1 - len(EXAMPLE))] + [()]
    assert f"more than {FIELD_COUNT} distinct top-level keys" in error.problems[-1].msg


def test_repeated_keys_count_once_against_the_key_budget() -> None:
    text = json.dumps(EXAMPLE | {"betta": 1})
    body = (text[:-1] + ', "lr": 0.1' * 100_000 + "}").encode()
    error, seconds = _refused(body)
    assert [problem.loc for problem in error.problems] == [("betta",)]
    assert seconds < 1.0


@pytest.mark.usefixtures("no_pydantic_over_the_body")
def test_two_million_ragged_rows_are_worded_from_the_fast_decode() -> None:
    rows = [[0.5, -0.5] if i % 2 else [0.5] for i in range(2_000_000)]
    body = json.dumps(EXAMPLE | {"log_prob_grads": rows}).encode()
    error, seconds = _refused(body)
    assert seconds < 3.0  # it took 9 s; about 0.4 s here
    assert [problem.loc for problem in error.problems] == [
        ("log_prob_grads", i) for i in range(0, 2 * MAX_LISTED_PROBLEMS, 2)
    ]
    assert error.detail.endswith(f"(and {1_000_000 - 1} more problems)")


@pytest.mark.usefixtures("no_pydantic_over_the_body")
@pytest.mark.parametrize(
    ("last_row", "phrase"),
    [
        pytest.param('["x", 1]', "log_prob_grads[1999999][0] is a string ('x')", id="string"),
        pytest.param("[NaN, 1]", "log_prob_grads[1999999][0] is nan", id="nan"),
        pytest.param("[1" + "0" * 5000 + "]", "log_prob_grads[1999999][0] is 100000", id="big"),
    ],
)
def test_a_bad_entry_at_the_end_of_two_million_rows(last_row: str, phrase: str) -> None:
    rows = ", ".join(["[0.5, -0.5]"] * 1_999_999 + [last_row])
    text = json.dumps({name: value for name, value in EXAMPLE.items() if name != "log_prob_grads"})
    body = (text[:-1] + f', "log_prob_grads": [{rows}]' + "}").encode()
    error, seconds = _refused(body)
    assert error.problems[0].msg.startswith(phrase), error.problems[0].msg
    assert seconds < 4.0


def test_problems_past_the_listed_maximum_are_counted_not_worded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    close_matches = difflib.get_close_matches

    def counted(word: str, *args: Any, **kwargs: Any) -> list[str]:
        calls.append(word)
        return close_matches(word, *args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counted)
    # Seven missing fields and ten bad options, then four unknown keys: 21 problems.
    options = dict.fromkeys(list(UpdateOptionsModel.model_fields)[:10], "?")
    unknown = {"betta": 1, "weigths": 2, "lrr": 3, "rewardz": 4}
    with pytest.raises(InvalidPayloadError) as info:
        decode_request(json.dumps(options | unknown).encode())
    error = info.value
    assert len(error.problems) == MAX_LISTED_PROBLEMS
    assert error.detail.endswith(f"(and {7 + 10 + 4 - 1} more problems)")
    assert calls == ["betta", "weigths", "lrr"]  # the fourth is counted, not matched


def test_no_suggestion_for_a_name_far_longer_than_any_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(difflib, "get_close_matches", lambda word, *_, **__: calls.append(word))
    error, _ = _refused(json.dumps(EXAMPLE | {"b" * 1_000_000: 1}).encode())
    assert calls == []
    assert len(error.problems[0].msg) < 400


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b'{"weights": [NaN, NaN, -Infinity],\n "rewards": [Infinity, NaN, ]}', id="after"
        ),
        pytest.param(b'{"rewards": [NaN]\n  "lr": NaN}', id="missing-comma"),
    ],
)
def test_a_syntax_error_after_nan_literals_is_placed_in_the_body_as_sent(body: bytes) -> None:
    # Python's json module reads NaN and Infinity: an independent reference of the place.
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(body)
    error, _ = _refused(body)
    assert isinstance(error, MalformedJsonError)
    assert error.detail.endswith(
        f"at line {expected.value.lineno} column {expected.value.colno}"
    ), (error.detail, expected.value)


def test_nan_in_a_string_is_not_mistaken_for_a_literal() -> None:
    body = json.dumps(EXAMPLE | {"baseline": "NaN"}).encode()
    error, _ = _refused(body)
    assert error.problems[0].msg.startswith("baseline is 'NaN'; expected one of")


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param([[[[[1]]]]] * 3, "[[[...]]", id="nested"),
        pytest.param(_nested(5000), "[[[...]]]", id="deep"),
        pytest.param(10**5000, "an integer too long to print", id="huge-int"),
        pytest.param("x" * 10**6, "xxxx", id="long-string"),
    ],
)
def test_shorten_is_bounded_whatever_it_is_given(value: object, shown: str) -> None:
    text = shorten(value)
    assert len(text) <= 40
    assert text.startswith(shown)


def test_more_arrays_than_any_valid_body_of_its_size_are_refused_before_decoding() -> None:
    # Rows of one short number: about a hundred bytes of Python objects for every four
    # bytes of text, had they been decoded (1.5 GB and seconds for a 60 MB body).
    fields = {name: value for name, value in EXAMPLE.items() if name != "log_prob_grads"}
    rows = ",".join(["[0]"] * 4_000_000)
    body = (json.dumps(fields)[:-1] + f', "log_prob_grads": [{rows}]' + "}").encode()
    error, seconds = _refused(body)
    assert seconds < 1.0
    assert _peak_memory(body) < 2 * len(body)
    assert [problem.loc for problem in error.problems] == [("log_prob_grads",)]
    assert error.detail.startswith("log_prob_grads has 4000000 rows; a valid body of")


@pytest.mark.parametrize("field", ["rewards", "weights", "group_ids"])
def test_more_short_numbers_than_any_valid_body_of_its_size_are_refused_before_decoding(
    field: str,
) -> None:
    # 8 M zeros: 32 bytes of Python float for every two bytes of text, had they been decoded.
    fields = {name: value for name, value in EXAMPLE.items() if name != field}
    zeros = ",".join(["0"] * 8_000_000)
    body = (json.dumps(fields)[:-1] + f', "{field}": [{zeros}]' + "}").encode()
    error, seconds = _refused(body)
    assert seconds < 1.0
    assert _peak_memory(body) < 2 * len(body)
    assert [problem.loc for problem in error.problems] == [(field,)]
    assert error.detail.startswith(f"{field} has 8000000 entries; a valid body of")


@pytest.mark.parametrize("b", [1, 2, 3, 10, 999, 5000, 200_000])
def test_the_bound_on_arrays_lets_the_smallest_valid_bodies_through(b: int) -> None:
    # The densest valid bodies: one weight, every number a single digit, no spaces.
    fields = {
        "weights": [0],
        "rewards": [0] * b,
        "policy_log_probs": [0] * b,
        "ref_log_probs": [0] * b,
        "log_prob_grads": [[0]] * b,
        "beta": 0,
        "lr": 0,
        "group_ids": [0] * b,
    }
    payload = decode_request(json.dumps(fields, separators=(",", ":")).encode())
    assert payload.log_prob_grads.shape == (b, 1)


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        pytest.param(b"NaN\x00", "a number (nan)", id="nan-then-garbage"),
        pytest.param(b"1.5 garbage", "a number (1.5)", id="number-then-garbage"),
        pytest.param(b"-Infinity]", "a number (-inf)", id="infinity-then-bracket"),
    ],
)
def test_a_body_that_is_a_number_followed_by_garbage_is_worded(body: bytes, shown: str) -> None:
    # msgspec refuses the value as not an object before it reads what follows it.
    error, _ = _refused(body)
    assert error.detail.startswith(f"the body is {shown}; expected a JSON object")
