"""Optimizer steps with their state in and out: SGD (momentum, nesterov), Adam, AdamW, AMSGrad.

The update's ascent direction ``d`` (the policy gradient after norm clipping) is handed to
the rule as torch's gradient of a loss to minimise, ``g = -d``: the state therefore holds
the moments of ``-d``, exactly what `torch.optim` holds, and a client can move the state
between torch's ``optimizer.state_dict()["state"][0]`` and the service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from .overflow import finite_or_nan, first_non_finite
from .results import FloatArray, InputProblem, Loc

__all__ = [
    "ADAMW_WEIGHT_DECAY",
    "OPTIMIZER_TYPES",
    "STATE_VECTORS",
    "Optimizer",
    "OptimizerState",
    "OptimizerType",
    "StateVector",
    "optimizer_problems",
    "optimizer_step",
    "state_problems",
    "takes_plain_step",
]

OptimizerType = Literal["sgd", "adam", "adamw"]
StateVector = Literal["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"]
OPTIMIZER_TYPES: tuple[str, ...] = get_args(OptimizerType)
STATE_VECTORS: tuple[StateVector, ...] = get_args(StateVector)
# torch.optim.AdamW's default weight decay; SGD's and Adam's is 0.
ADAMW_WEIGHT_DECAY = 0.01


@dataclass(frozen=True, slots=True)
class Optimizer:
    """The settings of one optimizer, named as torch.optim names its arguments.

    `weight_decay` None means the type's default: 0.01 for "adamw", 0 otherwise.
    """

    type: OptimizerType = "sgd"
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False

    @property
    def decay(self) -> float:
        """`weight_decay`, or the type's default when it is not given."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return ADAMW_WEIGHT_DECAY if self.type == "adamw" else 0.0

    @property
    def vectors(self) -> tuple[StateVector, ...]:
        """The state vectors this optimizer keeps (torch's ``state_dict`` keys besides step)."""
        if self.type == "sgd":
            return ("momentum_buffer",) if float(self.momentum) != 0 else ()
        moments: tuple[StateVector, ...] = ("exp_avg", "exp_avg_sq")
        return (*moments, "max_exp_avg_sq") if self.amsgrad else moments


@dataclass(frozen=True, slots=True)
class OptimizerState:
    """The state carried between calls: the step count and the vectors, each (N,) or None."""

    step: int = 0
    exp_avg: ArrayLike | None = None
    exp_avg_sq: ArrayLike | None = None
    max_exp_avg_sq: ArrayLike | None = None
    momentum_buffer: ArrayLike | None = None

    def vectors(self) -> dict[StateVector, ArrayLike]:
        """The vectors that are not None, by name."""
        return {name: value for name in STATE_VECTORS if (value := getattr(self, name)) is not None}


def takes_plain_step(optimizer: Optimizer | None) -> bool:
    """True when the step is today's ``w + lr * d``: no optimizer, or SGD without state.

    SGD with momentum 0 and weight decay 0 is that rule (``w - lr * (-d)`` is the same
    float64 number), so it takes the plain code path, bit for bit.
    """
    return optimizer is None or (
        optimizer.type == "sgd" and float(optimizer.momentum) == 0 and optimizer.decay == 0
    )


