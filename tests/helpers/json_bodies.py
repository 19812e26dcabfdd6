"""Request bodies as JSON text, and the same broken by a few edits, for fuzzing one
decoder against another."""

from __future__ import annotations

from hypothesis import strategies as st


def body_of(weights: str, rows: list[str] | None = None, /, **fields: str) -> bytes:
    """A request body with `weights` (a JSON array, as text) and rows of the same length."""
    rows = rows if rows is not None else [weights, weights]
    parts = {
        "weights": weights,
        "rewards": "[" + ",".join(["1"] * len(rows)) + "]",
        "policy_log_probs": "[" + ",".join(["-1"] * len(rows)) + "]",
        "ref_log_probs": "[" + ",".join(["-1.5"] * len(rows)) + "]",
        "log_prob_grads": "[" + ",".join(rows) + "]",
        "beta": "0.5",
        "lr": "0",
    } | fields
    return ("{" + ",".join(f'"{k}": {v}' for k, v in parts.items()) + "}").encode()


# Fragments that break a body in the ways a parser must not trip over: other JSON types
# where numbers or arrays belong, brackets and commas out of place, literals beyond
# float64 or beyond JSON, a key that is not the contract's.
FRAGMENTS = [b'{"a": 1}', b'"x"', b"null", b"true", b"[]", b"[[1]]", b"{}", b"1e999", b"-"]
FRAGMENTS += [b"1" * 40, b"0", b"-0", b",", b"]", b"[", b": ", b'"weights"', b'"lr"', b'"beta"']
FRAGMENTS += [b'"', b'"[', b']"', b'"lr[]"', b"[1]", b"[[]]", b" " * 20]
FRAGMENTS += [b"NaN", b"-Infinity", b'"bogus": 1, ', b""]

Edits = list[tuple[int, int, bytes]]


def edits(most_removed: int) -> st.SearchStrategy[Edits]:
    """One to three edits: where (wrapped to the body's length), how many bytes go, what
    comes instead."""
    where, removed = st.integers(0, 10**6), st.integers(0, most_removed)
    edit = st.tuples(where, removed, st.sampled_from(FRAGMENTS))
    return st.lists(edit, min_size=1, max_size=3)


def broken(body: bytes, changes: Edits) -> bytes:
    """`body` with `changes` made, in turn."""
    edited = bytearray(body)
    for position, removed, fragment in changes:
        at = position % len(edited)
        edited[at : at + removed] = fragment
    return bytes(edited)
