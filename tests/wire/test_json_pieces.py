"""A long JSON array in pieces: when every piece parses, they are the array's elements."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.wire.json_pieces import NUMBERS, ROWS, array_pieces

# Strings made of what a cut looks for and what would fool one: separators, brackets,
# quotes (escaped in the text) and backslashes.
TRICKY = st.text(alphabet='0,] [\\"x', max_size=12)
ELEMENT = st.floats(allow_nan=False, allow_infinity=False) | st.integers() | TRICKY
ROW = st.lists(ELEMENT | st.lists(ELEMENT, max_size=3), max_size=6)


def parsed_pieces(text: bytes, separator: bytes, piece_bytes: int) -> list[Any] | None:
    """The elements of the pieces read in turn; None when a piece does not parse (or no
    cut was found), where a reader goes back to the whole array."""
    elements: list[Any] = []
    try:
        for piece in array_pieces(text, separator, piece_bytes):
            assert len(piece) <= piece_bytes + 2
            elements += json.loads(bytes(piece))
    except (ValueError, json.JSONDecodeError):
        return None
    return elements


@settings(max_examples=400, deadline=None)
@given(
    vector=st.lists(ELEMENT | st.lists(ELEMENT, max_size=3), max_size=40),
    piece_bytes=st.integers(4, 80),
    spaced=st.booleans(),
)
def test_pieces_of_a_vector_that_all_parse_are_its_elements(
    vector: list[Any], piece_bytes: int, spaced: bool
) -> None:
    text = json.dumps(vector, separators=(", ", ": ") if spaced else (",", ":")).encode()
    elements = parsed_pieces(text, NUMBERS, piece_bytes)
    if elements is not None:
        assert elements == vector
    if all(isinstance(x, (int, float)) for x in vector) and all(
        len(json.dumps(x)) + 2 < piece_bytes for x in vector
    ):
        assert elements == vector  # numbers alone always cut


@settings(max_examples=400, deadline=None)
@given(rows=st.lists(ROW, max_size=30), piece_bytes=st.integers(4, 120))
def test_pieces_of_a_matrix_that_all_parse_are_its_rows(
    rows: list[list[Any]], piece_bytes: int
) -> None:
    text = json.dumps(rows, separators=(",", ":")).encode()
    elements = parsed_pieces(text, ROWS, piece_bytes)
    if elements is not None:
        assert elements == rows
    flat = all(isinstance(x, (int, float)) for row in rows for x in row)
    if flat and all(len(json.dumps(row, separators=(",", ":"))) + 2 < piece_bytes for row in rows):
        assert elements == rows  # rows of numbers alone always cut


def test_an_array_shorter_than_a_piece_is_its_own_piece_and_anything_else_is_refused() -> None:
    assert list(array_pieces(b"[1,2]", NUMBERS, 10)) == [b"[1,2]"]
    assert list(array_pieces(b"[1,22,3]", NUMBERS, 4)) == [b"[1]", b"[22,3]"]
    assert list(array_pieces(b"[[1],[2,3],[4]]", ROWS, 9)) == [b"[[1]]", b"[[2,3],[4]]"]
    for not_an_array in (b'{"a": 1}', b"1", b"[", b""):
        with pytest.raises(ValueError, match="not the text of a JSON array"):
            list(array_pieces(not_an_array, NUMBERS, 1))
    with pytest.raises(ValueError, match="no ',' to cut after in 4 bytes"):
        list(array_pieces(b"[123456789,1]", NUMBERS, 4))
