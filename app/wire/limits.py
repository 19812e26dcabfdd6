"""The size limit on an update's arrays, shared by every wire format.

RLHF_MAX_BODY_SIZE is the first line of defence: a larger body is refused before it is
read. `check_element_count` is the second, on the shapes: each decoder calls it as soon as
it knows them. The binary decoder reads them from the header, before it lays views on the
body; the JSON decoder counts the arrays and rows msgspec found in the body's structure,
before it parses or allocates the gradient matrix.
"""

from __future__ import annotations

from ..errors import TooManyElementsError

__all__ = ["check_element_count"]


def check_element_count(batch_size: int, params: int, grads_size: int, max_elements: int) -> None:
    """Raise `TooManyElementsError` (413) when B*N + B + N exceeds `max_elements`.

    `grads_size` is the number of entries `log_prob_grads` really has, which may differ
    from B*N (a body whose shapes disagree, which the core rejects later): the count is of
    what was sent, so such a body cannot slip a large gradient past the limit.
    """
    count = grads_size + batch_size + params
    if count > max_elements:
        what = (
            f"B*N + B + N = {count} elements (B = {batch_size}, N = {params})"
            if grads_size == batch_size * params
            else f"{count} elements (log_prob_grads has {grads_size}, "
            f"B = {batch_size}, N = {params})"
        )
        msg = f"the update has {what}; the limit is {max_elements} (RLHF_MAX_ELEMENTS)"
        raise TooManyElementsError(msg)
