"""How the per-sample terms of the loss are added up: the weight ``c_i`` of each sample.

Pure Python and NumPy on (B,) vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .options import LossAgg
from .results import FloatArray

__all__ = ["Aggregation", "aggregation"]


@dataclass(frozen=True, slots=True)
class Aggregation:
    """``c_i = 1 / (per_sample_i * divisor)``; `per_sample` None stands for all ones."""

    per_sample: FloatArray | None
    divisor: float


def aggregation(
    mode: LossAgg, batch_size: int, lengths: FloatArray | None, constant: float | None
) -> Aggregation:
    """The aggregation weights of `loss_agg`.

    Parameters
    ----------
    mode : {"seq_mean", "sum", "seq_mean_token_mean", "token_mean", "constant"}
        The sum over samples of ``c_i * loss_i``, with ``loss_i`` the sum of the sample's
        per-token terms: ``"seq_mean"`` ``c_i = 1/B`` (verl's "seq-mean-token-sum");
        ``"sum"`` ``c_i = 1``; ``"seq_mean_token_mean"`` ``c_i = 1/(B L_i)``;
        ``"token_mean"`` ``c_i = 1/sum(L)``; ``"constant"`` ``c_i = 1/constant`` (Dr.
        GRPO's normaliser, verl's "seq-mean-token-sum-norm", TRL's ``loss_type="dr_grpo"``).
    batch_size : int
        B.
    lengths : ndarray, shape (B,), optional
        ``L_i``; the token aggregations need them.
    constant : float, optional
        The divisor of ``"constant"``.

    Returns
    -------
    Aggregation

    Examples
    --------
    >>> aggregation("constant", 4, None, 8.0)
    Aggregation(per_sample=None, divisor=8.0)
    """
    if mode == "seq_mean":
        return Aggregation(None, batch_size)
    if mode == "sum":
        return Aggregation(None, 1.0)
    if mode == "constant" and constant is not None:
        return Aggregation(None, float(constant))
    if mode in ("seq_mean_token_mean", "token_mean") and lengths is not None:
        if mode == "token_mean":
            return Aggregation(None, math.fsum(lengths.tolist()))
        return Aggregation(lengths, batch_size)
    msg = f"loss_agg {mode!r} is missing what it needs (sequence lengths or a constant)"
    raise ValueError(msg)
