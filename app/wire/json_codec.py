"""JSON on the wire: bytes to an `UpdatePayload`, an `UpdateResult` to bytes.

Valid requests take a fast path: msgspec decodes the body straight into lists of floats
(strict: numbers only, no unknown fields, out-of-range literals refused) and hands the few
algorithm options, as raw JSON, to the Pydantic model of the options. A body the fast path
refuses goes through the Pydantic model of the whole request, only to word its errors;
both refuse exactly the same bodies and parse each number to the same correctly rounded
float64. The README's Performance section has the measurements behind this split.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import msgspec
import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import ValidationError

from ..core import InputProblem, UpdateOptions, UpdateResult
from ..errors import InvalidPayloadError, MalformedJsonError
from .messages import describe_validation_error
from .payload import UpdatePayload
from .schemas import UpdateOptionsModel, UpdateRequest
from .stats import stats_as_dict

__all__ = ["decode_request", "encode_response"]

_OPTIONS = tuple(UpdateOptionsModel.model_fields)


class _FastArrays(msgspec.Struct, forbid_unknown_fields=True):
    """The request for msgspec: the types of `UpdateRequest`, its value checks done after."""

    weights: list[float]
    rewards: list[float]
    policy_log_probs: list[float]
    ref_log_probs: list[float]
    log_prob_grads: list[list[float]]
    beta: float
    lr: float


# The options are few and small: msgspec keeps each as its raw JSON (empty when absent) and
# UpdateOptionsModel reads them, so that they follow the Pydantic path's rules exactly.
_FastRequest = msgspec.defstruct(
    "_FastRequest",
    [(name, msgspec.Raw, msgspec.Raw()) for name in _OPTIONS],
    bases=(_FastArrays,),
    forbid_unknown_fields=True,
)
_FAST_DECODER = msgspec.json.Decoder(_FastRequest)


def decode_request(body: bytes | bytearray) -> UpdatePayload:
    """Parse and validate a JSON request body straight from its bytes."""
    if not body or body.isspace():
        msg = "request body is empty; expected a JSON object"
        raise MalformedJsonError(msg)
    payload = _decode_valid(body)
    if payload is None:
        raise _refusal(body)
    return payload


def _refusal(body: bytes | bytearray) -> MalformedJsonError | InvalidPayloadError:
    """Why the fast path refused `body`, in the words of the Pydantic model."""
    try:
        request = UpdateRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors[0]["type"] == "json_invalid":
            return MalformedJsonError(f"malformed JSON: {errors[0]['ctx']['error']}")
        return InvalidPayloadError([describe_validation_error(error) for error in errors])
    # The model accepted it: what the fast path refuses beyond the model is ragged rows.
    n = len(request.weights)
    ragged = [
        InputProblem(
            ("log_prob_grads", i),
            f"log_prob_grads[{i}] has {len(row)} entries; expected {n} (= len(weights))",
        )
        for i, row in enumerate(request.log_prob_grads)
        if len(row) != n
    ]
    return InvalidPayloadError(
        ragged or [InputProblem((), "the body does not satisfy the request contract")]
    )


def _decode_valid(body: bytes | bytearray) -> UpdatePayload | None:
    """The payload of a body that satisfies every rule of `UpdateRequest`, else None."""
    try:
        request = cast(_FastArrays, _FAST_DECODER.decode(body))
    except msgspec.DecodeError:
        return None
    options = _fast_options(request)
    n = len(request.weights)
    if (
        n == 0
        or not request.rewards
        or any(len(row) != n for row in request.log_prob_grads)
        or request.beta < 0
        or request.lr < 0
        or options is None
    ):
        return None
    return UpdatePayload(
        weights=np.array(request.weights, dtype=np.float64),
        rewards=np.array(request.rewards, dtype=np.float64),
        policy_log_probs=np.array(request.policy_log_probs, dtype=np.float64),
        ref_log_probs=np.array(request.ref_log_probs, dtype=np.float64),
        log_prob_grads=_matrix(request.log_prob_grads, n),
        beta=request.beta,
        lr=request.lr,
        options=options,
    )


def _matrix(rows: list[list[float]], n: int) -> NDArray[np.float64]:
    """Rows of n floats each as one (len(rows), n) array."""
    # Filled from one flat iterator of known length, without np.array's walk of the
    # nested lists to find their shape.
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64, len(rows) * n)
    return flat.reshape(-1, n)


def _fast_options(request: _FastArrays) -> UpdateOptions | None:
    """The options of a body msgspec decoded, or None when UpdateOptionsModel refuses them."""
    given = [(name, bytes(raw)) for name in _OPTIONS if (raw := getattr(request, name))]
    if not given:
        return UpdateOptions()
    document = b"{" + b",".join(b'"%s":%s' % (name.encode(), raw) for name, raw in given) + b"}"
    try:
        return UpdateOptionsModel.model_validate_json(document).to_options()
    except ValidationError:
        return None


def encode_response(result: UpdateResult) -> bytes:
    """Serialise straight from the float64 buffer; floats print as their shortest round trip."""
    body: dict[str, Any] = {"weights": result.weights, "stats": stats_as_dict(result)}
    state = result.optimizer_state
    if state is not None:
        body["optimizer_state"] = {"step": state.step, **state.vectors()}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
