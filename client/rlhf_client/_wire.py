"""The one place that speaks the wire format, shared by `Client` and `AsyncClient`.

Requests: arrays checked locally, then encoded as JSON or as one safetensors file.
Responses: decoded to an `UpdateResult`, or mapped to the exception of their status.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

import httpx2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from rlhf_client._errors import APIResponseError, ContentTooLargeError, status_error_class
from rlhf_client._models import UpdateResult, UpdateStats

__all__ = [
    "ARRAY_NAMES",
    "JSON_MEDIA_TYPE",
    "SAFETENSORS_MEDIA_TYPE",
    "STATE_VECTORS",
    "PreparedUpdate",
    "TransportName",
    "WireDtype",
    "as_state",
    "check_update_arrays",
    "decode_json_object",
    "decode_update_response",
    "encode_update",
    "has_safetensors",
    "in_wire_dtype",
    "raise_for_status",
    "read_safetensors_metadata",
    "request_id_of",
]

JSON_MEDIA_TYPE = "application/json"
SAFETENSORS_MEDIA_TYPE = "application/x-safetensors"
REQUEST_ID_HEADER = "X-Request-ID"

TransportName = Literal["auto", "json", "safetensors"]
# The dtypes an update's arrays can travel in; bfloat16 is ml_dtypes' (the [binary] extra).
WireDtype = Literal["float64", "float32", "float16", "bfloat16"]
# The five arrays of an update, in the order of the service's signature.
ARRAY_NAMES = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


def has_safetensors() -> bool:
    """Whether the optional safetensors package (the `[binary]` extra) is installed."""
    return importlib.util.find_spec("safetensors") is not None


JSON_TOO_LARGE_HINT = (
    "the body was JSON: send it as safetensors, 8 bytes per float64 (4 per float32) against "
    "about 20 as JSON text (pip install 'rlhf-update-client[binary]', then "
    "transport='safetensors', or the CLI's --transport safetensors)"
)


@dataclass(frozen=True, slots=True)
class PreparedUpdate:
    """One /update request body, ready to send, and what decoding its answer needs."""

    content: bytes
    headers: dict[str, str]
    weights_dtype: np.dtype[Any]
    binary: bool


def check_update_arrays(arrays: Sequence[ArrayLike]) -> dict[str, NDArray[np.floating[Any]]]:
    """The five arrays by name, as float32 or float64, after the shape and finiteness checks."""
    named = {
        name: _as_float_array(name, array) for name, array in zip(ARRAY_NAMES, arrays, strict=True)
    }
    _check_shapes(named)
    return named


def in_wire_dtype(
    arrays: Mapping[str, NDArray[np.floating[Any]]], dtype: WireDtype
) -> dict[str, NDArray[np.floating[Any]]]:
    """The checked arrays rounded to `dtype`; ValueError naming a value beyond its range."""
    wire = _numpy_dtype(dtype)
    cast = {}
    for name, array in arrays.items():
        with np.errstate(over="ignore"):
            rounded = array.astype(wire)
        if not np.isfinite(rounded).all():
            bad = tuple(np.argwhere(~np.isfinite(rounded))[0])
            where = "".join(f"[{i}]" for i in bad)
            msg = f"{name}{where} is {array[bad]}, beyond the range of {dtype}"
            raise ValueError(msg)
        cast[name] = rounded
    return cast


def _numpy_dtype(dtype: str) -> np.dtype[Any]:
    if dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            msg = "dtype='bfloat16' needs ml_dtypes: pip install 'rlhf-update[binary]'"
            raise ImportError(msg) from None
        bfloat16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bfloat16
    if dtype not in ("float64", "float32", "float16"):
        msg = f"dtype must be 'float64', 'float32', 'float16' or 'bfloat16', not {dtype!r}"
        raise ValueError(msg)
    return np.dtype(dtype)


def encode_update(
    arrays: Mapping[str, NDArray[np.floating[Any]]],
    *,
    beta: float,
    lr: float,
    options: Mapping[str, Any],
    binary: bool,
) -> PreparedUpdate:
    """Encode checked arrays, the scalars and the options as one safetensors file or JSON."""
    scalars = {"beta": _as_scalar("beta", beta), "lr": _as_scalar("lr", lr)}
    batch = len(arrays["rewards"])
    # None means "not set", as null does in JSON.
    opts = {
        name: _as_option(name, value, batch, len(arrays["weights"]))
        for name, value in options.items()
        if value is not None
    }
    if binary:
        content = _encode_safetensors(arrays, scalars, opts)
        headers = {
            "Content-Type": SAFETENSORS_MEDIA_TYPE,
            "Accept": f"{SAFETENSORS_MEDIA_TYPE}, {JSON_MEDIA_TYPE};q=0.5",
        }
    else:
        content = _encode_json(arrays, scalars, opts)
        headers = {"Content-Type": JSON_MEDIA_TYPE, "Accept": JSON_MEDIA_TYPE}
    return PreparedUpdate(content, headers, arrays["weights"].dtype, binary)


def decode_update_response(response: httpx2.Response, prepared: PreparedUpdate) -> UpdateResult:
    """The result of a 200 answer, weights cast back to the dtype that was sent."""
    try:
        raise_for_status(response)
    except ContentTooLargeError as exc:
        if not prepared.binary:
            exc.hint = JSON_TOO_LARGE_HINT
        raise
    weights_dtype = prepared.weights_dtype
    media_type = _media_type(response)
    try:
        if media_type == SAFETENSORS_MEDIA_TYPE:
            weights, stats, state = _decode_safetensors(response.content)
        else:
            body = decode_json_object(response)
            weights = np.asarray(body["weights"], dtype=np.float64)
            stats = body["stats"]
            sent = body.get(_STATE)
            state = None
            if isinstance(sent, Mapping):
                vectors = {k: v for k, v in sent.items() if k != "step"}
                state = decode_state(vectors, sent.get("step"))
        if weights.ndim != 1 or not isinstance(stats, Mapping):
            msg = "expected 1-d weights and a stats object"
            raise ValueError(msg)
        parsed = UpdateStats.from_dict(stats)
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"unreadable /update answer ({media_type or 'no Content-Type'}): {exc}"
        raise APIResponseError(msg, response) from exc
    return UpdateResult(
        _in_dtype(weights, weights_dtype, response), parsed, request_id_of(response), state
    )


def _in_dtype(
    weights: NDArray[Any], dtype: np.dtype[Any], response: httpx2.Response
) -> NDArray[Any]:
    """The weights in the caller's dtype. A JSON answer is float64: a new weight beyond
    float32's range is refused here, as the server refuses it for a binary request."""
    with np.errstate(over="ignore"):
        cast = weights.astype(dtype, copy=False)
    if cast is not weights and not np.isfinite(cast).all():
        i = int(np.flatnonzero(~np.isfinite(cast))[0])
        msg = (
            f"the updated weight weights[{i}] ({weights[i]}) overflows {dtype.name}; "
            "scale down the inputs or lr, or send float64 weights"
        )
        raise APIResponseError(msg, response)
    return cast


