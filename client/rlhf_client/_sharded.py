"""Column-sharded updates: the columns cut into blocks, each block sent to a server.

A block of columns ``[offset, offset + n)`` is an ordinary update of ``weights[block]``,
``log_prob_grads[:, block]`` and the optimizer state's block, with the (B,) arrays whole
and ``column_offset = offset``; `offset` is a multiple of the service's chunk
(``GET /info``'s ``chunk_columns``), so every norm over the columns is combined exactly
from the blocks' partials (`rlhf_client._norms`). Without ``max_grad_norm`` a block is one
POST /update. With it, each block first POSTs /update/grad (its gradient and partials), the
client combines the whole gradient's norm, and each block POSTs /update/apply with it.
The result equals a single server's answer bit for bit. The servers keep no state, so a
failed block is simply sent again, to the next transport.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from rlhf_client._client import DEFAULT_TIMEOUT, Timeout
from rlhf_client._errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    RLHFClientError,
    UnprocessableEntityError,
)
from rlhf_client._models import UpdateResult, UpdateStats
from rlhf_client._norms import norm_of_partials
from rlhf_client._retry import RetryPolicy
from rlhf_client._transport import BlockAnswer, BlockTransport
from rlhf_client._version import __version__
from rlhf_client._wire import (
    SAFETENSORS_MEDIA_TYPE,
    STATE_VECTORS,
    WireDtype,
    as_state,
    check_update_arrays,
    encode_update,
    in_wire_dtype,
    raise_for_status,
)

__all__ = ["AsyncShardedClient", "HttpTransport", "ShardedClient"]

_T = TypeVar("_T")
_GRAD_PARTIALS = "grad_norm_partials"
_STEP_PARTIALS = "step_norm_partials"
_UPDATE_PARTIALS = "update_norm_partials"
_STEP_KEY = "optimizer_state.step"
# The statistics over the columns, which a block answers for itself alone.
_COLUMN_STATS = ("grad_norm", "clipped", "update_norm", "optimizer_step")
_HEADERS = {
    "Content-Type": SAFETENSORS_MEDIA_TYPE,
    "Accept": SAFETENSORS_MEDIA_TYPE,
}


class HttpTransport:
    """`BlockTransport` over HTTP: one `httpx2.AsyncClient` for one base URL.

    `api_key` defaults to ``$RLHF_API_TOKEN`` (a bearer token); `timeout` to the
    `Client`'s (60 s read, 5 s connect). Besides the protocol it reads ``GET /info``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http_client is None
        self._http = http_client or httpx2.AsyncClient(timeout=timeout or DEFAULT_TIMEOUT)
        self._headers = {"User-Agent": f"rlhf-client/{__version__}", **(headers or {})}
        token = api_key or os.environ.get("RLHF_API_TOKEN")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
        """POST `content` to `path`; the answer whatever its status."""
        response = await self._http.post(
            self.base_url + path, content=content, headers={**self._headers, **headers}
        )
        return BlockAnswer(
            response.status_code,
            {key.lower(): value for key, value in response.headers.items()},
            response.content,
        )

    async def info(self) -> dict[str, Any] | None:
        """GET /info as a dict, or None when the service has none."""
        response = await self._http.get(self.base_url + "/info", headers=self._headers)
        if response.status_code == 404:
            return None
        raise_for_status(response)
        body = json.loads(response.content)
        return body if isinstance(body, dict) else None

    async def aclose(self) -> None:
        """Close the HTTP client, unless it was passed in."""
        if self._owns_http:
            await self._http.aclose()


