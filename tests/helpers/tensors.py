"""Safetensors request bodies: the reference example as tensors, and the headers to send."""

from __future__ import annotations

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
