"""Safetensors bodies for schemathesis, which cannot derive a binary format from a schema.

Importing this module registers them: tests/api/test_schema_conformance.py does, and
`schemathesis run` against a live server does through
`SCHEMATHESIS_HOOKS=tests.helpers.fuzz_media` (see the README). The bodies are well-formed
files, valid or not for /update (a tensor missing, shapes that disagree, an integer dtype);
malformed files have their own tests in tests/api/test_update_safetensors.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import schemathesis
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray
from safetensors.numpy import save

__all__ = ["safetensors_bodies"]

_SIZES = st.integers(1, 4)
_DTYPES: st.SearchStrategy[np.dtype[Any]] = st.sampled_from([np.dtype("<f8"), np.dtype("<f4")])


@st.composite
def safetensors_bodies(draw: st.DrawFn) -> bytes:
    """A safetensors file with the tensors of an update, sometimes one of them wrong."""
    b, n = draw(_SIZES), draw(_SIZES)
    shapes: dict[str, tuple[int, ...]] = {
        "weights": (n,),
        "rewards": (b,),
        "policy_log_probs": (b,),
        "ref_log_probs": (b,),
        "log_prob_grads": (b, n),
        "beta": (),
        "lr": (),
    }
    dtype = draw(_DTYPES)
    values = st.floats(-100, 100, width=32)
    tensors: dict[str, NDArray[Any]] = {
        name: draw(arrays(dtype, shape, elements=values)) for name, shape in shapes.items()
    }
    # 0-d arrays: NumPy turns arithmetic on them into scalars, which safetensors cannot save.
    tensors["beta"] = np.asarray(np.abs(tensors["beta"]))
    tensors["lr"] = np.asarray(np.abs(tensors["lr"]) / 100)
    match draw(st.sampled_from(["valid", "missing", "reshaped", "integer"])):
        case "missing":
            del tensors[draw(st.sampled_from(sorted(tensors)))]
        case "reshaped":
            name = draw(st.sampled_from(sorted(tensors)))
            tensors[name] = np.zeros(draw(st.lists(_SIZES, max_size=3)), dtype)
        case "integer":
            name = draw(st.sampled_from(sorted(tensors)))
            tensors[name] = np.asarray(tensors[name].astype(np.int64))
    return save(tensors)


schemathesis.openapi.media_type("application/x-safetensors", safetensors_bodies())
