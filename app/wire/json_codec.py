"""JSON on the wire: bytes to an `UpdatePayload`, an `UpdateResult` to bytes.

Valid requests take a fast path: msgspec decodes the body straight into lists of floats
(`json_fields.RequestFields`: numbers only, no unknown fields, out-of-range literals
refused) and keeps the few algorithm options as raw JSON for the Pydantic model of the
options (`json_refusal.read_options`). A body of the right types whose values break a rule
(empty arrays, rows of the wrong length, a negative beta or lr) is worded from what msgspec
decoded; any other body msgspec refuses is read again, field by field, by
`json_refusal.refusal`, at a cost bounded by its answer. The README's Performance section
has the measurements behind this split.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import msgspec
import numpy as np
import orjson
from numpy.typing import NDArray

from ..core import InputProblem, UpdateResult
from ..errors import InvalidPayloadError, MalformedJsonError
from .json_fields import FLOAT, SCALARS, RequestFields
from .json_refusal import (
    field_order,
    field_problem,
    most_arrays,
    most_short_numbers,
    nested_too_deeply,
    overfull,
    read_options,
    refusal,
    value_problems,
)
from .messages import OPTIONS
from .payload import UpdatePayload
from .stats import stats_as_dict

__all__ = ["decode_request", "encode_response"]

# The options are few and small: msgspec keeps each as its raw JSON (empty when absent) and
# read_options has the Pydantic model of the options read them, as a refused body's are.
_FastRequest = msgspec.defstruct(
    "_FastRequest",
    [(name, msgspec.Raw, msgspec.Raw()) for name in OPTIONS],
    bases=(RequestFields,),
    forbid_unknown_fields=True,
)
_FAST_DECODER = msgspec.json.Decoder(_FastRequest)
# Below this size, decoding costs tens of milliseconds at worst: counting the brackets and
# commas of every small body (about a nanosecond a byte) would cost more than it saves.
_COUNTED_BODY_BYTES = 1 << 20


def decode_request(body: bytes | bytearray) -> UpdatePayload:
    """Parse and validate a JSON request body straight from its bytes."""
    if not body or body.isspace():
        msg = "request body is empty; expected a JSON object"
        raise MalformedJsonError(msg)
    if len(body) > _COUNTED_BODY_BYTES:
        _refuse_overfull(body)
    request = _fast_decode(body)
    if isinstance(request, msgspec.DecodeError):
        raise refusal(body, request)
    problems: list[InputProblem] = []
    scalars: dict[str, tuple[float, bytes]] = {}
    for name in SCALARS:
        raw = getattr(request, name)
        try:
            scalars[name] = (FLOAT.decode(raw), bytes(raw))
        except msgspec.ValidationError as exc:
            problems.append(field_problem(name, raw, exc))
    found, unlisted = value_problems(
        request.weights, request.rewards, request.log_prob_grads, scalars
    )
    options, option_problems = read_options(
        {name: raw for name in OPTIONS if (raw := getattr(request, name))}
    )
    problems = sorted([*problems, *found, *option_problems], key=field_order)
    if problems or options is None:
        raise InvalidPayloadError(problems, unlisted=unlisted)
    n = len(request.weights)
    return UpdatePayload(
        weights=np.array(request.weights, dtype=np.float64),
        rewards=np.array(request.rewards, dtype=np.float64),
        policy_log_probs=np.array(request.policy_log_probs, dtype=np.float64),
        ref_log_probs=np.array(request.ref_log_probs, dtype=np.float64),
        log_prob_grads=_matrix(request.log_prob_grads, n),
        beta=scalars["beta"][0],
        lr=scalars["lr"][0],
        options=options,
    )


def _refuse_overfull(body: bytes | bytearray) -> None:
    """Refuse a body that cannot be valid for its size before any of it is decoded.

    Millions of short numbers or one-number rows cost 16 to 100 bytes of Python objects
    per few bytes of text, and hold the interpreter for seconds. A count of the body's
    brackets tells one with more arrays than a valid body of its size; for one dense with
    short numbers, each field's length is checked (`json_refusal.overfull`).
    """
    too_many_arrays = body.count(b"[") > most_arrays(len(body))
    if too_many_arrays or body.count(b",") > most_short_numbers(len(body)):
        problem = overfull(body, sure=too_many_arrays)
        if problem is not None:
            raise problem


def _fast_decode(body: bytes | bytearray) -> RequestFields | msgspec.DecodeError:
    """The body as typed fields, or msgspec's reason to refuse it.

    The reason is returned, not raised, so that nothing msgspec decoded before it stopped
    is still referenced while the refusal reads the body again.
    """
    try:
        return cast(RequestFields, _FAST_DECODER.decode(body))
    except RecursionError:  # skipping an option nested past msgspec's recursion limit
        raise nested_too_deeply() from None
    except msgspec.DecodeError as exc:
        return exc


def _matrix(rows: Sequence[Sequence[float]], n: int) -> NDArray[np.float64]:
    """Rows of n floats each as one (len(rows), n) array."""
    # Filled from one flat iterator of known length, without np.array's walk of the
    # nested sequences to find their shape.
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64, len(rows) * n)
    return flat.reshape(-1, n)


def encode_response(result: UpdateResult) -> bytes:
    """Serialise straight from the float64 buffer; floats print as their shortest round trip."""
    body = {"weights": result.weights, "stats": stats_as_dict(result)}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