def optimizer_problems(optimizer: Optimizer) -> list[tuple[Loc, str]]:
    """(location, message) for every setting outside torch.optim's domain."""
    problems: list[tuple[Loc, str]] = []
    if optimizer.type not in OPTIMIZER_TYPES:
        allowed = ", ".join(repr(name) for name in OPTIMIZER_TYPES)
        problems.append(
            (
                ("optimizer", "type"),
                f"optimizer.type is {optimizer.type!r}; expected one of {allowed}",
            )
        )
    for name in ("momentum", "dampening", "weight_decay", "eps"):
        value = getattr(optimizer, name)
        if value is not None and not finite_or_nan(value) >= 0:
            msg = f"optimizer.{name} is {value!r}; expected a finite number >= 0"
            problems.append((("optimizer", name), msg))
    betas = optimizer.betas
    if not (
        isinstance(betas, Sequence | np.ndarray)
        and len(betas) == 2
        and all(0 <= finite_or_nan(beta) < 1 for beta in betas)
    ):
        msg = f"optimizer.betas is {betas!r}; expected two numbers in [0, 1)"
        problems.append((("optimizer", "betas"), msg))
    for name in ("nesterov", "amsgrad"):
        if not isinstance(getattr(optimizer, name), bool | np.bool_):
            msg = f"optimizer.{name} is {getattr(optimizer, name)!r}; expected true or false"
            problems.append((("optimizer", name), msg))
    if (
        not problems
        and optimizer.nesterov
        and not (float(optimizer.momentum) > 0 and float(optimizer.dampening) == 0)
    ):
        # torch.optim.SGD's own words.
        msg = "Nesterov momentum requires a momentum and zero dampening"
        problems.append((("optimizer", "nesterov"), msg))
    if not problems and optimizer.type != "sgd":
        for name in ("momentum", "dampening"):
            if float(getattr(optimizer, name)) != 0:
                msg = f"optimizer.{name} applies to type 'sgd' only; leave it out"
                problems.append((("optimizer", name), msg))
        if optimizer.nesterov:
            msg = "optimizer.nesterov applies to type 'sgd' only; leave it out"
            problems.append((("optimizer", "nesterov"), msg))
    if not problems and optimizer.type == "sgd" and optimizer.amsgrad:
        msg = "optimizer.amsgrad applies to types 'adam' and 'adamw' only; leave it out"
        problems.append((("optimizer", "amsgrad"), msg))
    return problems


def state_problems(
    state: OptimizerState, optimizer: Optimizer | None, n: int, offset: int = 0
) -> tuple[dict[StateVector, FloatArray], list[InputProblem]]:
    """The state's vectors as float64 arrays of length `n`, or every problem with them.

    `offset` is the index in the whole vector of the first entry (a block's), for messages.
    """
    problems: list[InputProblem] = []
    step = state.step
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        msg = f"optimizer_state.step is {step!r}; expected an integer >= 0"
        problems.append(InputProblem(("optimizer_state", "step"), msg))
    if optimizer is None:
        msg = "optimizer_state is sent but optimizer is not; send the optimizer it belongs to"
        return {}, [*problems, InputProblem(("optimizer_state",), msg)]
    own = optimizer.vectors
    arrays: dict[StateVector, FloatArray] = {}
    for name, value in state.vectors().items():
        loc: Loc = ("optimizer_state", name)
        if name not in own:
            kept = ", ".join(own) if own else "no vectors"
            msg = (
                f"optimizer_state.{name} does not belong to {_described(optimizer)}, "
                f"which keeps {kept}; leave it out"
            )
            problems.append(InputProblem(loc, msg))
            continue
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            array = np.empty((0, 0))
        if array.shape != (n,):
            shape = f"shape {array.shape}" if array.ndim != 1 else f"{array.shape[0]} entries"
            msg = f"optimizer_state.{name} has {shape}; expected {n} numbers (= len(weights))"
            problems.append(InputProblem(loc, msg))
            continue
        index = first_non_finite(array)
        if index is not None:
            i = offset + index[0]
            msg = f"optimizer_state.{name}[{i}] is {array[index]}; expected a finite number"
            problems.append(InputProblem((*loc, i), msg))
            continue
        arrays[name] = array
    if not problems and int(step) > 0:
        for name in own:
            if name not in arrays:
                msg = (
                    f"optimizer_state.step is {step} but optimizer_state.{name} is missing; "
                    f"{_described(optimizer)} needs it after its first step"
                )
                problems.append(InputProblem(("optimizer_state", name), msg))
    return arrays, problems


