"""The baseline: a straightforward FastAPI implementation of the /update contract.

Pydantic `list[float]` fields parsed by FastAPI's default body handling, the gradient as
`np.mean(adjusted[:, None] * grads, 0)`, and FastAPI's default JSON response. JSON only.
"""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, Field


class UpdateRequest(BaseModel):
    weights: list[float]
    rewards: list[float]
    policy_log_probs: list[float]
    ref_log_probs: list[float]
    log_prob_grads: list[list[float]]
    beta: float = Field(ge=0)
    lr: float = Field(ge=0)


app = FastAPI()


@app.post("/update")
def update(request: UpdateRequest) -> dict[str, object]:
    weights = np.asarray(request.weights)
    rewards = np.asarray(request.rewards)
    kl = np.asarray(request.policy_log_probs) - np.asarray(request.ref_log_probs)
    adjusted = rewards - request.beta * kl
    grad = np.mean(adjusted[:, None] * np.asarray(request.log_prob_grads), 0)
    step = request.lr * grad
    return {
        "weights": (weights + step).tolist(),
        "stats": {
            "kl_mean": float(kl.mean()),
            "reward_mean": float(rewards.mean()),
            "adjusted_reward_mean": float(adjusted.mean()),
            "grad_norm": float(np.linalg.norm(grad)),
            "update_norm": float(np.linalg.norm(step)),
        },
    }
