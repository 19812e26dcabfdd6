"""Backpressure: RLHF_MAX_IN_FLIGHT compute slots per worker, a short queue, then 503.

An update takes a slot once its whole body has arrived, so a slow upload never holds one.
When every slot is taken, at most RLHF_MAX_QUEUE updates wait for one, first come first
served, each for up to RLHF_QUEUE_TIMEOUT_SECONDS; past the queue the answer is 503 with
Retry-After at once, so a busy worker never builds up unbounded work. The probes do not
pass the gate and never wait. Everything here runs on the event loop, so plain counters
need no lock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..errors import SaturatedError

__all__ = ["ConcurrencyGate"]


def _ignore(_: int) -> None:
    pass


class ConcurrencyGate:
    """Compute slots with a hard cap and a bounded FIFO queue in front of them.

    `on_change` sees every new count of slots taken, `on_queue_change` every new length of
    the queue.
    """

    def __init__(
        self,
        limit: int,
        *,
        max_queue: int,
        queue_timeout: float,
        on_change: Callable[[int], None] = _ignore,
        on_queue_change: Callable[[int], None] = _ignore,
    ) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.in_flight = 0
        # A freed slot is handed to the first waiter without being released, so while
        # anyone waits every slot is taken and `try_enter` cannot jump the queue.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._on_change = on_change
        self._on_queue_change = on_queue_change

    @property
    def waiting(self) -> int:
        """Updates in the queue now."""
        return len(self._waiters)

    def try_enter(self) -> bool:
        """Take a slot if one is free, without waiting."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        self._on_change(self.in_flight)
        return True

    async def enter(self) -> None:
        """Take a slot, waiting in the queue for one when none is free and there is room.

        Raises
        ------
        SaturatedError
            At once when every slot is taken and the queue is full; after
            `queue_timeout` seconds when no slot came free for this request by then.
        """
        if self.try_enter():
            return
        if len(self._waiters) >= self.max_queue:
            raise self.full()
        handed = asyncio.get_running_loop().create_future()
        self._waiters.append(handed)
        self._on_queue_change(len(self._waiters))
        try:
            # `wait` neither cancels `handed` nor raises at the timeout: whether the slot
            # came is read from `handed` itself, with no await in between.
            await asyncio.wait((handed,), timeout=self.queue_timeout)
        except BaseException:
            self._give_up(handed)
            raise
        if not handed.done():
            self._give_up(handed)
            msg = (
                f"no compute slot came free within {self.queue_timeout:g} s "
                "(RLHF_QUEUE_TIMEOUT_SECONDS); retry after the delay in Retry-After"
            )
            raise SaturatedError(msg)

    def full(self) -> SaturatedError:
        """The 503 of a request that finds every slot taken and the queue full."""
        msg = (
            f"this worker is already serving {self.limit} updates (RLHF_MAX_IN_FLIGHT) "
            f"with {self.max_queue} more waiting (RLHF_MAX_QUEUE); "
            "retry after the delay in Retry-After"
        )
        return SaturatedError(msg)

    def leave(self) -> None:
        """Give a slot back: to the first waiter in the queue, or free."""
        if self._waiters:
            # Every future in the queue is pending: a waiter that gives up leaves it at once.
            self._waiters.popleft().set_result(None)
            self._on_queue_change(len(self._waiters))
            return
        self.in_flight -= 1
        self._on_change(self.in_flight)

    def _give_up(self, handed: asyncio.Future[None]) -> None:
        """Leave the queue; a slot handed over meanwhile goes on to the next in line."""
        if handed.done():
            self.leave()
            return
        handed.cancel()
        self._waiters.remove(handed)
        self._on_queue_change(len(self._waiters))

    async def __aenter__(self) -> None:
        """Hold a slot for the duration of an `async with gate:` block; see `enter`."""
        await self.enter()

    async def __aexit__(self, *exc_info: object) -> None:
        self.leave()
