"""`Client` and `AsyncClient`: the same calls, blocking or awaitable, over one wire module."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx2
import numpy as np
from numpy.typing import ArrayLike

from rlhf_client._errors import APIResponseError, UpdateTooLargeError
from rlhf_client._models import UpdateResult
from rlhf_client._retry import RetryPolicy
from rlhf_client._version import __version__
from rlhf_client._wire import (
    REQUEST_ID_HEADER,
    PreparedUpdate,
    TransportName,
    WireDtype,
    check_update_arrays,
    decode_json_object,
    decode_update_response,
    encode_update,
    has_safetensors,
    in_wire_dtype,
    raise_for_status,
)

if TYPE_CHECKING:
    from httpx2._client import UseClientDefault

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "AsyncClient", "Client"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# httpx's 5 s default read timeout fails a large JSON body; connecting should still be quick.
DEFAULT_TIMEOUT = httpx2.Timeout(60.0, connect=5.0)
# Before the first body of this size the client reads the service's limits (GET /info):
# to send safetensors when only they fit, and to refuse before uploading what cannot fit.
# Smaller bodies are far below any sensible limit and go in one round trip.
LIMITS_CHECK_BYTES = 1 << 20

Timeout = float | httpx2.Timeout


class _BaseClient:
    """Configuration and request building shared by both clients; no I/O here."""

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout: Timeout | None,
        max_retries: int,
        transport: TransportName,
        binary_threshold: int,
        headers: Mapping[str, str] | None,
        api_key: str | None,
        http_client_base_url: httpx2.URL | None,
    ) -> None:
        if transport not in ("auto", "json", "safetensors"):
            msg = f"transport must be 'auto', 'json' or 'safetensors', not {transport!r}"
            raise ValueError(msg)
        if transport == "safetensors" and not has_safetensors():
            msg = (
                "transport='safetensors' needs safetensors: "
                "pip install 'rlhf-update-client[binary]'"
            )
            raise ImportError(msg)
        if max_retries < 0:
            msg = f"max_retries must be >= 0, not {max_retries}"
            raise ValueError(msg)
        injected = str(http_client_base_url) if http_client_base_url else None
        self.base_url = (
            base_url or injected or os.environ.get("RLHF_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        # An injected http_client keeps its own timeouts unless one is given here or per call.
        self._default_timeout = _as_timeout(timeout)
        self.transport: TransportName = transport
        self.binary_threshold = binary_threshold
        self._retry = RetryPolicy(max_retries=max_retries)
        self._headers = {"User-Agent": f"rlhf-client/{__version__}", **(headers or {})}
        token = api_key or os.environ.get("RLHF_API_TOKEN")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # Set when an "auto" client meets a server without the binary path (415).
        self._binary_unsupported = False
        # The service's limits from GET /info, read once before the first large upload;
        # None when the service has no /info.
        self._limits: dict[str, Any] | None = None
        self._limits_read = False

    def _prepare(
        self,
        arrays: tuple[ArrayLike, ...],
        beta: float,
        lr: float,
        options: Mapping[str, Any],
        *,
        dtype: WireDtype | None = None,
        json_only: bool = False,
        binary_only: bool = False,
    ) -> PreparedUpdate:
        named = check_update_arrays(arrays)
        if dtype is not None:
            named = in_wire_dtype(named, dtype)
        # Half precision has no JSON form: such arrays always travel as safetensors.
        half = any(a.dtype.itemsize < 4 for a in named.values())
        if half and (self.transport == "json" or not has_safetensors()):
            msg = (
                f"dtype={dtype!r} travels only as safetensors: use transport='auto' or "
                "'safetensors', with safetensors installed (pip install 'rlhf-update[binary]')"
            )
            raise ValueError(msg)
        binary = (
            half
            or binary_only
            or (not json_only and self._wants_binary(named["log_prob_grads"].size))
        )
        return encode_update(named, beta=beta, lr=lr, options=options, binary=binary)

    def _needs_limits(self, prepared: PreparedUpdate) -> bool:
        """Whether to read the service's limits before sending this body."""
        return not self._limits_read and len(prepared.content) >= LIMITS_CHECK_BYTES

    def _remember_limits(self, info: dict[str, Any] | None) -> None:
        limits = info.get("limits") if info is not None else None
        self._limits = limits if isinstance(limits, dict) else None
        self._limits_read = True

    def _fitted(
        self,
        prepared: PreparedUpdate,
        arrays: tuple[ArrayLike, ...],
        beta: float,
        lr: float,
        options: Mapping[str, Any],
        dtype: WireDtype | None,
    ) -> PreparedUpdate:
        """`prepared`, or its safetensors form when only that fits the service's limits.

        Raises
        ------
        UpdateTooLargeError
            When the update is beyond the service's limits in every wire format it may use.
        """
        limits = self._limits
        if limits is None or len(prepared.content) < LIMITS_CHECK_BYTES:
            return prepared
        max_elements, max_body = limits.get("max_elements"), limits.get("max_body_size")
        b, n = int(np.shape(arrays[1])[0]), int(np.shape(arrays[0])[0])
        if isinstance(max_elements, int) and b * n + b + n > max_elements:
            msg = (
                f"the update has B*N + B + N = {b * n + b + n} elements; the service takes "
                f"at most {max_elements} (RLHF_MAX_ELEMENTS); nothing was sent"
            )
            raise UpdateTooLargeError(msg)
        if not isinstance(max_body, int) or len(prepared.content) <= max_body:
            return prepared
        if not prepared.binary and self.transport == "auto" and has_safetensors():
            prepared = self._prepare(arrays, beta, lr, options, dtype=dtype, binary_only=True)
            if len(prepared.content) <= max_body:
                return prepared
        hint = "" if prepared.binary else "; safetensors bodies are about 2.5 times smaller"
        msg = (
            f"the request body would be {len(prepared.content)} bytes; the service takes at "
            f"most {max_body} (RLHF_MAX_BODY_SIZE){hint}; nothing was sent"
        )
        raise UpdateTooLargeError(msg)

    def _wants_binary(self, size: int) -> bool:
        if self.transport != "auto":
            return self.transport == "safetensors"
        if self._binary_unsupported or not has_safetensors():
            return False
        return size >= self.binary_threshold

    def _should_resend_as_json(self, prepared: PreparedUpdate, response: httpx2.Response) -> bool:
        """An "auto" binary request refused with 415: the server predates the binary path."""
        if self.transport == "auto" and prepared.binary and response.status_code == 415:
            self._binary_unsupported = True
            return True
        return False

    def _headers_for(
        self, extra: Mapping[str, str] | None, request_id: str | None
    ) -> dict[str, str]:
        headers = {**self._headers, **(extra or {})}
        if request_id is not None:
            headers[REQUEST_ID_HEADER] = request_id
        return headers

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _timeout(self, timeout: Timeout | None) -> httpx2.Timeout | UseClientDefault:
        chosen = _as_timeout(timeout) or self._default_timeout
        return chosen if chosen is not None else httpx2.USE_CLIENT_DEFAULT