def optimizer_step(
    weights: FloatArray,
    ascent: FloatArray,
    lr: float,
    optimizer: Optimizer,
    step: int,
    vectors: Mapping[StateVector, FloatArray],
) -> tuple[FloatArray, OptimizerState]:
    """One step of `optimizer` along the ascent direction `ascent`, from a checked state.

    Parameters
    ----------
    weights : ndarray of float64, shape (N,)
        The current weights; left untouched.
    ascent : ndarray of float64, shape (N,)
        The direction ``d`` to climb (the policy gradient after clipping).
    lr : float
        The learning rate, >= 0.
    optimizer : Optimizer
        Its settings, checked by `optimizer_problems`.
    step : int
        The number of steps taken before this one.
    vectors : mapping of str to ndarray
        The state vectors sent, checked by `state_problems` (None or absent: a fresh one).

    Returns
    -------
    new_weights : ndarray of float64, shape (N,)
    state : OptimizerState
        ``step + 1`` and the new vectors, new arrays.

    Notes
    -----
    With ``g = -d`` and ``lambda = weight_decay``, as torch 2.13's
    ``torch/optim/sgd.py::_single_tensor_sgd`` (momentum ``mu``, dampening ``tau``)::

        g   <- g + lambda * w
        buf <- g                              (first step: no buffer sent)
        buf <- mu * buf + (1 - tau) * g       (otherwise)
        g   <- g + mu * buf  (nesterov)   or  g <- buf
        w   <- w - lr * g

    and as ``torch/optim/adam.py::_single_tensor_adam`` (Adam, and AdamW with
    ``decoupled_weight_decay``), ``t <- t + 1``::

        w <- w * (1 - lr * lambda)            (AdamW)  or  g <- g + lambda * w  (Adam)
        m <- lerp(m, g, 1 - beta1)            (= m + (1 - beta1) * (g - m))
        v <- beta2 * v + (1 - beta2) * g * g
        vmax <- max(vmax, v)                  (amsgrad; v below reads vmax)
        w <- w - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    A fresh state starts from zeros, as torch's ``torch.zeros_like``.
    """
    g = -ascent
    decay = optimizer.decay
    t = int(step) + 1
    if optimizer.type == "sgd":
        return _sgd(weights, g, lr, optimizer, decay, vectors.get("momentum_buffer"), t)
    w = weights
    if decay != 0:
        if optimizer.type == "adamw":
            w = w * (1 - lr * decay)
        else:
            g = g + decay * w
    beta1, beta2 = (float(beta) for beta in optimizer.betas)
    zeros = np.zeros_like(w)
    m = _lerp(vectors.get("exp_avg", zeros), g, 1 - beta1)
    v = vectors.get("exp_avg_sq", zeros) * beta2 + (1 - beta2) * g * g
    bias_correction1 = 1 - beta1**t
    # torch writes ``bias_correction2**0.5``: pow, not sqrt, kept for the last bit.
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    step_size = lr / bias_correction1
    state = OptimizerState(step=t, exp_avg=m, exp_avg_sq=v)
    second = v
    if optimizer.amsgrad:
        second = np.maximum(vectors.get("max_exp_avg_sq", zeros), v)
        state = OptimizerState(step=t, exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=second)
    denom = np.sqrt(second) / bias_correction2_sqrt + float(optimizer.eps)
    return w + -step_size * (m / denom), state


def _sgd(
    weights: FloatArray,
    g: FloatArray,
    lr: float,
    optimizer: Optimizer,
    decay: float,
    buffer: FloatArray | None,
    t: int,
) -> tuple[FloatArray, OptimizerState]:
    if decay != 0:
        g = g + decay * weights
    momentum = float(optimizer.momentum)
    if momentum == 0:
        return weights + -lr * g, OptimizerState(step=t)
    buf = g.copy() if buffer is None else buffer * momentum + (1 - float(optimizer.dampening)) * g
    g = g + momentum * buf if optimizer.nesterov else buf
    return weights + -lr * g, OptimizerState(step=t, momentum_buffer=buf)


def _lerp(start: FloatArray, end: FloatArray, weight: float) -> FloatArray:
    """torch.lerp on CPU: from the nearer end, so that weight 1 gives `end` exactly."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _described(optimizer: Optimizer) -> str:
    if optimizer.type == "sgd":
        return f"optimizer 'sgd' with momentum {optimizer.momentum}"
    return f"optimizer {optimizer.type!r}" + (" with amsgrad" if optimizer.amsgrad else "")
