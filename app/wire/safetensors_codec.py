"""Safetensors on the wire: bytes to an `UpdatePayload`, an `UpdateResult` to bytes.

The `safetensors` package parses and validates the header (JSON, dtypes, shapes, offsets
that cover the data without gaps or overlaps). Its only bytes-level reader,
`safetensors.numpy.load`, copies every tensor out of the body; for a body of 100 MB that
doubles the memory of a request. So the header is handed to `safetensors.safe_open` in a
sparse file as long as the body (its data part never written, so it takes no memory), and
the tensors are NumPy views on the body at the offsets that validation accepted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ..core import (
    ARRAY_SHAPES,
    DEFAULT_OPTIONS,
    InputProblem,
    UpdateOptions,
    UpdateResult,
    shape_text,
)
from ..core.optimizers import STATE_VECTORS, OptimizerState
from ..core.options import (
    FLOAT_SAMPLE_OPTIONS,
    INTEGER_SAMPLE_OPTIONS,
    PER_TOKEN_FIELDS,
    per_token_message,
)
from ..core.results import AppliedStep, GradientResult
from ..errors import InvalidPayloadError, MalformedSafetensorsError, TooManyElementsError
from .limits import check_element_count
from .messages import describe_validation_error, did_you_mean, shorten
from .partials import GRAD_PARTIALS, partials_fields
from .payload import StepPayload, UpdatePayload
from .schemas import UpdateOptionsModel
from .stats import batch_stats_as_dict, stats_as_dict

__all__ = [
    "decode_apply_request",
    "decode_request",
    "describe_layout",
    "encode_applied",
    "encode_gradient",
    "encode_response",
]

_SCALARS = ("beta", "lr")
_TENSORS = (*ARRAY_SHAPES, *_SCALARS)
# The options of one value per sample travel as tensors; every other option as a string
# in __metadata__.
# The optimizer's state travels as its vectors (tensors) and its step (a metadata string).
_STATE = "optimizer_state"
_STEP_KEY = f"{_STATE}.step"
_OPTION_TENSORS = (*INTEGER_SAMPLE_OPTIONS, *FLOAT_SAMPLE_OPTIONS, *STATE_VECTORS)
_METADATA_OPTIONS = (
    *(
        name
        for name in UpdateOptionsModel.model_fields
        if name not in _OPTION_TENSORS and name != _STATE
    ),
    _STEP_KEY,
)
# Metadata options whose string may be JSON text for an array or an object, e.g. "[-1, 2]".
_JSON_TEXT_OPTIONS = ("reward_clip", "optimizer")
# Little-endian, as the format stores them; the integer ones are for the integer options.
# NumPy has no bfloat16: ml_dtypes' (the upper half of a float32's bits) widens exactly to
# float64 and rounds float64 to nearest, ties to even, as NumPy's own casts do.
_FLOATS: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_FLOAT_CODES = ", ".join(_FLOATS)
_INTEGERS: dict[str, np.dtype[Any]] = {
    code: np.dtype(f"<{kind}{size}")
    for kind, prefix in (("i", "I"), ("u", "U"))
    for size in (1, 2, 4, 8)
    for code in (f"{prefix}{8 * size}",)
}
# The answer: the new weights as one tensor, the stats as JSON text in the metadata.
_ANSWER_TENSOR = "weights"
_STATS_KEY = "stats"
# A valid request's header names only the tensors and options of the contract, in well
# under 2 KiB. A header beyond these bounds, which no valid request comes near, is refused
# before any of it is copied (its size) or walked (its entries: tensors and metadata
# keys), so that no header costs more than a fraction of a millisecond to read, on the
# event loop.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_ENTRIES = 64
_VALID_ENTRIES = len((*_TENSORS, *_OPTION_TENSORS, *_METADATA_OPTIONS))
_LENGTH_BYTES = 8
# The fields of a tensor's entry in the header.
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]


def decode_request(body: bytearray, max_elements: int | None = None) -> UpdatePayload:
    """Validate a safetensors request body; the arrays are read-only views on `body`.

    Raises `TooManyElementsError` when B*N + B + N exceeds `max_elements` (when given),
    from the header's shapes.
    """
    tensors, metadata, data_start = _read_header(body)
    by_name = {tensor.name: tensor for tensor in tensors}
    problems = [*_name_problems(by_name), *_dtype_problems(by_name)]
    problems += [
        InputProblem((name,), f"{name} has shape {by_name[name].shape}; expected a scalar")
        for name in _SCALARS
        if name in by_name and by_name[name].shape not in {(), (1,)}
    ]
    if problems:
        raise InvalidPayloadError(problems)
    if max_elements is not None:
        # `prod`, not `shape[0]`: arrays of the wrong rank or shapes that disagree are
        # counted as sent; the core rejects them with its own message once this passed.
        batch_size, params, grads_size = (
            math.prod(by_name[name].shape) for name in ("rewards", "weights", "log_prob_grads")
        )
        check_element_count(batch_size, params, grads_size, max_elements)
    views = _views(body, tensors, data_start)
    options = _options_from_binary(
        metadata, {name: views[name] for name in _OPTION_TENSORS if name in views}
    )
    return UpdatePayload(
        weights=views["weights"],
        rewards=views["rewards"],
        policy_log_probs=views["policy_log_probs"],
        ref_log_probs=views["ref_log_probs"],
        log_prob_grads=views["log_prob_grads"],
        beta=float(views["beta"].reshape(())),
        lr=float(views["lr"].reshape(())),
        options=options,
    )


def encode_response(result: UpdateResult) -> bytes:
    """One tensor `weights` in the dtype of the result (the request's weights' dtype, BF16
    included); the stats as JSON in the metadata.

    With an optimizer, its new state too: the vectors as F64 tensors, the step as
    ``optimizer_state.step`` in the metadata.
    """
    metadata = {_STATS_KEY: orjson.dumps(stats_as_dict(result)).decode()}
    tensors: dict[str, NDArray[Any]] = {_ANSWER_TENSOR: result.weights}
    state = result.optimizer_state
    if state is not None:
        metadata[_STEP_KEY] = str(state.step)
        tensors |= {name: np.asarray(value) for name, value in state.vectors().items()}
    if result.partials is not None:
        tensors |= partials_fields(result.partials)
    return save(tensors, metadata=metadata)


def encode_gradient(result: GradientResult) -> bytes:
    """A block's gradient (F64 tensor `grad`), its partials (F64, (k, 2)) and the batch's
    statistics as JSON text in the metadata."""
    metadata = {_STATS_KEY: orjson.dumps(batch_stats_as_dict(result.stats)).decode()}
    return save({"grad": result.grad, GRAD_PARTIALS: result.partials}, metadata=metadata)


def encode_applied(result: AppliedStep) -> bytes:
    """A block's new weights (the request's dtype) and state (F64), its partials, and
    ``clipped`` ("true" or "false") and the new step in the metadata."""
    metadata = {_CLIPPED_KEY: "true" if result.clipped else "false"}
    tensors: dict[str, NDArray[Any]] = {_ANSWER_TENSOR: result.weights}
    state = result.optimizer_state
    if state is not None:
        metadata[_STEP_KEY] = str(state.step)
        tensors |= {name: np.asarray(value) for name, value in state.vectors().items()}
    tensors |= partials_fields(result.partials)
    return save(tensors, metadata=metadata)


# /update/apply: a block's weights and gradient, lr and the whole gradient's norm, the
# optimizer's state block; the optimizer, its step, max_grad_norm and column_offset as
# metadata strings.
_STEP_ARRAYS = ("weights", "grad")
_STEP_SCALARS = ("lr", "grad_norm")
_STEP_TENSORS = (*_STEP_ARRAYS, *_STEP_SCALARS)
_STEP_METADATA = ("optimizer", _STEP_KEY, "max_grad_norm", "column_offset")
_CLIPPED_KEY = "clipped"


def decode_apply_request(body: bytearray, max_elements: int | None = None) -> StepPayload:
    """Validate a safetensors /update/apply body; the arrays are read-only views on `body`.

    Raises `TooManyElementsError` when its arrays hold more than `max_elements` entries.
    """
    tensors, metadata, data_start = _read_header(body)
    by_name = {tensor.name: tensor for tensor in tensors}
    problems = [
        InputProblem((name,), f"{name} is missing; expected {_expected_step_tensor(name)}")
        for name in _STEP_TENSORS
        if name not in by_name
    ]
    known = (*_STEP_TENSORS, *STATE_VECTORS)
    for name, tensor in by_name.items():
        if name not in known:
            suggestion = did_you_mean(name, known)
            msg = (
                f"unknown tensor {shorten(name)!r}{suggestion}; expected only tensors "
                f"{', '.join(_STEP_TENSORS)} and the optional {', '.join(STATE_VECTORS)}"
            )
            problems.append(InputProblem((name,), msg))
        elif tensor.dtype not in _FLOATS:
            msg = f"{name} has dtype {tensor.dtype}; expected one of {_FLOAT_CODES}"
            problems.append(InputProblem((name,), msg))
        elif name in _STEP_SCALARS and tensor.shape not in {(), (1,)}:
            problems.append(
                InputProblem((name,), f"{name} has shape {tensor.shape}; expected a scalar")
            )
    for key in metadata:
        if key not in _STEP_METADATA:
            suggestion = did_you_mean(key, _STEP_METADATA)
            msg = (
                f"__metadata__ has the unknown key {shorten(key)!r}{suggestion}; /update/apply "
                f"reads only {', '.join(_STEP_METADATA)} (the batch's options went to "
                "/update/grad)"
            )
            problems.append(InputProblem(("__metadata__", key), msg))
    if problems:
        raise InvalidPayloadError(problems)
    if max_elements is not None:
        count = sum(math.prod(tensor.shape) for tensor in tensors)
        if count > max_elements:
            msg = f"the step has {count} elements; the limit is {max_elements} (RLHF_MAX_ELEMENTS)"
            raise TooManyElementsError(msg)
    views = _views(body, tensors, data_start)
    options = _options_from_binary(
        metadata, {name: views[name] for name in STATE_VECTORS if name in views}
    )
    return StepPayload(
        weights=views["weights"],
        grad=views["grad"],
        lr=float(views["lr"].reshape(())),
        grad_norm=float(views["grad_norm"].reshape(())),
        options=options,
    )


def _expected_step_tensor(name: str) -> str:
    if name in _STEP_SCALARS:
        return f"a scalar tensor (shape () or (1,)), dtype one of {_FLOAT_CODES}"
    return f"a tensor of shape (n,) (the block's columns), dtype one of {_FLOAT_CODES}"


def describe_layout() -> dict[str, Any]:
    """What a request file holds and what an answer holds, as the OpenAPI document shows it.

    Tensors by name with their shape and allowed dtypes; the `__metadata__` keys, whose
    values are strings.
    """
    floats = sorted(_FLOATS)
    tensors: dict[str, Any] = {
        name: {"shape": shape_text(name), "dtypes": floats, "required": True}
        for name in ARRAY_SHAPES
    }
    tensors |= {
        name: {"shape": "() or (1,)", "dtypes": floats, "required": True} for name in _SCALARS
    }
    tensors |= {
        name: {"shape": "(B,)", "dtypes": list(_INTEGERS), "required": False}
        for name in INTEGER_SAMPLE_OPTIONS
    }
    tensors |= {
        name: {"shape": "(B,)", "dtypes": floats, "required": False}
        for name in FLOAT_SAMPLE_OPTIONS
    }
    tensors |= {
        name: {"shape": "(N,)", "dtypes": floats, "required": False} for name in STATE_VECTORS
    }
    return {
        "request": {"tensors": tensors, "metadata": list(_METADATA_OPTIONS)},
        "response": {
            "tensors": {
                _ANSWER_TENSOR: {
                    "shape": shape_text(_ANSWER_TENSOR),
                    "dtypes": floats,
                    "dtype": "the dtype of the request's weights",
                }
            },
            "metadata": {
                _STATS_KEY: "the stats object of the JSON answer, as JSON text",
                _STEP_KEY: "with optimizer: the new step, a decimal string; the new state's "
                "vectors are F64 tensors named as in the request",
            },
        },
    }


def _options_from_binary(metadata: dict[str, str], tensors: dict[str, Any]) -> UpdateOptions:
    """The algorithm options: strings in `__metadata__`, and the per-sample tensors.

    The strings are validated by the model the JSON path uses, in lax mode, which reads
    "1.0" as a number and "true" as a boolean; a `reward_clip` pair is JSON text.
    """
    if not metadata and not tensors:  # the defaults, as the JSON path reads no options
        return DEFAULT_OPTIONS
    problems = []
    for key in metadata:
        if key not in _METADATA_OPTIONS:
            suggestion = did_you_mean(key, _METADATA_OPTIONS)
            msg = (
                f"__metadata__ has the unknown key {shorten(key)!r}{suggestion}; expected only "
                f"the options {', '.join(_METADATA_OPTIONS)}"
            )
            if key in _OPTION_TENSORS:
                kind = "an integer" if key in INTEGER_SAMPLE_OPTIONS else "a float"
                shape = "(N,)" if key in STATE_VECTORS else "(B,)"
                msg = f"__metadata__ has {key}; send it as {kind} tensor of shape {shape}"
            elif key in PER_TOKEN_FIELDS:
                msg = per_token_message(key, "is not an option here")
            problems.append(InputProblem(("__metadata__", key), msg))
    if problems:
        raise InvalidPayloadError(problems)
    values: dict[str, Any] = {key: value for key, value in metadata.items() if key != _STEP_KEY}
    state_tensors = {name: tensors.pop(name) for name in STATE_VECTORS if name in tensors}
    if _STEP_KEY in metadata or state_tensors:
        values[_STATE] = {"step": metadata.get(_STEP_KEY, "0")}
    for key in _JSON_TEXT_OPTIONS:
        if key in values:
            with contextlib.suppress(orjson.JSONDecodeError):
                values[key] = orjson.loads(values[key])
    try:
        model = UpdateOptionsModel.model_validate(values, strict=False)
    except ValidationError as exc:
        problems = [describe_validation_error(error) for error in exc.errors(include_url=False)]
        raise InvalidPayloadError([_in_metadata(problem) for problem in problems]) from None
    options = model.to_options()
    if options.optimizer_state is not None:
        step = options.optimizer_state.step
        tensors[_STATE] = OptimizerState(step=step, **state_tensors)
    return dataclasses.replace(options, **tensors) if tensors else options


def _in_metadata(problem: InputProblem) -> InputProblem:
    """A problem of a metadata string, located at its key (the step at its own key)."""
    if problem.loc[:2] == (_STATE, "step"):
        msg = problem.msg.replace(f"{_STATE}.step is", f"__metadata__ {_STEP_KEY} is")
        return InputProblem(("__metadata__", _STEP_KEY), msg)
    return InputProblem(("__metadata__", *problem.loc), problem.msg)


def _read_header(body: bytearray) -> tuple[list[_Tensor], dict[str, str], int]:
    """The tensors in offset order, the metadata, and where the data starts."""
    size = len(body)
    if size < _LENGTH_BYTES:
        msg = (
            f"malformed safetensors: the body has {size} bytes; a safetensors file starts "
            f"with an {_LENGTH_BYTES}-byte header length"
        )
        raise MalformedSafetensorsError(msg)
    header_length = int.from_bytes(body[:_LENGTH_BYTES], "little")
    if header_length > size - _LENGTH_BYTES:
        msg = (
            f"malformed safetensors: the header length {header_length} runs past the end "
            f"of the {size}-byte body"
        )
        raise MalformedSafetensorsError(msg)
    if header_length > MAX_HEADER_BYTES:
        msg = (
            f"safetensors header too large: {header_length} bytes; /update reads at most "
            f"{MAX_HEADER_BYTES} (a valid request's header is well under 2 KiB)"
        )
        raise MalformedSafetensorsError(msg)
    data_start = _LENGTH_BYTES + header_length
    parsed = _plain_header(body, data_start)
    if parsed is not None:
        return (*parsed, data_start)
    try:
        with (
            _sparse_copy(body[:data_start], size) as path,
            safe_open(path, framework="numpy") as file,
        ):
            metadata: dict[str, str] = file.metadata() or {}
            names = file.offset_keys()
            if len(names) + len(metadata) > MAX_HEADER_ENTRIES:
                msg = (
                    f"safetensors header too large: {len(names)} tensors and {len(metadata)} "
                    f"metadata keys; /update reads at most {MAX_HEADER_ENTRIES} in all (a valid "
                    f"request has at most {_VALID_ENTRIES})"
                )
                raise MalformedSafetensorsError(msg)
            tensors = [
                _Tensor(name, part.get_dtype(), tuple(part.get_shape()))
                for name in names
                for part in (file.get_slice(name),)
            ]
    except SafetensorError as exc:
        msg = f"malformed safetensors: {shorten(str(exc), 300)}"
        raise MalformedSafetensorsError(msg) from None
    return tensors, metadata, data_start


def _plain_header(body: bytearray, data_start: int) -> tuple[list[_Tensor], dict[str, str]] | None:
    """The tensors (in offset order) and metadata of a header read without `safe_open`.

    Only for the plainest headers, which every valid request has: a JSON object of tensors
    with exactly `dtype` (one this service reads), `shape` and `data_offsets`, none empty,
    laid end to end from the start of the data to its end, at most `MAX_HEADER_ENTRIES`
    entries, and string metadata. None for anything else, which `safe_open` then
    validates and words: `safe_open` takes the header through a file (a few tens of
    microseconds, more than a small update's decoding otherwise costs).
    """
    header = bytes(body[_LENGTH_BYTES:data_start])
    if not header.startswith(b"{"):
        return None
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or len(document) > MAX_HEADER_ENTRIES:
        return None
    metadata = document.pop("__metadata__", {})
    # A name twice in the text is one entry here, the last; safe_open is left to decide.
    if header.count(b'"data_offsets"') != len(document) or header.count(b'"__metadata__"') > (
        1 if metadata else 0
    ):
        return None
    if not (
        isinstance(metadata, dict)
        and all(isinstance(value, str) for value in metadata.values())
        and len(document) + len(metadata) <= MAX_HEADER_ENTRIES
    ):
        return None
    placed: list[tuple[int, int, _Tensor]] = []
    for name, info in document.items():
        tensor = _plain_tensor(name, info)
        if tensor is None:
            return None
        start, end = info["data_offsets"]  # end - start is the tensor's size in bytes
        placed.append((start, end, tensor))
    placed.sort(key=lambda item: item[0])
    offset = 0
    for start, end, _ in placed:
        if start != offset:
            return None
        offset = end
    if offset != len(body) - data_start:
        return None
    return [tensor for _, _, tensor in placed], metadata


def _plain_tensor(name: str, info: object) -> _Tensor | None:
    """A header entry of a dtype this service reads, with a shape and its own offsets."""
    if not isinstance(info, dict) or info.keys() != _ENTRY_KEYS:
        return None
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not (isinstance(dtype, str) and (dtype in _FLOATS or dtype in _INTEGERS)):
        return None
    if not (isinstance(shape, list) and all(map(_is_size, shape))):
        return None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_size, offsets))):
        return None
    tensor = _Tensor(name, dtype, tuple(shape))
    start, end = offsets
    size = _nbytes(tensor)
    return tensor if size and end - start == size else None


def _is_size(value: object) -> bool:
    return type(value) is int and value >= 0


def _nbytes(tensor: _Tensor) -> int:
    dtype = _FLOATS.get(tensor.dtype) or _INTEGERS[tensor.dtype]
    return math.prod(tensor.shape) * dtype.itemsize


@contextlib.contextmanager
def _sparse_copy(header: bytes | bytearray, size: int) -> Iterator[str]:
    """A path to a file of `size` bytes that holds `header` and, after it, a hole."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("safetensors-header", os.MFD_CLOEXEC)
        try:
            os.pwrite(fd, header, 0)
            os.ftruncate(fd, size)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
    else:  # platforms without memfd (macOS): a temporary file instead
        with tempfile.NamedTemporaryFile() as file:
            file.write(header)
            file.truncate(size)
            file.flush()
            yield file.name


def _name_problems(by_name: dict[str, _Tensor]) -> list[InputProblem]:
    missing = [
        InputProblem((name,), f"{name} is missing; expected {_expected_tensor(name)}")
        for name in _TENSORS
        if name not in by_name
    ]
    unknown = []
    for name in by_name:
        if name not in (*_TENSORS, *_OPTION_TENSORS):
            suggestion = did_you_mean(name, (*_TENSORS, *_OPTION_TENSORS))
            unknown.append(
                InputProblem(
                    (name,), f"unknown tensor {shorten(name)!r}{suggestion}; {_expected()}"
                )
            )
    return missing + unknown


def _dtype_problems(by_name: dict[str, _Tensor]) -> list[InputProblem]:
    problems = [
        InputProblem((name,), f"{name} has dtype {tensor.dtype}; expected one of {_FLOAT_CODES}")
        for name, tensor in by_name.items()
        if name in _TENSORS and tensor.dtype not in _FLOATS
    ]
    for name in INTEGER_SAMPLE_OPTIONS:
        tensor = by_name.get(name)
        if tensor is not None and tensor.dtype not in _INTEGERS:
            msg = f"{name} has dtype {tensor.dtype}; expected an integer dtype (I64, I32, ...)"
            problems.append(InputProblem((name,), msg))
    for name in (*FLOAT_SAMPLE_OPTIONS, *STATE_VECTORS):
        tensor = by_name.get(name)
        if tensor is not None and tensor.dtype not in _FLOATS:
            problems.append(
                InputProblem(
                    (name,), f"{name} has dtype {tensor.dtype}; expected one of {_FLOAT_CODES}"
                )
            )
    return problems


def _views(body: bytearray, tensors: list[_Tensor], data_start: int) -> dict[str, NDArray[Any]]:
    """Read-only views on `body`, one per tensor, laid end to end as validated."""
    views: dict[str, NDArray[Any]] = {}
    offset = data_start
    for tensor in tensors:
        dtype = _FLOATS.get(tensor.dtype) or _INTEGERS[tensor.dtype]
        count = math.prod(tensor.shape)
        view = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(tensor.shape)
        view.flags.writeable = False
        views[tensor.name] = view
        offset += count * dtype.itemsize
    if offset != len(body):
        # safetensors promises tensors that cover the data exactly; refuse anything else.
        msg = "malformed safetensors: the tensors do not cover the data section exactly"
        raise MalformedSafetensorsError(msg)
    return views


def _expected_tensor(name: str) -> str:
    if name in _SCALARS:
        return f"a scalar tensor (shape () or (1,)), dtype one of {_FLOAT_CODES}"
    return f"a tensor of shape {shape_text(name)}, dtype one of {_FLOAT_CODES}"


def _expected() -> str:
    return (
        f"expected only tensors {', '.join(_TENSORS)} and the optional {', '.join(_OPTION_TENSORS)}"
    )
