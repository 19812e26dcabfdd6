"""Request bodies for the proofs, with the weights a correct service answers."""

from __future__ import annotations

import numpy as np
import orjson

from app.core import rlhf_weight_update

__all__ = ["random_update"]


def random_update(
    seed: int, b: int, n: int, *, beta: float, lr: float
) -> tuple[bytes, list[float]]:
    """A JSON body of random (B, N) arrays, and the new weights the update must return."""
    rng = np.random.default_rng(seed)
    arrays = {
        "weights": rng.standard_normal(n),
        "rewards": rng.standard_normal(b),
        "policy_log_probs": rng.standard_normal(b),
        "ref_log_probs": rng.standard_normal(b),
        "log_prob_grads": rng.standard_normal((b, n)),
    }
    expected = rlhf_weight_update(**arrays, beta=beta, lr=lr).tolist()
    body = orjson.dumps({**arrays, "beta": beta, "lr": lr}, option=orjson.OPT_SERIALIZE_NUMPY)
    return body, expected
