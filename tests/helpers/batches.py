"""Random batches as plain lists, the way a JSON body carries them, and groups of samples."""

from __future__ import annotations

from typing import Any

import numpy as np

# Four groups of three samples: every baseline, "rloo" included, has what it needs.
GROUPS_OF_3 = [7, 7, 7, -2, -2, -2, 0, 0, 0, 5, 5, 5]


def random_batch(seed: int, b: int = 12, n: int = 5) -> dict[str, Any]:
    """The fields of an update of B samples and N weights, with beta 0.3 and lr 0.1."""
    rng = np.random.default_rng(seed)
    return {
        "weights": rng.standard_normal(n).tolist(),
        "rewards": rng.standard_normal(b).tolist(),
        "policy_log_probs": (rng.standard_normal(b) - 3).tolist(),
        "ref_log_probs": (rng.standard_normal(b) - 3).tolist(),
        "log_prob_grads": rng.standard_normal((b, n)).tolist(),
        "beta": 0.3,
        "lr": 0.1,
    }
