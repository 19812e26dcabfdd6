"""An independent NumPy reference of the optimizer rules, written from their formulas.

Each rule is one loop over the steps, on plain float64 arrays, from the issue's formulas
(torch's ``_single_tensor_sgd`` / ``_single_tensor_adam``), not from the service's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def reference_steps(
    weights: Array, ascents: Sequence[Array], lr: float, optimizer: dict[str, Any]
) -> tuple[Array, dict[str, Any]]:
    """The weights and torch-named state after one step per ascent direction."""
    kind = optimizer.get("type", "sgd")
    decay = optimizer.get("weight_decay", 0.01 if kind == "adamw" else 0.0)
    w = np.array(weights, dtype=np.float64)
    state: dict[str, Any] = {"step": 0}
    for d in ascents:
        g = -np.asarray(d, dtype=np.float64)
        state["step"] += 1
        if kind == "sgd":
            mu = optimizer.get("momentum", 0.0)
            tau = optimizer.get("dampening", 0.0)
            g = g + decay * w
            if mu:
                buf = state.get("momentum_buffer")
                buf = g.copy() if buf is None else mu * buf + (1 - tau) * g
                state["momentum_buffer"] = buf
                g = g + mu * buf if optimizer.get("nesterov") else buf
            w = w - lr * g
            continue
        beta1, beta2 = optimizer.get("betas", (0.9, 0.999))
        eps = optimizer.get("eps", 1e-8)
        if kind == "adamw":
            w = w * (1 - lr * decay)
        else:
            g = g + decay * w
        m = state.get("exp_avg", np.zeros_like(w))
        v = state.get("exp_avg_sq", np.zeros_like(w))
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g**2
        state["exp_avg"], state["exp_avg_sq"] = m, v
        if optimizer.get("amsgrad"):
            v = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(w)), v)
            state["max_exp_avg_sq"] = v
        t = state["step"]
        w = w - (lr / (1 - beta1**t)) * m / (np.sqrt(v) / np.sqrt(1 - beta2**t) + eps)
    return w, state
