"""The flat arrays of a JSON body found by its brackets, and the body without their numbers.

Byte-level only: nothing here parses JSON. `app.wire.json_codec.decode_split` parses the
skeleton (the body with the content of each innermost array cut out: a few hundred bytes
of keys and scalars) and each array's content on its own, and it is that parsing which
proves the split right: an array's content that parses as numbers holds no quote, so no
cut falls within a string; a skeleton that passes holds no string but its keys, and a cut
within a key would leave `[]` in it, which the skeleton's exact keys refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Skeleton", "bracket_positions", "count_byte", "skeleton"]

# A body is compared with a byte this many bytes at a time, so that the comparison's
# temporary of booleans stays small whatever the body's size.
_SLICE_BYTES = 1 << 18
# The offsets `Skeleton.text` turns into Python ints at a time.
_SPANS_AT_A_TIME = 4096


@dataclass(frozen=True, slots=True)
class Skeleton:
    """A body's innermost arrays: the offsets of each one's '[' and ']', in the body's order.

    Offsets as NumPy arrays, 16 bytes an array: a body is split only with at most one
    array per 256 bytes of it, and a Python object per row would weigh as much as a short
    row's text.
    """

    body: bytes | bytearray
    opening: NDArray[np.intp]
    closing: NDArray[np.intp]

    def __len__(self) -> int:
        return int(self.opening.size)

    def span(self, index: int) -> memoryview:
        """The text of the `index`-th innermost array, brackets included: a view on the body."""
        return memoryview(self.body)[int(self.opening[index]) : int(self.closing[index]) + 1]

    @property
    def size(self) -> int:
        """The length of `text()`, known before it is built."""
        return len(self.body) - int((self.closing - self.opening - 1).sum())

    def text(self) -> bytes:
        """The body without the content of its innermost arrays."""
        view = memoryview(self.body)
        text = bytearray()
        start = 0
        # The offsets as Python ints a slice at a time: all at once, they would weigh more
        # than the text of short rows.
        for first in range(0, len(self), _SPANS_AT_A_TIME):
            opening = self.opening[first : first + _SPANS_AT_A_TIME].tolist()
            closing = self.closing[first : first + _SPANS_AT_A_TIME].tolist()
            for open_at, close_at in zip(opening, closing, strict=True):
                text += view[start : open_at + 1]
                start = close_at
        text += view[start:]
        return bytes(text)


def count_byte(body: bytes | bytearray | memoryview, byte: bytes) -> int:
    """How many times `byte` occurs in `body`.

    `bytes.count` of one byte compares byte by byte (about 0.25 ns a byte here, 0.5 for a
    frequent one); NumPy's comparison and count run vectorised, about four times faster
    on a large body, over slices of `_SLICE_BYTES`.
    """
    if len(body) <= _SLICE_BYTES and not isinstance(body, memoryview):
        return body.count(byte)
    data = np.frombuffer(body, dtype=np.uint8)
    value = byte[0]
    return sum(
        int(np.count_nonzero(data[start : start + _SLICE_BYTES] == value))
        for start in range(0, data.size, _SLICE_BYTES)
    )


def bracket_positions(
    body: bytes | bytearray, bracket: bytes, most: int
) -> NDArray[np.intp] | None:
    """The offsets of every occurrence of the byte `bracket` in `body`, in increasing order;
    None as soon as there are more than `most`, so that the offsets never take more memory
    than `most` of them.
    """
    data = np.frombuffer(body, dtype=np.uint8)
    value = bracket[0]
    found: list[NDArray[np.intp]] = []
    count = 0
    for start in range(0, data.size, _SLICE_BYTES):
        offsets = np.flatnonzero(data[start : start + _SLICE_BYTES] == value)
        count += offsets.size
        if count > most:
            return None
        found.append(start + offsets)
    return np.concatenate(found) if found else np.empty(0, dtype=np.intp)


def skeleton(
    body: bytes | bytearray, opening: NDArray[np.intp], closing: NDArray[np.intp]
) -> Skeleton | None:
    """The innermost arrays of `body`, given the offsets of its '[' and ']'.

    An innermost array is a '[' whose next bracket is a ']'. None when the brackets cannot
    belong to a JSON document: their counts differ, or a '[' has no ']' after it.

    Examples
    --------
    >>> body = b'{"a": [1, 2], "b": [[3], [4, 5]]}'
    >>> opening, closing = (bracket_positions(body, bracket, 10) for bracket in (b"[", b"]"))
    >>> found = skeleton(body, opening, closing)
    >>> found.text(), found.size, len(found), bytes(found.span(2))
    (b'{"a": [], "b": [[], []]}', 24, 3, b'[4, 5]')
    """
    if opening.size != closing.size or not opening.size:
        return None
    next_close = np.searchsorted(closing, opening)
    if next_close[-1] == closing.size:  # the last '[' comes after every ']'
        return None
    next_open = np.append(opening[1:], len(body))
    innermost = closing[next_close] < next_open
    return Skeleton(body, opening[innermost], closing[next_close[innermost]])
