"""The OpenAPI document's examples: real answers, computed by the service's own code.

The 200 example is the answer to the reference example; each error example is the problem
the service raises for a real request of that kind, obtained by running that request's
bad part through the code that rejects it (the decoders, the media check, the limits, the
core, the token check, the gate). The document cannot drift from what the service sends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..core import UpdateError
from ..errors import BodyTooLargeError, ProblemError
from ..settings import Settings
from ..wire import CODECS
from ..wire.limits import check_element_count
from ..wire.media import wire_format
from ..wire.schemas import REFERENCE_EXAMPLE
from .auth import verify_bearer_token
from .body import body_timeout
from .gate import ConcurrencyGate
from .problems import as_problem

__all__ = ["ok_example", "problem_examples"]

_JSON = CODECS["json"]


def ok_example() -> dict[str, Any]:
    """The JSON answer to the reference example, as /update computes and writes it."""
    result = _JSON.decode_request(bytearray(orjson.dumps(REFERENCE_EXAMPLE))).compute()
    answer: dict[str, Any] = orjson.loads(_JSON.encode_response(result))
    return answer


def problem_examples(settings: Settings) -> Mapping[int, tuple[ProblemError, ...]]:
    """One real problem per documented error type of /update, by status, under `settings`."""
    max_body_size, max_elements = settings.max_body_size, settings.max_elements
    side = math.isqrt(max_elements) + 1  # B = N = side: B*N alone is above the limit
    gate = ConcurrencyGate(
        settings.max_in_flight,
        max_queue=settings.max_queue,
        queue_timeout=settings.queue_timeout_seconds,
    )
    return {
        400: (
            _raised(lambda: _JSON.decode_request(bytearray(b'{"weights": [1.0, 2.0'))),
            _raised(lambda: CODECS["safetensors"].decode_request(bytearray(b"\x10\x00"))),
        ),
        401: (_raised(lambda: verify_bearer_token(None, b"")),),
        408: (body_timeout(settings.body_timeout_seconds, 12),),
        413: (
            BodyTooLargeError(max_body_size),
            _raised(lambda: check_element_count(side, side, side * side, max_elements)),
        ),
        415: (_raised(lambda: wire_format("text/plain")),),
        422: (
            _raised(lambda: _computed(log_prob_grads=[[0.5, -0.5], [0.5]])),
            _raised(lambda: _computed(weights=[1.7e308, 1.0], lr=1e308)),
        ),
        503: (gate.full(),),
    }


def _computed(**changes: Any) -> None:
    """Decode and compute the reference example with `changes`, as /update does."""
    _JSON.decode_request(bytearray(orjson.dumps(REFERENCE_EXAMPLE | changes))).compute()


def _raised(action: Callable[[], object]) -> ProblemError:
    """The problem `action` raises, as the error handlers render it."""
    try:
        action()
    except ProblemError as exc:
        return exc
    except UpdateError as exc:
        return as_problem(exc)
    msg = "an OpenAPI example request was accepted; it is meant to be refused"
    raise RuntimeError(msg)
