"""`GET /metrics`: the service's Prometheus metrics, for a scraper."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..ops.metrics import UpdateMetrics

__all__ = ["router"]

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format (OpenMetrics when the Accept header asks for it)."""
    update_metrics: UpdateMetrics = request.app.state.metrics
    body, content_type = update_metrics.exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
