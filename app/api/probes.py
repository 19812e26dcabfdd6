"""Liveness and readiness probes, with the aliases KServe-style tooling asks for.

Open (no token), outside the concurrency gate, the request metrics and the OpenAPI document.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import NotReadyError
from ..ops.lifecycle import Lifecycle
from .problems import problem_response

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_METHODS = ["GET", "HEAD"]


@router.api_route("/healthz", methods=_METHODS)
@router.api_route("/livez", methods=_METHODS)
@router.api_route("/v2/health/live", methods=_METHODS)
async def live() -> dict[str, str]:
    """Liveness: 200 whenever the process answers; checks nothing else."""
    return {"status": "ok"}


@router.api_route("/readyz", methods=_METHODS, response_model=None)
@router.api_route("/v2/health/ready", methods=_METHODS, response_model=None)
async def ready(request: Request) -> dict[str, str] | Response:
    """Readiness: 200 once started, 503 before that and from the moment SIGTERM arrives."""
    lifecycle: Lifecycle = request.app.state.lifecycle
    if lifecycle.ready:
        return {"status": "ready"}
    return problem_response(NotReadyError(lifecycle.reason()))