def decode_json_object(response: httpx2.Response) -> dict[str, Any]:
    """The body as a JSON object; ValueError if it is not one."""
    body = json.loads(response.content)
    if not isinstance(body, dict):
        msg = f"expected a JSON object, got {type(body).__name__}"
        raise ValueError(msg)
    return body


def raise_for_status(response: httpx2.Response) -> None:
    """Raise the `APIStatusError` subclass of an error answer; any body, JSON or not, will do."""
    if response.is_success:
        return
    response.read()
    try:
        problem = decode_json_object(response)
    except ValueError:
        problem = {}
    if not problem:
        # A proxy's HTML page or an empty body: keep the status, and the text as detail.
        text = response.text.strip()
        problem = {
            "type": "about:blank",
            "title": _reason(response.status_code),
            "status": response.status_code,
            "detail": text[:500],
            "errors": [],
        }
    request_id = request_id_of(response) or _str_or_none(problem.get("request_id"))
    raise status_error_class(response.status_code)(response, problem, request_id)


def request_id_of(response: httpx2.Response) -> str | None:
    """The X-Request-ID the server answered with, if any."""
    return response.headers.get(REQUEST_ID_HEADER)


def _as_float_array(name: str, value: ArrayLike) -> NDArray[np.floating[Any]]:
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        msg = f"{name} must be a rectangular array of numbers ({exc})"
        raise ValueError(msg) from None
    if array.dtype.kind not in "iuf":
        msg = f"{name} must hold real numbers, not {array.dtype}"
        raise ValueError(msg)
    # float32 travels as float32 (and comes back so); everything else as float64.
    if array.dtype != np.float32:
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad = tuple(np.argwhere(~np.isfinite(array))[0])
        where = "".join(f"[{i}]" for i in bad)
        msg = f"{name}{where} is {array[bad]}; expected finite numbers"
        raise ValueError(msg)
    return array


