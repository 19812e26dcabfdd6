"""Service configuration, read from the environment by pydantic-settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

LogLevel = Annotated[
    Literal["critical", "error", "warning", "info", "debug"],
    BeforeValidator(lambda level: level.lower() if isinstance(level, str) else level),
]


class Settings(BaseSettings):
    """Every knob of the service; see the README's Configuration table."""

    model_config = SettingsConfigDict(populate_by_name=True, frozen=True)

    host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("HOST", "host"),
        description="Interface to bind (0.0.0.0 in the container).",
    )
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PORT", "port"),
        description="TCP port to listen on.",
    )
    max_body_size: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        validation_alias=AliasChoices("RLHF_MAX_BODY_SIZE", "max_body_size"),
        description="Largest request body in bytes; larger ones get 413 before being read.",
    )
    log_level: LogLevel = Field(
        default="info",
        validation_alias=AliasChoices("RLHF_LOG_LEVEL", "log_level"),
        description="Log level of the service and of uvicorn.",
    )
