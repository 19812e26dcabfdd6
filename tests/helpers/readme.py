"""The README's fenced blocks, and the markers that say what each one is.

The marker is an HTML comment on the line just before the block's opening fence; GitHub
renders nothing for it::

    <!-- readme: run -->      the block (```sh or ```python) runs as is against a service
                              on http://127.0.0.1:8000
    <!-- readme: output -->   what the runnable block before it prints on stdout
    <!-- readme: shape -->    the block only shows a shape (placeholders such as [...])

A fenced block without a marker is not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KINDS", "README_PATH", "Block", "fenced_blocks", "runnable_blocks"]

README_PATH = Path(__file__).parents[2] / "README.md"
KINDS = ("run", "output", "shape")

_FENCE = re.compile(
    r"^(?:<!-- readme: (?P<kind>[a-z]+) -->\n)?```(?P<language>[a-z]*)\n(?P<text>.*?)^```$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    """One fenced block: its marker (None if unmarked), language, text and first line."""

    kind: str | None
    language: str
    text: str
    line: int

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.language or 'text'})"


def fenced_blocks(readme: str) -> list[Block]:
    """Every fenced block of `readme`, in order."""
    return [
        Block(
            match["kind"],
            match["language"],
            match["text"],
            readme.count("\n", 0, match.start("text")) + 1,
        )
        for match in _FENCE.finditer(readme)
    ]


def runnable_blocks(readme: str) -> list[tuple[Block, Block | None]]:
    """Each block marked run, with the output block that follows it (None if there is none
    before the next runnable block)."""
    blocks = [b for b in fenced_blocks(readme) if b.kind in ("run", "output")]
    pairs: list[tuple[Block, Block | None]] = []
    for i, block in enumerate(blocks):
        if block.kind == "run":
            after = blocks[i + 1] if i + 1 < len(blocks) else None
            pairs.append((block, after if after is not None and after.kind == "output" else None))
    return pairs
