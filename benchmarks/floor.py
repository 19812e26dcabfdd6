"""The floor: the same update with no validation at all, on a bare Starlette route.

JSON: `orjson.loads` -> `np.asarray` -> one matrix-vector product -> `orjson.dumps` with
OPT_SERIALIZE_NUMPY. Safetensors: `safetensors.numpy.load` -> the same product -> `save`.
Whatever a validating service costs on top of this is the price of its checks.
"""

from __future__ import annotations

import numpy as np
import orjson
from safetensors.numpy import load, save
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SAFETENSORS = "application/x-safetensors"


def _step(t: dict[str, np.ndarray]) -> np.ndarray:
    adjusted = t["rewards"] - float(t["beta"]) * (t["policy_log_probs"] - t["ref_log_probs"])
    new_weights: np.ndarray = (
        t["weights"] + float(t["lr"]) * (adjusted @ t["log_prob_grads"]) / adjusted.size
    )
    return new_weights


async def update(request: Request) -> Response:
    body = await request.body()
    if request.headers.get("content-type") == SAFETENSORS:
        new_weights = _step(load(body))
        return Response(save({"weights": new_weights}), media_type=SAFETENSORS)
    fields = orjson.loads(body)
    new_weights = _step({name: np.asarray(value) for name, value in fields.items()})
    answer = orjson.dumps({"weights": new_weights}, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(answer, media_type="application/json")


app = Starlette(routes=[Route("/update", update, methods=["POST"])])