def _as_scalar(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        msg = f"{name} must be a number, not {type(value).__name__}"
        raise ValueError(msg)
    number = float(value)
    if not math.isfinite(number):
        msg = f"{name} is {number}; expected a finite number"
        raise ValueError(msg)
    return number


def _check_shapes(arrays: Mapping[str, NDArray[Any]]) -> None:
    weights, rewards, grads = arrays["weights"], arrays["rewards"], arrays["log_prob_grads"]
    if weights.ndim != 1 or weights.size == 0:
        msg = f"weights has shape {weights.shape}; expected (N,) with N >= 1"
        raise ValueError(msg)
    if rewards.ndim != 1 or rewards.size == 0:
        msg = f"rewards has shape {rewards.shape}; expected (B,) with B >= 1"
        raise ValueError(msg)
    b, n = len(rewards), len(weights)
    for name in ("policy_log_probs", "ref_log_probs"):
        if arrays[name].shape != (b,):
            msg = f"{name} has shape {arrays[name].shape}; expected ({b},) (= len(rewards))"
            raise ValueError(msg)
    if grads.shape != (b, n):
        msg = (
            f"log_prob_grads has shape {grads.shape}; expected ({b}, {n}) "
            "(= (len(rewards), len(weights)))"
        )
        raise ValueError(msg)


# Options of one value per sample: integer ones and float ones. A safetensors request
# carries them as tensors, the others as strings in __metadata__.
_INTEGER_ARRAY_OPTIONS = ("group_ids", "sequence_lengths")
_FLOAT_ARRAY_OPTIONS = ("old_log_probs", "behavior_log_probs")


def _as_option(name: str, value: Any, batch: int, n: int) -> Any:
    """An option as the request carries it: a per-sample option an array of shape (B,)
    (int64, or float32/float64), `optimizer` a dict, `optimizer_state` a dict of its step
    and float64 arrays of shape (N,), any other a scalar or a list of numbers (a
    reward_clip pair)."""
    if name == _OPTIMIZER:
        if not isinstance(value, Mapping):
            msg = f"optimizer must be a dict such as {{'type': 'adamw'}}, not {value!r}"
            raise ValueError(msg)
        return {str(k): _as_option(f"optimizer[{k!r}]", v, batch, n) for k, v in value.items()}
    if name == _STATE:
        return as_state(value, n)
    if name in _INTEGER_ARRAY_OPTIONS:
        ids = np.asarray(value)
        if ids.shape != (batch,) or ids.dtype.kind not in "iu":
            msg = f"{name} must be {batch} integers (= len(rewards)), got {ids.dtype} {ids.shape}"
            raise ValueError(msg)
        return ids.astype(np.int64)
    if name in _FLOAT_ARRAY_OPTIONS:
        array = _as_float_array(name, value)
        if array.shape != (batch,):
            msg = f"{name} has shape {array.shape}; expected ({batch},) (= len(rewards))"
            raise ValueError(msg)
        return array
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray | list | tuple):
        numbers = np.asarray(value).tolist()
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
            msg = f"option {name} must be a list of numbers, not {numbers!r}"
            raise ValueError(msg)
        return numbers
    if not isinstance(value, str | bool | int | float):
        msg = f"option {name} must be a string, number or boolean, not {type(value).__name__}"
        raise ValueError(msg)
    return value


