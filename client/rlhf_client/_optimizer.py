"""A training loop's optimizer: the weights and the optimizer state kept between calls.

    opt = Optimizer(client, weights, lr=1e-3, beta=0.05, type="adamw")
    result = opt.step(batch)

`batch` holds the four per-sample arrays (`rewards`, `policy_log_probs`, `ref_log_probs`,
`log_prob_grads`) and any per-call option (`old_log_probs`, `group_ids`, ...). Each step
sends the current weights and state and keeps what the service answers, over whichever
transport the client uses (JSON or safetensors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rlhf_client._models import UpdateResult

if TYPE_CHECKING:
    from rlhf_client._client import Client

__all__ = ["Optimizer"]

_BATCH = ("rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


class Optimizer:
    """SGD, Adam or AdamW run by the service, its state held here between steps.

    Parameters
    ----------
    client : Client
        The client that sends each update.
    weights : array_like, shape (N,)
        The initial weights; `weights` holds the current ones.
    lr, beta : float
        The learning rate and the KL coefficient of every step (a batch may override beta).
    type : {"sgd", "adam", "adamw"}
        The rule; the other settings (`momentum`, `betas`, `weight_decay`, `eps`,
        `amsgrad`, `nesterov`, `dampening`) are keywords, as in torch.optim.
    state : mapping, optional
        A state to resume from (a previous `state`, or torch's ``state_dict()["state"][0]``).
    options : mapping, optional
        Algorithm options sent with every step (`max_grad_norm`, `policy_loss`, ...).
    """

    def __init__(
        self,
        client: Client,
        weights: ArrayLike,
        *,
        lr: float,
        beta: float,
        type: str = "adamw",
        state: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.client = client
        self.weights: NDArray[np.floating[Any]] = np.asarray(weights)
        self.lr = lr
        self.beta = beta
        self.settings: dict[str, Any] = {"type": type, **settings}
        self.state: Mapping[str, Any] | None = _plain(state) if state is not None else None
        self.options = dict(options or {})

    def step(self, batch: Mapping[str, Any]) -> UpdateResult:
        """One update from the current weights and state; both are replaced by the answer's."""
        missing = [name for name in _BATCH if name not in batch]
        if missing:
            msg = f"the batch has no {', '.join(missing)}; expected {', '.join(_BATCH)}"
            raise ValueError(msg)
        per_call = {k: v for k, v in batch.items() if k not in (*_BATCH, "beta")}
        result = self.client.update(
            self.weights,
            *(batch[name] for name in _BATCH),
            beta=batch.get("beta", self.beta),
            lr=self.lr,
            optimizer=self.settings,
            optimizer_state=self.state,
            **{**self.options, **per_call},
        )
        self.weights = result.weights
        self.state = result.optimizer_state
        return result

    def state_dict(self) -> dict[str, Any]:
        """The state as torch names it (``step`` and the vectors); empty before the first step."""
        return dict(self.state or {})


def _plain(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state given as torch's (tensors, a float step) as plain numbers and arrays."""
    plain: dict[str, Any] = {}
    for key, value in state.items():
        if key == "step":
            plain[key] = int(float(value))
        elif value is not None:
            plain[key] = np.asarray(value, dtype=np.float64)
    return plain
