"""Safetensors request bodies: the reference example as tensors, and the headers to send."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

SAFETENSORS = "application/x-safetensors"
BINARY = {"content-type": SAFETENSORS}
BINARY_BOTH_WAYS = {"content-type": SAFETENSORS, "accept": SAFETENSORS}


def example_tensors(dtype: type[np.floating[Any]] = np.float64) -> dict[str, NDArray[Any]]:
    """The reference example of the README as tensors."""
    return {
        "weights": np.array([1.0, 1.0], dtype),
        "rewards": np.array([1.0, 1.0], dtype),
        "policy_log_probs": np.array([-1.5, -1.5], dtype),
        "ref_log_probs": np.array([-1.5, -1.5], dtype),
        "log_prob_grads": np.array([[0.5, -0.5], [0.5, -0.5]], dtype),
        "beta": np.array(1.0, dtype),
        "lr": np.array(0.1, dtype),
    }


# The options that a binary request carries as tensors, one value per sample.
INTEGER_TENSORS = ("group_ids", "sequence_lengths")
FLOAT_TENSORS = ("old_log_probs", "behavior_log_probs")
SCALARS = ("beta", "lr")


def as_safetensors(fields: dict[str, Any]) -> tuple[dict[str, NDArray[Any]], dict[str, str]]:
    """The tensors and metadata of a binary request with the fields of a JSON body.

    Arrays become F64 tensors (integer options I64, unless they hold non-integers);
    every other option a metadata string: itself if a string, else its JSON text.
    """
    tensors: dict[str, NDArray[Any]] = {}
    metadata: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name in SCALARS:
            tensors[name] = np.asarray(value, dtype=np.float64)
        elif name in INTEGER_TENSORS and all(isinstance(v, int) for v in value):
            tensors[name] = np.asarray(value, dtype=np.int64)
        elif isinstance(value, list) and (name not in ("reward_clip",)):
            tensors[name] = np.asarray(value, dtype=np.float64)
        else:
            metadata[name] = value if isinstance(value, str) else json.dumps(value)
    return tensors, metadata
