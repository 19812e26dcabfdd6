"""`GET /info`: the service's version, limits, wire formats and options, for clients.

Open, like the probes: it tells nothing a request's answers would not, and a client reads
it before its first update to choose a wire format and to refuse an update that cannot fit.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from .. import __version__
from ..core.norms import CHUNK_COLUMNS
from ..settings import Settings
from ..wire.media import JSON_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE
from ..wire.safetensors_codec import describe_layout
from ..wire.schemas import ServiceInfo, ServiceLimits, describe_options

__all__ = ["router", "service_info"]

router = APIRouter()


def service_info(settings: Settings) -> ServiceInfo:
    """What GET /info answers under `settings`."""
    layout = describe_layout()["request"]["tensors"]
    return ServiceInfo(
        service="rlhf-update",
        version=__version__,
        limits=ServiceLimits(
            max_body_size=settings.max_body_size,
            max_elements=settings.max_elements,
            max_in_flight=settings.max_in_flight,
            max_queue=settings.max_queue,
            queue_timeout_seconds=settings.queue_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
        ),
        request_media_types=[JSON_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE],
        response_media_types=[JSON_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE],
        safetensors_dtypes=layout["weights"]["dtypes"],
        options=describe_options(),
        chunk_columns=CHUNK_COLUMNS,
    )


@router.get(
    "/info", response_model=ServiceInfo, summary="The service's version, limits and options"
)
async def info(request: Request) -> ServiceInfo:
    """Version, limits, wire formats and every option with its default and allowed values."""
    info: ServiceInfo = request.app.state.info
    return info
