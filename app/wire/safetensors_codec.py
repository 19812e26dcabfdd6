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

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ..core import ARRAY_SHAPES, InputProblem, UpdateOptions, UpdateResult, shape_text
from ..errors import InvalidPayloadError, MalformedSafetensorsError
from .messages import describe_validation_error, did_you_mean, shorten
from .payload import UpdatePayload
from .schemas import UpdateOptionsModel
from .stats import stats_as_dict

__all__ = ["decode_request", "encode_response"]

_SCALARS = ("beta", "lr")
_GROUP_IDS = "group_ids"
_TENSORS = (*ARRAY_SHAPES, *_SCALARS)
# Every option but group_ids travels as a string in __metadata__.
_METADATA_OPTIONS = tuple(name for name in UpdateOptionsModel.model_fields if name != _GROUP_IDS)
# Little-endian, as the format stores them; the integer ones are for group_ids.
_FLOATS: dict[str, np.dtype[Any]] = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4")}
_INTEGERS: dict[str, np.dtype[Any]] = {
    code: np.dtype(f"<{kind}{size}")
    for kind, prefix in (("i", "I"), ("u", "U"))
    for size in (1, 2, 4, 8)
    for code in (f"{prefix}{8 * size}",)
}
# A valid request's header names only the tensors and options of the contract, in well
# under 2 KiB. A header beyond these bounds, which no valid request comes near, is refused
# before any of it is copied (its size) or walked (its entries: tensors and metadata
# keys), so that no header costs more than a fraction of a millisecond to read, on the
# event loop.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_ENTRIES = 64
_VALID_ENTRIES = len((*_TENSORS, _GROUP_IDS, *_METADATA_OPTIONS))
_LENGTH_BYTES = 8


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]


def decode_request(body: bytearray) -> UpdatePayload:
    """Validate a safetensors request body; the arrays are read-only views on `body`."""
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
    views = _views(body, tensors, data_start)
    options = _options_from_binary(metadata, views.get(_GROUP_IDS))
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
    """One tensor `weights` in the dtype of the result; the stats as JSON in the metadata."""
    stats = orjson.dumps(stats_as_dict(result)).decode()
    return save({"weights": result.weights}, metadata={"stats": stats})


def _options_from_binary(metadata: dict[str, str], group_ids: NDArray[Any] | None) -> UpdateOptions:
    """The algorithm options: strings in `__metadata__`, and the `group_ids` tensor.

    The strings are validated by the model the JSON path uses, in lax mode, which reads
    "1.0" as a number and "true" as a boolean.
    """
    problems = []
    for key in metadata:
        if key not in _METADATA_OPTIONS:
            suggestion = did_you_mean(key, _METADATA_OPTIONS)
            msg = (
                f"__metadata__ has the unknown key {shorten(key)!r}{suggestion}; expected only "
                f"the options {', '.join(_METADATA_OPTIONS)}"
            )
            if key == _GROUP_IDS:
                msg = "__metadata__ has group_ids; send it as an integer tensor of shape (B,)"
            problems.append(InputProblem(("__metadata__", key), msg))
    if problems:
        raise InvalidPayloadError(problems)
    try:
        model = UpdateOptionsModel.model_validate(metadata, strict=False)
    except ValidationError as exc:
        problems = [describe_validation_error(error) for error in exc.errors(include_url=False)]
        raise InvalidPayloadError(
            [InputProblem(("__metadata__", *p.loc), p.msg) for p in problems]
        ) from None
    options = model.to_options()
    return options if group_ids is None else dataclasses.replace(options, group_ids=group_ids)


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
        if name not in (*_TENSORS, _GROUP_IDS):
            suggestion = did_you_mean(name, _TENSORS)
            unknown.append(
                InputProblem(
                    (name,), f"unknown tensor {shorten(name)!r}{suggestion}; {_expected()}"
                )
            )
    return missing + unknown


def _dtype_problems(by_name: dict[str, _Tensor]) -> list[InputProblem]:
    problems = [
        InputProblem((name,), f"{name} has dtype {tensor.dtype}; expected F32 or F64")
        for name, tensor in by_name.items()
        if name in _TENSORS and tensor.dtype not in _FLOATS
    ]
    group_ids = by_name.get(_GROUP_IDS)
    if group_ids is not None and group_ids.dtype not in _INTEGERS:
        msg = f"group_ids has dtype {group_ids.dtype}; expected an integer dtype (I64, I32, ...)"
        problems.append(InputProblem((_GROUP_IDS,), msg))
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
        return "a scalar tensor (shape () or (1,)), dtype F32 or F64"
    return f"a tensor of shape {shape_text(name)}, dtype F32 or F64"


def _expected() -> str:
    return f"expected only tensors {', '.join(_TENSORS)}"