_OPTIMIZER = "optimizer"
_STATE = "optimizer_state"
_STEP_KEY = "optimizer_state.step"
STATE_VECTORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def as_state(value: Any, n: int) -> dict[str, Any]:
    """An optimizer state: its integer step and its vectors, float64 arrays of shape (N,)."""
    if not isinstance(value, Mapping):
        msg = f"optimizer_state must be a dict (the one a result returned), not {value!r}"
        raise ValueError(msg)
    state: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        if key == "step":
            if isinstance(item, bool) or not isinstance(item, int | np.integer) or item < 0:
                msg = f"optimizer_state['step'] is {item!r}; expected an integer >= 0"
                raise ValueError(msg)
            state["step"] = int(item)
            continue
        array = _as_float_array(f"optimizer_state[{key!r}]", item).astype(np.float64)
        if array.shape != (n,):
            msg = f"optimizer_state[{key!r}] has shape {array.shape}; expected ({n},)"
            raise ValueError(msg)
        state[str(key)] = array
    return state


def decode_state(vectors: Mapping[str, Any], step: Any) -> dict[str, Any] | None:
    """The optimizer state of an answer: step as int, vectors as float64 arrays; or None."""
    if step is None:
        return None
    if isinstance(step, str):
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int):
        msg = f"optimizer_state.step is {step!r}; expected an integer"
        raise ValueError(msg)
    return {"step": step, **{k: np.asarray(v, dtype=np.float64) for k, v in vectors.items()}}


def _encode_json(
    arrays: Mapping[str, NDArray[Any]], scalars: Mapping[str, float], options: Mapping[str, Any]
) -> bytes:
    body: dict[str, Any] = {name: a.astype(np.float64).tolist() for name, a in arrays.items()}
    body.update(scalars)
    for name, value in options.items():
        if name == _STATE:
            value = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in value.items()}
        body[name] = value.tolist() if isinstance(value, np.ndarray) else value
    # float32 values widen exactly; repr of a float64 is its shortest round trip.
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def _encode_safetensors(
    arrays: Mapping[str, NDArray[Any]], scalars: Mapping[str, float], options: Mapping[str, Any]
) -> bytes:
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    tensors.update({name: np.asarray(v, dtype=np.float64) for name, v in scalars.items()})
    metadata: dict[str, str] = {}
    for name, value in options.items():
        if name == _STATE:
            # The vectors as tensors, the step as a decimal string in the metadata.
            tensors.update({k: v for k, v in value.items() if k != "step"})
            metadata[_STEP_KEY] = str(value.get("step", 0))
        elif isinstance(value, np.ndarray):
            tensors[name] = np.ascontiguousarray(value)
        else:
            metadata[name] = value if isinstance(value, str) else json.dumps(value)
    return save(tensors, metadata=metadata or None)


def _decode_safetensors(
    data: bytes,
) -> tuple[NDArray[Any], Mapping[str, Any], dict[str, Any] | None]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        metadata = read_safetensors_metadata(data)
        stats = json.loads(metadata["stats"])
        header_size = int.from_bytes(data[:8], "little")
        if json.loads(data[8 : 8 + header_size])["weights"]["dtype"] == "BF16":
            # safetensors' NumPy reader knows no bfloat16; the service answers BF16 weights
            # alone (an optimizer's state makes the weights float64 in the answer).
            weights = np.frombuffer(data, _numpy_dtype("bfloat16"), offset=8 + header_size)
            return weights.copy(), stats, None
        tensors = load(data)
        vectors = {k: v for k, v in tensors.items() if k in STATE_VECTORS}
        state = decode_state(vectors, metadata.get(_STEP_KEY))
        return np.array(tensors["weights"]), stats, state
    except (SafetensorError, AttributeError, UnicodeDecodeError) as exc:
        # Not a safetensors file, or a header that is not a JSON object.
        msg = f"malformed safetensors ({exc})"
        raise ValueError(msg) from exc


def read_safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file: an 8-byte little-endian header size, then
    the JSON header."""
    header_size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}


def _media_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _reason(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return f"HTTP {status_code}"


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
