"""Python client of the RLHF weight-update service: NumPy in, NumPy out.

    >>> from rlhf_client import Client
    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     result = client.update(weights, rewards, policy_log_probs, ref_log_probs,
    ...                            log_prob_grads, beta=0.1, lr=0.01)

Needs only NumPy and httpx2: no FastAPI, uvicorn or Pydantic.
"""

from __future__ import annotations

from rlhf_client._client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, AsyncClient, Client
from rlhf_client._errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ContentTooLargeError,
    InternalServerError,
    RLHFClientError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    UpdateTooLargeError,
)
from rlhf_client._handle import HandleTransport
from rlhf_client._models import UpdateResult, UpdateStats
from rlhf_client._optimizer import Optimizer
from rlhf_client._sharded import AsyncShardedClient, HttpTransport, ShardedClient
from rlhf_client._transport import BlockAnswer, BlockTransport
from rlhf_client._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncShardedClient",
    "AuthenticationError",
    "BadRequestError",
    "BlockAnswer",
    "BlockTransport",
    "Client",
    "ContentTooLargeError",
    "HandleTransport",
    "HttpTransport",
    "InternalServerError",
    "Optimizer",
    "RLHFClientError",
    "ServiceUnavailableError",
    "ShardedClient",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "UpdateResult",
    "UpdateStats",
    "UpdateTooLargeError",
    "__version__",
]
