"""Batch files for the CLI: the five arrays (and beta, lr, options) in, the weights out.

Formats by suffix: `.npz`, `.safetensors`, `.json`, and `-` for JSON on stdin or stdout. An
input holds the arrays under their /update names; `beta` and `lr` as 0-d entries; any other
entry is an algorithm option (`group_ids` and `sequence_lengths` as integer arrays,
`old_log_probs` and `behavior_log_probs` as float arrays; in a safetensors file the others
as `__metadata__` strings, a `reward_clip` pair as JSON text such as `[-1, 2]`, exactly as
the service's binary request carries them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rlhf_client._wire import ARRAY_NAMES, STATE_VECTORS, read_safetensors_metadata

__all__ = [
    "ARRAY_NAMES",
    "SAMPLE_BATCH",
    "Batch",
    "BatchFileError",
    "check_format",
    "parse_option_value",
    "read_batch",
    "read_state",
    "write_batch",
    "write_state",
    "write_weights",
]

SUFFIXES = (".npz", ".safetensors", ".json")


class BatchFileError(ValueError):
    """A batch file that cannot be read or written as asked."""


@dataclass
class Batch:
    """What an input file holds."""

    arrays: dict[str, NDArray[Any]]
    beta: float | None = None
    lr: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


# What `rlhf-update example` writes: B = 4 samples of N = 3 weights, two prompts of two
# samples each (for baseline=mean), small enough to read, with beta and lr.
SAMPLE_BATCH: dict[str, Any] = {
    "weights": [0.5, -0.25, 1.0],
    "rewards": [1.0, 0.0, 0.5, 2.0],
    "policy_log_probs": [-1.25, -0.75, -2.0, -0.5],
    "ref_log_probs": [-1.0, -1.0, -2.0, -0.75],
    "log_prob_grads": [
        [0.5, -0.25, 0.0],
        [-0.5, 0.25, 0.125],
        [0.25, 0.5, -0.5],
        [0.0, -0.5, 0.75],
    ],
    "group_ids": [0, 0, 1, 1],
    "beta": 0.1,
    "lr": 0.01,
}


def check_format(path: str) -> None:
    """Raise `BatchFileError` unless `path` is `-` or has a suffix this module reads and writes."""
    if path != "-":
        _suffix(path)


def write_batch(path: str, batch: dict[str, Any]) -> None:
    """Write the entries of `batch` (arrays, beta, lr, options) as `read_batch` reads them."""
    if path == "-":
        sys.stdout.write(json.dumps(batch) + "\n")
        return
    suffix = _suffix(path)
    try:
        if suffix == ".json":
            Path(path).write_text(json.dumps(batch) + "\n")
        elif suffix == ".npz":
            with Path(path).open("wb") as file:  # np.savez would append ".npz" to other names
                arrays: dict[str, Any] = {name: np.asarray(v) for name, v in batch.items()}
                np.savez(file, **arrays)
        else:
            from safetensors.numpy import save_file

            tensors = {
                name: np.asarray(value)
                for name, value in batch.items()
                if name in (*ARRAY_NAMES, "beta", "lr", "group_ids")
            }
            metadata = {
                name: json.dumps(value) for name, value in batch.items() if name not in tensors
            }
            save_file(tensors, path, metadata=metadata or None)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise BatchFileError(msg) from None


def parse_option_value(text: str) -> Any:
    """A JSON value (`1.0`, `true`, `[0, 0, 1]`), else the text itself (`mean`)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_batch(path: str) -> Batch:
    """Read a batch from `path` (`-` is JSON on stdin)."""
    if path == "-":
        return _from_mapping(_parse_json(sys.stdin.buffer.read(), "stdin"), "stdin")
    suffix = _suffix(path)
    try:
        if suffix == ".json":
            return _from_mapping(_parse_json(Path(path).read_bytes(), path), path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return _from_mapping({name: npz[name] for name in npz.files}, path)
        from safetensors import SafetensorError
        from safetensors.numpy import load

        data = Path(path).read_bytes()
        try:
            entries: dict[str, Any] = dict(load(data))
        except SafetensorError as exc:
            msg = f"{path}: not a safetensors file ({exc})"
            raise BatchFileError(msg) from None
        metadata = read_safetensors_metadata(data)
        entries.update({k: parse_option_value(v) for k, v in metadata.items()})
        return _from_mapping(entries, path)
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise BatchFileError(msg) from None
    except ValueError as exc:  # np.load of a corrupt archive
        msg = f"{path}: {exc}"
        raise BatchFileError(msg) from None


def write_weights(path: str, weights: NDArray[Any]) -> None:
    """Write `{"weights": ...}` to `path` (`-` is JSON on stdout)."""
    if path == "-":
        sys.stdout.write(json.dumps({"weights": weights.tolist()}) + "\n")
        return
    suffix = _suffix(path)
    try:
        if suffix == ".json":
            Path(path).write_text(json.dumps({"weights": weights.tolist()}) + "\n")
        elif suffix == ".npz":
            with Path(path).open("wb") as file:  # np.savez would append ".npz" to other names
                np.savez(file, weights=weights)
        else:
            from safetensors.numpy import save_file

            save_file({"weights": np.ascontiguousarray(weights)}, path)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise BatchFileError(msg) from None


# The optimizer state's step in a safetensors file, as the service's answer carries it.
_STEP_KEY = "optimizer_state.step"


def write_state(path: str, state: Mapping[str, Any]) -> None:
    """Write an optimizer state (`step` and its vectors) as `read_state` reads it.

    JSON: ``{"step": 3, "exp_avg": [...], ...}``; .npz: the vectors and a 0-d `step`;
    .safetensors: the vectors as tensors, the step as ``__metadata__["optimizer_state.step"]``.
    """
    step = int(state.get("step", 0))
    vectors = {k: np.asarray(v, dtype=np.float64) for k, v in state.items() if k != "step"}
    try:
        if path == "-" or _suffix(path) == ".json":
            text = json.dumps({"step": step, **{k: v.tolist() for k, v in vectors.items()}})
            if path == "-":
                sys.stdout.write(text + "\n")
            else:
                Path(path).write_text(text + "\n")
        elif _suffix(path) == ".npz":
            with Path(path).open("wb") as file:
                entries: dict[str, Any] = {"step": np.int64(step), **vectors}
                np.savez(file, **entries)
        else:
            from safetensors.numpy import save_file

            save_file(vectors, path, metadata={_STEP_KEY: str(step)})
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise BatchFileError(msg) from None


def read_state(path: str) -> dict[str, Any]:
    """Read an optimizer state written by `write_state` (or by hand, in any of its formats)."""
    suffix = _suffix(path)
    try:
        if suffix == ".json":
            entries: dict[str, Any] = _parse_json(Path(path).read_bytes(), path)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                entries = {name: npz[name] for name in npz.files}
        else:
            from safetensors import SafetensorError
            from safetensors.numpy import load

            data = Path(path).read_bytes()
            try:
                entries = dict(load(data))
            except SafetensorError as exc:
                msg = f"{path}: not a safetensors file ({exc})"
                raise BatchFileError(msg) from None
            metadata = read_safetensors_metadata(data)
            if _STEP_KEY in metadata:
                entries["step"] = parse_option_value(metadata[_STEP_KEY])
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise BatchFileError(msg) from None
    except ValueError as exc:
        msg = f"{path}: {exc}"
        raise BatchFileError(msg) from None
    unknown = [name for name in entries if name not in ("step", *STATE_VECTORS)]
    if unknown:
        msg = (
            f"{path} has {', '.join(unknown)}; an optimizer state holds step and "
            f"{', '.join(STATE_VECTORS)}"
        )
        raise BatchFileError(msg)
    step = np.asarray(entries.get("step", 0))
    if step.size != 1 or step.dtype.kind not in "iu":
        msg = f"{path}: step must be one integer, got {step.dtype} of shape {step.shape}"
        raise BatchFileError(msg)
    return {**entries, "step": int(step.reshape(()))}


def _suffix(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        expected = "expected .npz, .safetensors, .json or -"
        msg = f"{path}: unknown format {suffix or '(no suffix)'}; {expected}"
        raise BatchFileError(msg)
    if suffix == ".safetensors":
        try:
            import safetensors  # noqa: F401
        except ImportError:
            msg = (
                f"{path}: .safetensors files need safetensors: "
                "pip install 'rlhf-update-client[binary]'"
            )
            raise BatchFileError(msg) from None
    return suffix


def _parse_json(data: bytes, source: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError as exc:
        msg = f"{source}: not valid JSON ({exc})"
        raise BatchFileError(msg) from None
    if not isinstance(body, dict):
        msg = f"{source}: expected a JSON object with the fields of an /update request"
        raise BatchFileError(msg)
    return body


def _from_mapping(entries: dict[str, Any], source: str) -> Batch:
    missing = [name for name in ARRAY_NAMES if name not in entries]
    if missing:
        msg = f"{source} has no {', '.join(missing)}; expected the arrays {', '.join(ARRAY_NAMES)}"
        raise BatchFileError(msg)
    batch = Batch({name: np.asarray(entries.pop(name)) for name in ARRAY_NAMES})
    batch.beta = _scalar(entries.pop("beta", None), "beta", source)
    batch.lr = _scalar(entries.pop("lr", None), "lr", source)
    for name, value in entries.items():
        if isinstance(value, np.ndarray):
            value = value.item() if value.ndim == 0 else value
        batch.options[name] = value
    return batch


def _scalar(value: Any, name: str, source: str) -> float | None:
    if value is None:
        return None
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iuf":
        msg = f"{source}: {name} must be one number, got {array.dtype} of shape {array.shape}"
        raise BatchFileError(msg)
    return float(array.reshape(()))
