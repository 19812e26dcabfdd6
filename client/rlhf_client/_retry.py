"""When to retry a call, and how long to wait first; shared by the sync and async clients.

/update is a pure function of its request, so resending it is always safe. Retried: failed
connections, timeouts, and the statuses that mean "try again" (408, 429, 502, 503, 504).
Every other answer, 4xx above all, is final.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx2

from rlhf_client._errors import APIConnectionError, APITimeoutError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy"]

RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
# Network failures worth another try; protocol misuse (UnsupportedProtocol, ...) is not.
_RETRYABLE_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to `max_retries` more tries, waiting `initial_delay * 2**attempt` (at most
    `max_delay`) scaled by `0.5 + 0.5 * jitter()`, a factor in [0.5, 1]; a server's
    Retry-After wins, up to `max_delay`."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 30.0
    jitter: Callable[[], float] = random.random

    def retry_after_response(self, attempt: int, response: httpx2.Response) -> float | None:
        """Seconds to wait before trying again after `response`, or None if it is final."""
        if attempt >= self.max_retries or response.status_code not in RETRYABLE_STATUSES:
            return None
        hinted = _parse_retry_after(response.headers.get("retry-after"))
        if hinted is not None:
            return min(hinted, self.max_delay)
        return self._backoff(attempt)

    def retry_after_error(self, attempt: int, error: httpx2.TransportError) -> float:
        """Seconds to wait after a transport error; raises the client's error if it is final."""
        if attempt >= self.max_retries or not isinstance(error, _RETRYABLE_ERRORS):
            tries = f"after {attempt + 1} attempt{'s' if attempt else ''}"
            if isinstance(error, httpx2.TimeoutException):
                msg = f"request timed out {tries}: {error!r}"
                raise APITimeoutError(msg) from error
            msg = f"could not reach the server {tries}: {error!r}"
            raise APIConnectionError(msg) from error
        return self._backoff(attempt)

    def retry_after_unreachable(self, attempt: int, error: APIConnectionError) -> float:
        """Seconds to wait after a transport of the client's own said it could not reach a
        server (or timed out, `APITimeoutError`); raises `error` if it is final."""
        if attempt >= self.max_retries:
            raise error
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.initial_delay * 2.0**attempt, self.max_delay)
        # Jitter spreads the retries of many clients that failed at the same moment.
        return delay * (0.5 + 0.5 * self.jitter())


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110, 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