class AsyncShardedClient:
    """A sharded update over several servers (or any `BlockTransport`), asynchronously.

    Exactly one of `base_urls` (one `HttpTransport` each, with `timeout`, `headers` and
    `api_key`) and `transports`. Block k goes to transport ``k % len(transports)``, a retry
    to the next one. `block_columns` (a multiple of the service's ``chunk_columns``) is
    checked against ``GET /info`` when a transport can read it; left out, the columns are
    cut into one block per transport, rounded up to the chunk. At most `max_concurrency`
    blocks (default: two per transport) are in flight, so the client holds that many
    bodies at a time. Each block is retried up to `max_retries` times on a failed
    connection, a timeout, or a 408, 429, 502, 503 or 504, and so is ``GET /info``, each
    try on the next transport that reads it.
    """

    def __init__(
        self,
        base_urls: Sequence[str] | None = None,
        *,
        transports: Sequence[BlockTransport] | None = None,
        block_columns: int | None = None,
        max_concurrency: int | None = None,
        max_retries: int = 2,
        timeout: Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        if (base_urls is None) == (transports is None):
            msg = "pass exactly one of base_urls=[...] and transports=[...]"
            raise ValueError(msg)
        if transports is None:
            assert base_urls is not None
            transports = [
                HttpTransport(url, timeout=timeout, headers=headers, api_key=api_key)
                for url in base_urls
            ]
            self._owns_transports = True
            # Those transports carry `headers` and `api_key` themselves.
            self._block_headers = dict(_HEADERS)
        else:
            if timeout is not None:
                msg = (
                    "timeout= sets the HttpTransports made from base_urls; with transports=, "
                    "give each transport its own, or pass update(timeout=...)"
                )
                raise ValueError(msg)
            self._owns_transports = False
            # Sent with every block whatever carries it (a Ray handle has no headers of its
            # own); no $RLHF_API_TOKEN here, which would override a transport's own token.
            self._block_headers = {**_HEADERS, **(headers or {})}
            if api_key:
                self._block_headers["Authorization"] = f"Bearer {api_key}"
        if not transports:
            msg = "a sharded client needs at least one base URL or transport"
            raise ValueError(msg)
        if block_columns is not None and (
            isinstance(block_columns, bool)
            or not isinstance(block_columns, int)
            or block_columns < 1
        ):
            msg = f"block_columns must be a positive integer, not {block_columns!r}"
            raise ValueError(msg)
        if max_retries < 0:
            msg = f"max_retries must be >= 0, not {max_retries}"
            raise ValueError(msg)
        self.transports: list[BlockTransport] = list(transports)
        self.block_columns = block_columns
        self.max_concurrency = max_concurrency or 2 * len(self.transports)
        self._retry = RetryPolicy(max_retries=max_retries)
        self._chunk: int | None = None
        self._chunk_read = False

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
        """`Client.update`, the columns sent in blocks; the same result, bit for bit.

        `timeout` (seconds; of an `httpx2.Timeout`, its read timeout) bounds each POST of a
        block; `request_id` is sent with every
        block. Errors are the `Client`'s: a 422 of a block names the column by its index
        in the whole vector.
        """
        named = check_update_arrays(
            (weights, rewards, policy_log_probs, ref_log_probs, log_prob_grads)
        )
        if dtype is not None:
            named = in_wire_dtype(named, dtype)
        n = named["weights"].size
        options = {name: value for name, value in options.items() if value is not None}
        if "column_offset" in options:
            msg = "column_offset is the sharded client's to set; leave it out"
            raise ValueError(msg)
        sent_state = options.pop("optimizer_state", None)
        state = None if sent_state is None else as_state(sent_state, n)
        width = await self._block_width(n)
        offsets = list(range(0, n, width))
        seconds = timeout.read if isinstance(timeout, httpx2.Timeout) else timeout
        plan = _Plan(named, beta, lr, options, state, width, seconds, request_id)
        if options.get("max_grad_norm") is None:
            blocks = await self._each(offsets, lambda k, o: self._one_call(plan, k, o))
            return _combined(blocks, plan)
        grads = await self._each(offsets, lambda k, o: self._gradient(plan, k, o))
        grad_norm = norm_of_partials([block.tensors[_GRAD_PARTIALS] for block in grads])
        _require_finite_norm("grad_norm", grad_norm, grads[0])
        steps = await self._each(
            offsets, lambda k, o: self._apply(plan, k, o, grads[k].tensors["grad"], grad_norm)
        )
        return _combined(steps, plan, grads, grad_norm)

    async def aclose(self) -> None:
        """Close the transports this client made (not those passed in)."""
        if self._owns_transports:
            for transport in self.transports:
                await transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _block_width(self, n: int) -> int:
        """The columns of a block: `block_columns`, checked, or one block per transport."""
        if not self._chunk_read:
            self._chunk = await self._read_chunk()
            self._chunk_read = True
        chunk = self._chunk
        if self.block_columns is not None:
            if chunk is not None and self.block_columns % chunk:
                msg = (
                    f"block_columns is {self.block_columns}; the service needs a multiple of "
                    f"its chunk_columns, {chunk} (GET /info)"
                )
                raise ValueError(msg)
            return self.block_columns
        if chunk is None:
            msg = (
                "block_columns is needed: no transport reads GET /info for the service's "
                "chunk_columns; pass a multiple of it"
            )
            raise ValueError(msg)
        per_transport = math.ceil(n / len(self.transports))
        return max(1, math.ceil(per_transport / chunk)) * chunk

    async def _read_chunk(self) -> int | None:
        """``chunk_columns`` from GET /info, or None when no transport reads it.

        Read as a block is sent: a transport that cannot be reached, or that answers a
        status worth retrying (a 503 while it starts, say), hands over to the next one that
        reads GET /info, by the blocks' retry policy; an error past it is raised.
        """
        readers = [
            (transport, read)
            for transport in self.transports
            if (read := getattr(transport, "info", None)) is not None
        ]
        if not readers:
            return None
        attempt = 0
        while True:
            transport, read = readers[attempt % len(readers)]
            try:
                info = await read()
            except httpx2.TransportError as exc:
                delay = self._retry.retry_after_error(attempt, exc)
            except APIConnectionError as exc:
                delay = self._retry.retry_after_unreachable(attempt, exc)
            except APIStatusError as exc:
                retry_in = self._retry.retry_after_response(attempt, exc.response)
                if retry_in is None:
                    raise
                delay = retry_in
            else:
                return _chunk_columns(transport, info)
            await asyncio.sleep(delay)
            attempt += 1

    async def _each(
        self,
        offsets: list[int],
        block: Callable[[int, int], Coroutine[Any, Any, _T]],
    ) -> list[_T]:
        """Run `block(k, offset)` for every block, at most `max_concurrency` at a time."""
        limit = asyncio.Semaphore(self.max_concurrency)

        async def limited(k: int, offset: int) -> _T:
            async with limit:
                return await block(k, offset)

        tasks = [asyncio.ensure_future(limited(k, o)) for k, o in enumerate(offsets)]
        try:
            answers = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:  # this update cancelled: its blocks with it
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        # The first block's error in column order, as one server names the first bad column.
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return answers  # type: ignore[return-value]  # no exception among them

    async def _one_call(self, plan: _Plan, k: int, offset: int) -> _Answer:
        """A block without clipping: POST /update with its column_offset."""
        prepared = encode_update(
            plan.block_arrays(offset),
            beta=plan.beta,
            lr=plan.lr,
            options=plan.block_options(offset, with_state=True),
            binary=True,
        )
        return await self._post(k, "/update", prepared.content, plan)

    async def _gradient(self, plan: _Plan, k: int, offset: int) -> _Answer:
        """Phase 1 of a clipped block: its gradient and partials (no optimizer needed)."""
        options = plan.block_options(offset, with_state=False)
        prepared = encode_update(
            plan.block_arrays(offset), beta=plan.beta, lr=plan.lr, options=options, binary=True
        )
        return await self._post(k, "/update/grad", prepared.content, plan)

    async def _apply(
        self, plan: _Plan, k: int, offset: int, grad: NDArray[Any], grad_norm: float
    ) -> _Answer:
        """Phase 2 of a clipped block: clip by the whole's norm and step."""
        from safetensors.numpy import save

        block = slice(offset, offset + plan.width)
        tensors: dict[str, NDArray[Any]] = {
            "weights": np.ascontiguousarray(plan.arrays["weights"][block]),
            "grad": np.ascontiguousarray(grad, dtype=np.float64),
            "lr": np.asarray(float(plan.lr), dtype=np.float64),
            "grad_norm": np.asarray(grad_norm, dtype=np.float64),
        }
        metadata = {
            "max_grad_norm": repr(float(plan.options["max_grad_norm"])),
            "column_offset": str(offset),
        }
        optimizer = plan.options.get("optimizer")
        if optimizer is not None:
            metadata["optimizer"] = json.dumps(dict(optimizer))
        if plan.state is not None:
            metadata[_STEP_KEY] = str(plan.state.get("step", 0))
            tensors |= {
                name: np.ascontiguousarray(value[block])
                for name, value in plan.state.items()
                if name != "step"
            }
        return await self._post(k, "/update/apply", save(tensors, metadata=metadata), plan)

    async def _post(self, k: int, path: str, content: bytes, plan: _Plan) -> _Answer:
        """POST one block, retried on the next transport; its 2xx answer, read."""
        headers = dict(self._block_headers)
        if plan.request_id is not None:
            headers["X-Request-ID"] = plan.request_id
        attempt = 0
        while True:
            transport = self.transports[(k + attempt) % len(self.transports)]
            try:
                sent = transport.post(path, content, headers)
                answer = await (
                    sent if plan.timeout is None else asyncio.wait_for(sent, plan.timeout)
                )
            except httpx2.TransportError as exc:
                delay = self._retry.retry_after_error(attempt, exc)
            except APIConnectionError as exc:  # a transport's own word, e.g. HandleTransport's
                delay = self._retry.retry_after_unreachable(attempt, exc)
            except TimeoutError:
                timed_out = httpx2.ReadTimeout(f"no answer from a block within {plan.timeout} s")
                delay = self._retry.retry_after_error(attempt, timed_out)
            else:
                response = httpx2.Response(
                    answer.status, headers=dict(answer.headers), content=answer.content
                )
                retry_in = self._retry.retry_after_response(attempt, response)
                if retry_in is None:
                    raise_for_status(response)
                    return _read_answer(response, path)
                delay = retry_in
            await asyncio.sleep(delay)
            attempt += 1


def _chunk_columns(transport: object, info: dict[str, Any] | None) -> int:
    """The service's ``chunk_columns`` in a GET /info answer; the client's error without it."""
    chunk = info.get("chunk_columns") if isinstance(info, dict) else None
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        url = getattr(transport, "base_url", "the service")
        msg = (
            f"{url} does not take sharded updates (GET /info has no chunk_columns); "
            "it is older than this client: upgrade it, or use Client"
        )
        raise RLHFClientError(msg)
    return chunk


class ShardedClient:
    """The blocking form of `AsyncShardedClient`, on an event loop of its own.

    The same arguments; ``update(...)`` has `Client.update`'s signature and result.
    """

    def __init__(
        self,
        base_urls: Sequence[str] | None = None,
        *,
        transports: Sequence[BlockTransport] | None = None,
        block_columns: int | None = None,
        max_concurrency: int | None = None,
        max_retries: int = 2,
        timeout: Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self._client = AsyncShardedClient(
            base_urls,
            transports=transports,
            block_columns=block_columns,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            timeout=timeout,
            headers=headers,
            api_key=api_key,
        )
        # After the arguments are checked: a loop left unclosed would leak its sockets.
        self._loop = asyncio.new_event_loop()

    @property
    def transports(self) -> list[BlockTransport]:
        """The transports, block k going to ``k % len(transports)``."""
        return self._client.transports

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
        """`AsyncShardedClient.update`, waited for."""
        return self._loop.run_until_complete(
            self._client.update(
                weights,
                rewards,
                policy_log_probs,
                ref_log_probs,
                log_prob_grads,
                beta=beta,
                lr=lr,
                timeout=timeout,
                request_id=request_id,
                dtype=dtype,
                **options,
            )
        )

    def close(self) -> None:
        """Close the transports this client made, then its event loop."""
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Plan:
    """One sharded update's arrays and settings, and how a block is cut from them."""

    def __init__(
        self,
        arrays: dict[str, NDArray[Any]],
        beta: float,
        lr: float,
        options: dict[str, Any],
        state: dict[str, Any] | None,
        width: int,
        timeout: float | None,
        request_id: str | None,
    ) -> None:
        self.arrays = arrays
        self.beta = beta
        self.lr = lr
        self.options = options
        self.state = state
        self.width = width
        self.timeout = timeout
        self.request_id = request_id

    def block_arrays(self, offset: int) -> dict[str, NDArray[Any]]:
        block = slice(offset, offset + self.width)
        return {
            **self.arrays,
            "weights": self.arrays["weights"][block],
            "log_prob_grads": self.arrays["log_prob_grads"][:, block],
        }

    def block_options(self, offset: int, *, with_state: bool) -> dict[str, Any]:
        options = dict(self.options)
        if not with_state:
            # /update/grad needs neither: the step is /update/apply's.
            options.pop("optimizer", None)
        elif self.state is not None:
            block = slice(offset, offset + self.width)
            options["optimizer_state"] = {
                name: value if name == "step" else value[block]
                for name, value in self.state.items()
            }
        options["column_offset"] = offset
        return options


class _Answer:
    """A block's 2xx answer: its tensors and metadata, and the request id."""

    def __init__(
        self, tensors: dict[str, NDArray[Any]], metadata: dict[str, str], request_id: str | None
    ) -> None:
        self.tensors = tensors
        self.metadata = metadata
        self.request_id = request_id


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def _read_answer(response: httpx2.Response, path: str) -> _Answer:
    """The tensors (copies) and metadata of a safetensors answer."""
    data = response.content
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
        start = 8 + size
        tensors: dict[str, NDArray[Any]] = {}
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            code = entry["dtype"]
            if code == "BF16":
                import ml_dtypes

                dtype: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
            else:
                dtype = np.dtype(_DTYPES[code])
            raw = np.frombuffer(
                data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=start + begin
            )
            tensors[name] = raw.reshape(entry["shape"]).copy()
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        msg = f"unreadable {path} answer: {exc}"
        raise APIResponseError(msg, response) from exc
    return _Answer(tensors, metadata, response.headers.get("x-request-id"))


def _combined(
    blocks: list[_Answer],
    plan: _Plan,
    gradients: list[_Answer] | None = None,
    grad_norm: float = math.nan,
) -> UpdateResult:
    """The whole update from its blocks: weights and state joined, norms combined.

    `gradients` and `grad_norm` are /update/grad's answers and the norm they combine to,
    when the blocks are /update/apply's; otherwise the blocks are /update's.
    """
    weights = np.concatenate([block.tensors["weights"] for block in blocks])
    first = blocks[0]
    if gradients is not None:
        stats: dict[str, Any] = json.loads(gradients[0].metadata["stats"])
        clipped = first.metadata.get("clipped") == "true"
    else:
        stats = json.loads(first.metadata["stats"])
        grad_norm = norm_of_partials([block.tensors[_GRAD_PARTIALS] for block in blocks])
        clipped = bool(stats.get("clipped", False))
    step_norm = grad_norm
    if clipped:
        step_norm = norm_of_partials([block.tensors[_STEP_PARTIALS] for block in blocks])
    if _UPDATE_PARTIALS in first.tensors:
        update_norm = norm_of_partials([block.tensors[_UPDATE_PARTIALS] for block in blocks])
    else:
        update_norm = float(plan.lr) * step_norm
    for name, value in (("grad_norm", grad_norm), ("update_norm", update_norm)):
        _require_finite_norm(name, value, first)
    state: dict[str, Any] | None = None
    if _STEP_KEY in first.metadata:
        step = int(first.metadata[_STEP_KEY])
        state = {"step": step}
        state |= {
            name: np.concatenate([block.tensors[name] for block in blocks])
            for name in STATE_VECTORS
            if name in first.tensors
        }
    # In the single server's order: the batch's first, then the columns' where they go.
    ordered: dict[str, Any] = {}
    for key, value in stats.items():
        if key in _COLUMN_STATS:
            continue  # a block's own; the whole's are combined here
        ordered[key] = value
        if key == "advantage_std":
            ordered |= {"grad_norm": grad_norm, "clipped": clipped, "update_norm": update_norm}
    if state is not None:
        ordered["optimizer_step"] = state["step"]
    try:
        parsed = UpdateStats.from_dict(ordered)
    except ValueError as exc:
        msg = f"unreadable block stats: {exc}"
        raise RLHFClientError(msg) from exc
    return UpdateResult(weights, parsed, first.request_id, state)


# The service's problem type for an update that overflows (its OpenAPI document lists it);
# tests/client/test_sharded.py ties the two.
UPDATE_OVERFLOW_TYPE = "urn:rlhf-update:problem:update-overflow"


def _require_finite_norm(name: str, value: float, answer: _Answer) -> None:
    """Refuse a combined norm that overflows, with the 422 one server gives for it.

    Each block's norm can be finite while the whole's is not; a single server would
    refuse that update naming ``stats.<name>``, and so does the sharded one.
    """
    if math.isfinite(value):
        return
    msg = f"stats.{name} overflows float64 ({value}); scale down the inputs or lr"
    problem = {
        "type": UPDATE_OVERFLOW_TYPE,
        "title": "Update overflows",
        "status": 422,
        "detail": msg,
        "errors": [{"loc": ["stats", name], "msg": msg}],
    }
    response = httpx2.Response(422, json=problem)
    raise UnprocessableEntityError(response, problem, answer.request_id)
