"""A long JSON array's text in pieces, each itself a JSON array of consecutive elements.

A parser holds several times the text of an array of short literals: pysimdjson's tape 16
bytes a number, msgspec's Python floats 40 (32 and the list's pointer) and its raw views
56. A long array is cut into pieces, each parsed on its own, so that what is held at once
is one piece's worth: up to `PARSED_PIECE_BYTES` of text for pysimdjson, a few MB of tape,
and up to `TYPED_PIECE_BYTES` for msgspec's typed decode, under a MB of Python floats.

Each cut falls after a separator: ``,`` between numbers, ``],`` between rows. A cut inside a
string or a nested array would leave its piece with a string that never ends or a bracket
never closed, which no parser accepts. So when every piece parses, each cut fell between two
elements of the array, and the pieces read in turn are the array read whole. A caller that
meets a piece that does not parse reads the array whole instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

__all__ = ["NUMBERS", "PARSED_PIECE_BYTES", "ROWS", "TYPED_PIECE_BYTES", "array_pieces"]

PARSED_PIECE_BYTES = 1 << 20
TYPED_PIECE_BYTES = 1 << 16
# The separators to cut after: between the numbers of a vector or a row, and between rows
# (the row's ']' stays in its piece).
NUMBERS = b","
ROWS = b"],"


def array_pieces(
    raw: msgspec.Raw | memoryview | bytes, separator: bytes, piece_bytes: int
) -> Iterator[msgspec.Raw | memoryview | bytes]:
    """The JSON array `raw` as arrays of consecutive elements, each cut after `separator`
    and at most `piece_bytes` long (with their brackets, two more).

    The array itself (`raw`, not a copy) when it is at most `piece_bytes` long.

    Raises
    ------
    ValueError
        When `raw` is not the text of an array, or a piece's bytes hold no separator to
        cut after (a single element longer than a piece).
    """
    text = memoryview(raw)
    if len(text) < 2 or text[0] != ord("[") or text[-1] != ord("]"):
        msg = "not the text of a JSON array"
        raise ValueError(msg)
    if len(text) <= piece_bytes:
        yield raw
        return
    kept = len(separator) - 1  # the bytes of the separator that end the element before it
    start, end = 1, len(text) - 1
    while start < end:
        window = bytes(text[start : min(start + piece_bytes, end)])
        if start + len(window) == end:
            cut, skipped = len(window), 0
        else:
            found = window.rfind(separator)
            if found < 0:
                msg = f"no {separator.decode()!r} to cut after in {piece_bytes} bytes"
                raise ValueError(msg)
            cut, skipped = found + kept, len(separator) - kept
        if cut <= 0:
            msg = f"an element longer than {piece_bytes} bytes"
            raise ValueError(msg)
        yield b"[%s]" % window[:cut]
        start += cut + skipped
