"""The ASGI application: `create_app(settings)`, and `app` for `uvicorn app.main:app`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from app import __version__
from app.body_limit import ProblemBodyLimit
from app.errors import PROBLEM_MEDIA_TYPE, install_error_handlers
from app.routes import router
from app.settings import Settings

__all__ = ["app", "create_app"]


class _Service(FastAPI):
    """FastAPI with the body limit's 413 rendered as problem+json (see app.body_limit)."""

    def build_middleware_stack(self) -> ASGIApp:
        return ProblemBodyLimit(super().build_middleware_stack(), self.state.settings.max_body_size)

    def openapi(self) -> dict[str, Any]:
        # FastAPI files a response model under application/json; errors go out as problem+json.
        schema = super().openapi()
        for path in schema["paths"].values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {})
                    if PROBLEM_MEDIA_TYPE in content and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; with no `settings`, they are read from the environment."""
    settings = settings or Settings()
    logging.getLogger("app").setLevel(settings.log_level.upper())
    app = _Service(
        title="RLHF weight-update service",
        version=__version__,
        summary="Applies one KL-penalised policy-gradient (RLHF) update to a weight vector.",
        max_body_size=settings.max_body_size,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    return app


app = create_app()
