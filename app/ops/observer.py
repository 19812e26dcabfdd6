"""One log line and one set of metrics per POST /update (and per POST of a sharded update's
block, /update/grad and /update/apply), whatever its outcome.

Wraps the app outside the body limit, so a 413 refused before the body was read is seen
too. The line holds numbers only: never weights, gradients, bodies or headers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..wire.media import body_format
from .context import RequestContext, current_context, scope_header
from .log_config import log_fields
from .metrics import UpdateMetrics

__all__ = ["UpdateObserver"]

logger = logging.getLogger("app.update")


class UpdateObserver:
    """Measure every POST /update: status, format, sizes, shape, timings, kl_mean.

    The other `paths` (the blocks of sharded updates) get their own count and duration by
    route, and the same log line with its path.
    """

    def __init__(
        self, app: ASGIApp, metrics: UpdateMetrics, paths: tuple[str, ...] = ("/update",)
    ) -> None:
        self.app = app
        self.metrics = metrics
        # The first is the update's own; a line of another says which path it was.
        self.paths = paths
        # Each labelled child once: `labels()` takes a lock and builds a key per call.
        self._requests: dict[tuple[int, str], Any] = {}
        self._stages: dict[str, Any] = {}
        self._rejected: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = current_context()
        if (
            context is None
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless the app answers otherwise
        body_bytes = 0

        async def counting_receive() -> Message:
            nonlocal body_bytes
            message = await receive()
            if message["type"] == "http.request":
                body_bytes += len(message.get("body", b""))
            return message

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            self._record(
                context,
                status=status,
                body_format=body_format(scope_header(scope, b"content-type")),
                body_bytes=body_bytes,
                duration=time.perf_counter() - start,
                path=scope["path"],
            )

    def _record(
        self,
        context: RequestContext,
        *,
        status: int,
        body_format: str,
        body_bytes: int,
        duration: float,
        path: str,
    ) -> None:
        metrics = self.metrics
        problem = context.problem
        if path != self.paths[0]:
            metrics.block_requests.labels(path, str(status), body_format).inc()
            metrics.block_duration.labels(path).observe(duration)
            self._log(context, status, body_format, body_bytes, duration, path)
            return
        requests = self._requests.get((status, body_format))
        if requests is None:
            requests = metrics.requests.labels(str(status), body_format)
            self._requests[status, body_format] = requests
        requests.inc()
        metrics.duration.observe(duration)
        metrics.request_bytes.observe(body_bytes)
        if problem is not None and problem.reason is not None:
            rejected = self._rejected.get(problem.reason)
            if rejected is None:
                rejected = self._rejected[problem.reason] = metrics.rejected.labels(problem.reason)
            rejected.inc()
        if context.batch_size is not None and context.params is not None:
            metrics.batch_size.observe(context.batch_size)
            metrics.params.observe(context.params)
        for stage, seconds in context.stage_seconds.items():
            child = self._stages.get(stage)
            if child is None:
                child = self._stages[stage] = metrics.stage_duration.labels(stage)
            child.observe(seconds)
        if context.kl_mean is not None:
            metrics.kl_mean.observe(context.kl_mean)
        self._log(context, status, body_format, body_bytes, duration, path)

    def _log(
        self,
        context: RequestContext,
        status: int,
        body_format: str,
        body_bytes: int,
        duration: float,
        path: str,
    ) -> None:
        """The request's one JSON log line (ERROR for a 5xx)."""
        problem = context.problem
        level = logging.ERROR if status >= 500 else logging.INFO
        if not logger.isEnabledFor(level):
            return
        line: dict[str, Any] = {
            "request_id": context.request_id,
            "status": status,
            "format": body_format,
            "body_bytes": body_bytes,
            "B": context.batch_size,
            "N": context.params,
            "duration_s": round(duration, 6),
        }
        line.update({f"{stage}_s": round(s, 6) for stage, s in context.stage_seconds.items()})
        if context.kl_mean is not None:
            line["kl_mean"] = context.kl_mean
        if problem is not None:
            line["error"] = problem.label
        if path != self.paths[0]:
            line["path"] = path
        log_fields(logger, level, "update", line)
