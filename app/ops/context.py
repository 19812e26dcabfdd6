"""What one request has told about itself so far: its id and, for /update, its numbers.

The outermost middleware opens a `RequestContext` per request; the handler, the codecs and
the error handlers fill it in through `current_context()`, and the update observer turns it
into metrics and the request's log line. A context variable carries it into worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.types import Scope

from ..errors import ProblemError

__all__ = [
    "RequestContext",
    "current_context",
    "open_context",
    "scope_header",
    "scope_header_values",
]


@dataclass(slots=True)
class RequestContext:
    """One request's id, and the facts of an update as they become known."""

    request_id: str
    batch_size: int | None = None
    params: int | None = None
    kl_mean: float | None = None
    # The problem of an error answer, as it was rendered.
    problem: ProblemError | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def record_shape(self, batch_size: int, params: int) -> None:
        """Note B and N once the body has been decoded."""
        self.batch_size, self.params = batch_size, params

    def stage(self, name: str) -> _Stage:
        """Time a stage of the update (decode, compute, encode), even when it fails."""
        return _Stage(self.stage_seconds, name)


class _Stage:
    """The timer of one stage; a class, as a generator-based context manager costs more."""

    __slots__ = ("_name", "_seconds", "_start")

    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self._seconds = seconds
        self._name = name
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self._seconds[self._name] = time.perf_counter() - self._start


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first value of the header `name` (lower case) in an ASGI scope, or None.

    What `starlette.datastructures.Headers(scope=scope).get` returns, for the middlewares
    that see only the scope.
    """
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def scope_header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of the header `name` (lower case) in an ASGI scope, in order.

    What `starlette.datastructures.Headers(scope=scope).getlist` returns.
    """
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


_current: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current_context() -> RequestContext | None:
    """The context of the request being served, or None outside a request."""
    return _current.get()


@contextmanager
def open_context(request_id: str) -> Iterator[RequestContext]:
    """Make a fresh context current for the duration of one request."""
    context = RequestContext(request_id)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
