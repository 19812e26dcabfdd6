"""`create_app(settings)`: the one place that wires the layers into an ASGI application.

No app is built at import: uvicorn calls the factory (``uvicorn --factory
app.main:create_app``; `python -m app` does so), and tests call it with their settings.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.params import Depends as DependsParam
from starlette.types import ASGIApp

from . import __version__
from .api.auth import bearer_token_check
from .api.blocks import APPLY_PATH, GRAD_PATH, install_block_routes
from .api.body import UPLOAD_BUDGET_BODIES, UploadBudget
from .api.body_limit import ProblemBodyLimit
from .api.docs import install_offline_docs
from .api.gate import ConcurrencyGate
from .api.info import router as info_router
from .api.info import service_info
from .api.probes import router as probes_router
from .api.problems import PROBLEM_MEDIA_TYPE, install_error_handlers, problem_doc
from .api.request_id import RequestIdMiddleware
from .api.scrape import router as metrics_router
from .api.update import DirectUpdate, document_examples, install_update_route
from .ops.lifecycle import Lifecycle, lifespan
from .ops.metrics import UpdateMetrics
from .ops.observer import UpdateObserver
from .settings import Settings

__all__ = ["create_app"]


class _Service(FastAPI):
    """FastAPI with the service's outer layers and problem+json documented as such."""

    def build_middleware_stack(self) -> ASGIApp:
        # Outside in: request id (on every answer), the per-update log line and metrics,
        # then POST /update served directly (without a token to check: FastAPI runs that
        # dependency), then the body limit's 413 in problem+json (see app.body_limit),
        # then FastAPI.
        settings = self.state.settings
        inner: ASGIApp = ProblemBodyLimit(super().build_middleware_stack(), settings.max_body_size)
        if settings.bearer_token() is None:
            inner = DirectUpdate(inner, self.state)
        observed = ("/update", GRAD_PATH, APPLY_PATH)
        return RequestIdMiddleware(UpdateObserver(inner, self.state.metrics, observed))

    def openapi(self) -> dict[str, Any]:
        # FastAPI files a response model under application/json; errors go out as problem+json.
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()
        for path in schema["paths"].values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {})
                    if PROBLEM_MEDIA_TYPE in content and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        document_examples(schema["paths"]["/update"]["post"], self.state.settings)
        return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; with no `settings`, they are read from the environment.

    Raises
    ------
    pydantic.ValidationError
        When `settings` is None and a variable of the environment is not valid.
    """
    settings = settings or Settings()
    logging.getLogger("app").setLevel(settings.log_level.upper())
    app = _Service(
        title="RLHF weight-update service",
        version=__version__,
        summary="Applies one KL-penalised policy-gradient (RLHF) update to a weight vector.",
        max_body_size=settings.max_body_size,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # No 307 from /update/ to /update: its Location would be built from the client's
        # Host header. Paths are matched exactly; anything else is 404.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.lifecycle = Lifecycle()
    app.state.metrics = metrics = UpdateMetrics()
    app.state.gate = ConcurrencyGate(
        settings.max_in_flight,
        max_queue=settings.max_queue,
        queue_timeout=settings.queue_timeout_seconds,
        on_change=metrics.in_flight.set,
        on_queue_change=metrics.queued.set,
    )
    app.state.uploads = UploadBudget(UPLOAD_BUDGET_BODIES * settings.max_body_size)
    install_error_handlers(app)
    # /update first: routes are matched in order, and it is the one that carries the load.
    # The token, when there is one, is checked before the body is read or a slot taken.
    update_guards: list[DependsParam] = []
    token = settings.bearer_token()
    if token is not None:
        update_guards.append(Depends(bearer_token_check(token)))
    guard_responses: dict[int | str, dict[str, Any]] = {
        **({401: problem_doc("The bearer token is missing or wrong.")} if token else {}),
        503: problem_doc(
            "RLHF_MAX_IN_FLIGHT updates are running and RLHF_MAX_QUEUE wait (or one "
            "waited RLHF_QUEUE_TIMEOUT_SECONDS), or the bodies being held would pass the "
            "upload budget; retry after Retry-After seconds."
        ),
    }
    install_update_route(app, update_guards, responses=guard_responses)
    install_block_routes(app, update_guards, responses=guard_responses)
    app.state.info = service_info(settings)
    app.include_router(info_router)
    app.include_router(probes_router)
    app.include_router(metrics_router)
    install_offline_docs(app)
    return app