def _info_body(response: httpx2.Response) -> dict[str, Any] | None:
    """The /info document, or None from a service that has no /info."""
    if response.status_code == 404:
        return None
    raise_for_status(response)
    try:
        return decode_json_object(response)
    except ValueError as exc:
        msg = f"unreadable /info answer: {exc}"
        raise APIResponseError(msg, response) from exc


def _as_timeout(timeout: Timeout | None) -> httpx2.Timeout | None:
    if timeout is None or isinstance(timeout, httpx2.Timeout):
        return timeout
    return httpx2.Timeout(timeout)


def _health_body(response: httpx2.Response) -> dict[str, Any]:
    raise_for_status(response)
    try:
        return decode_json_object(response)
    except ValueError as exc:
        msg = f"unreadable /healthz answer: {exc}"
        raise APIResponseError(msg, response) from exc


class Client(_BaseClient):
    """Blocking client of the RLHF weight-update service.

    `base_url` defaults to the injected client's base URL, `$RLHF_BASE_URL`, then
    http://127.0.0.1:8000; `api_key` to `$RLHF_API_TOKEN` (sent as a bearer token).
    `timeout` (seconds, or an `httpx2.Timeout`) defaults to 60 s read, 5 s connect; a call's
    own `timeout=` overrides it. An `http_client` passed in is used as is (its own timeouts,
    unless `timeout` is given) and left open by `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: Timeout | None = None,
        max_retries: int = 2,
        transport: TransportName = "auto",
        binary_threshold: int = 4096,
        headers: Mapping[str, str] | None = None,
        http_client: httpx2.Client | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            max_retries=max_retries,
            transport=transport,
            binary_threshold=binary_threshold,
            headers=headers,
            api_key=api_key,
            http_client_base_url=http_client.base_url if http_client else None,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx2.Client(timeout=timeout or DEFAULT_TIMEOUT)
        self._sleep: Callable[[float], None] = time.sleep

    def update(
        self,
        weights: ArrayLike,
        rewards: ArrayLike,
        policy_log_probs: ArrayLike,
        ref_log_probs: ArrayLike,
        log_prob_grads: ArrayLike,
        *,
        beta: float,
        lr: float,
        timeout: Timeout | None = None,
        request_id: str | None = None,
        dtype: WireDtype | None = None,
        **options: Any,
    ) -> UpdateResult:
        """Apply one update; `options` are the service's algorithm options (`baseline=...`).

        `dtype` ("float64", "float32", "float16" or "bfloat16") sends every array in that
        dtype, rounded to nearest; the new weights come back in it (half precision always
        travels as safetensors). By default float32 arrays travel as float32, the rest as
        float64.
        """
        arrays = (weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads)
        prepared = self._prepare(arrays, beta, lr, options, dtype=dtype)
        if self._needs_limits(prepared):
            self._remember_limits(self.info(timeout=timeout))
        prepared = self._fitted(prepared, arrays, beta, lr, options, dtype)
        response = self._post_update(prepared, timeout, request_id)
        if self._should_resend_as_json(prepared, response):
            prepared = self._prepare(arrays, beta, lr, options, dtype=dtype, json_only=True)
            response = self._post_update(prepared, timeout, request_id)
        return decode_update_response(response, prepared)

    def health(self, *, timeout: Timeout | None = None) -> dict[str, Any]:
        """GET /healthz: the service's liveness answer, `{"status": "ok"}`."""
        response = self._send("GET", "/healthz", None, self._headers_for(None, None), timeout)
        return _health_body(response)

    def info(self, *, timeout: Timeout | None = None) -> dict[str, Any] | None:
        """GET /info: the service's version, limits and options; None if it has no /info."""
        response = self._send("GET", "/info", None, self._headers_for(None, None), timeout)
        return _info_body(response)

    def close(self) -> None:
        """Close the HTTP connection pool, unless it was passed in."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _post_update(
        self, prepared: PreparedUpdate, timeout: Timeout | None, request_id: str | None
    ) -> httpx2.Response:
        headers = self._headers_for(prepared.headers, request_id)
        return self._send("POST", "/update", prepared.content, headers, timeout)

    def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        timeout: Timeout | None,
    ) -> httpx2.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    self._url(path),
                    content=content,
                    headers=headers,
                    timeout=self._timeout(timeout),
                )
            except httpx2.TransportError as exc:
                delay = self._retry.retry_after_error(attempt, exc)
            else:
                retry_in = self._retry.retry_after_response(attempt, response)
                if retry_in is None:
                    return response
                response.close()
                delay = retry_in
            self._sleep(delay)
            attempt += 1


class AsyncClient(_BaseClient):
    """Awaitable client of the RLHF weight-update service; see `Client` for the arguments."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: Timeout | None = None,
        max_retries: int = 2,
        transport: TransportName = "auto",
        binary_threshold: int = 4096,
        headers: Mapping[str, str] | None = None,
        http_client: httpx2.AsyncClient | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            max_retries=max_retries,
            transport=transport,
            binary_threshold=binary_threshold,
            headers=headers,
            api_key=api_key,
            http_client_base_url=http_client.base_url if http_client else None,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx2.AsyncClient(timeout=timeout or DEFAULT_TIMEOUT)
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def update(
        self,
        weights: ArrayLike,
        rewards: ArrayLike,
        policy_log_probs: ArrayLike,
        ref_log_probs: ArrayLike,
        log_prob_grads: ArrayLike,
        *,
        beta: float,
        lr: float,
        timeout: Timeout | None = None,
        request_id: str | None = None,
        dtype: WireDtype | None = None,
        **options: Any,
    ) -> UpdateResult:
        """Apply one update; `options` are the service's algorithm options (`baseline=...`).

        `dtype` ("float64", "float32", "float16" or "bfloat16") sends every array in that
        dtype, rounded to nearest; the new weights come back in it (half precision always
        travels as safetensors). By default float32 arrays travel as float32, the rest as
        float64.
        """
        arrays = (weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads)
        prepared = self._prepare(arrays, beta, lr, options, dtype=dtype)
        if self._needs_limits(prepared):
            self._remember_limits(await self.info(timeout=timeout))
        prepared = self._fitted(prepared, arrays, beta, lr, options, dtype)
        response = await self._post_update(prepared, timeout, request_id)
        if self._should_resend_as_json(prepared, response):
            prepared = self._prepare(arrays, beta, lr, options, dtype=dtype, json_only=True)
            response = await self._post_update(prepared, timeout, request_id)
        return decode_update_response(response, prepared)

    async def health(self, *, timeout: Timeout | None = None) -> dict[str, Any]:
        """GET /healthz: the service's liveness answer, `{"status": "ok"}`."""
        headers = self._headers_for(None, None)
        response = await self._send("GET", "/healthz", None, headers, timeout)
        return _health_body(response)

    async def info(self, *, timeout: Timeout | None = None) -> dict[str, Any] | None:
        """GET /info: the service's version, limits and options; None if it has no /info."""
        headers = self._headers_for(None, None)
        response = await self._send("GET", "/info", None, headers, timeout)
        return _info_body(response)

    async def aclose(self) -> None:
        """Close the HTTP connection pool, unless it was passed in."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _post_update(
        self, prepared: PreparedUpdate, timeout: Timeout | None, request_id: str | None
    ) -> httpx2.Response:
        headers = self._headers_for(prepared.headers, request_id)
        return await self._send("POST", "/update", prepared.content, headers, timeout)

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        timeout: Timeout | None,
    ) -> httpx2.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method,
                    self._url(path),
                    content=content,
                    headers=headers,
                    timeout=self._timeout(timeout),
                )
            except httpx2.TransportError as exc:
                delay = self._retry.retry_after_error(attempt, exc)
            else:
                retry_in = self._retry.retry_after_response(attempt, response)
                if retry_in is None:
                    return response
                await response.aclose()
                delay = retry_in
            await self._sleep(delay)
            attempt += 1
