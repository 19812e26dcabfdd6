"""Backpressure: at most RLHF_MAX_IN_FLIGHT updates at once per worker, 503 past that.

No queue: a request over the cap is answered at once with 503 and Retry-After, so a busy
worker never builds up unbounded work, and the probes, which do not pass the gate, keep
answering. Everything here runs on the event loop, so a plain counter needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import SaturatedError

__all__ = ["ConcurrencyGate"]


class ConcurrencyGate:
    """A counter of updates in flight with a hard cap; `on_change` sees every new count."""

    def __init__(self, limit: int, on_change: Callable[[int], None] = lambda _: None) -> None:
        self.limit = limit
        self.in_flight = 0
        self._on_change = on_change

    def try_enter(self) -> bool:
        """Take a slot if one is free."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        self._on_change(self.in_flight)
        return True

    def leave(self) -> None:
        """Give a slot back."""
        self.in_flight -= 1
        self._on_change(self.in_flight)

    def __enter__(self) -> None:
        """Hold a slot for the duration of a `with gate:` block; 503 when none is free.

        Taken in the /update handler itself, after the bearer token (a dependency) has
        been checked, so that a refused token never holds a slot.

        Raises
        ------
        SaturatedError
            When `limit` updates are in flight already.
        """
        if not self.try_enter():
            msg = (
                f"this worker is already serving {self.limit} updates (RLHF_MAX_IN_FLIGHT); "
                "retry after the delay in Retry-After"
            )
            raise SaturatedError(msg)

    def __exit__(self, *exc_info: object) -> None:
        self.leave()
