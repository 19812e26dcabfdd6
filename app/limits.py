"""The size limit on an update's arrays, shared by every wire format.

RLHF_MAX_BODY_SIZE is the first line of defence: a larger body is refused before it is
read. `check_element_count` is the second, on the shape: /update calls it once the body is
decoded and before any computing. The binary decoder only validates the header and lays
views on the body, so nothing of the update's size has been allocated by then (not even
the float64 copy of float32 gradients); JSON's B and N are only known once it is parsed.
"""

from __future__ import annotations

from app.errors import TooManyElementsError

__all__ = ["check_element_count", "element_count"]


def element_count(batch_size: int, params: int) -> int:
    """B*N + B + N: the grads, and the weights and per-sample vectors around them.

    >>> element_count(2, 3)
    11
    """
    return batch_size * params + batch_size + params


def check_element_count(batch_size: int, params: int, max_elements: int) -> None:
    """Raise `TooManyElementsError` (413) when B*N + B + N exceeds `max_elements`."""
    count = element_count(batch_size, params)
    if count > max_elements:
        msg = (
            f"the update has B*N + B + N = {count} elements (B = {batch_size}, N = {params}); "
            f"the limit is {max_elements} (RLHF_MAX_ELEMENTS)"
        )
        raise TooManyElementsError(msg)
