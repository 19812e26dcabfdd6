"""Service configuration, read from the environment by pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .ops.cpu_budget import available_cpus

__all__ = ["Settings", "SettingsError", "load_settings"]

LogLevel = Annotated[
    Literal["critical", "error", "warning", "info", "debug"],
    BeforeValidator(lambda level: level.lower() if isinstance(level, str) else level),
]


def _env(name: str) -> AliasChoices:
    # The variable's name, or the field's own name when a Settings is built in code.
    return AliasChoices(name, name.removeprefix("RLHF_").lower())


class Settings(BaseSettings):
    """Every knob of the service; see the README's Operations section."""

    model_config = SettingsConfigDict(populate_by_name=True, frozen=True)

    host: str = Field(
        default="127.0.0.1",
        validation_alias=_env("HOST"),
        description="Interface to bind (0.0.0.0 in the container).",
    )
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        validation_alias=_env("PORT"),
        description="TCP port to listen on.",
    )
    web_concurrency: int = Field(
        default=1,
        ge=1,
        validation_alias=_env("WEB_CONCURRENCY"),
        description="Worker processes; /metrics adds up over all of them.",
    )
    max_body_size: ByteSize = Field(
        default=ByteSize(64 * 1024 * 1024),
        gt=0,
        validation_alias=_env("RLHF_MAX_BODY_SIZE"),
        description="Largest request body (bytes, or with a unit: 64MiB); larger ones get 413.",
    )
    max_elements: int = Field(
        default=2**27,
        gt=0,
        validation_alias=_env("RLHF_MAX_ELEMENTS"),
        description="Largest B*N + B + N of an update; larger ones get 413.",
    )
    max_in_flight: int = Field(
        default_factory=available_cpus,
        ge=1,
        validation_alias=_env("RLHF_MAX_IN_FLIGHT"),
        description="Updates computed at once per worker; past it they queue, then get 503.",
    )
    max_queue: int = Field(
        default=16,
        ge=0,
        validation_alias=_env("RLHF_MAX_QUEUE"),
        description="Updates per worker that may wait for a compute slot; past it 503 at once.",
    )
    queue_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias=_env("RLHF_QUEUE_TIMEOUT_SECONDS"),
        description="Longest wait for a compute slot; an update still waiting then gets 503.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("RLHF_BODY_TIMEOUT_SECONDS"),
        description="A body with no new byte for this long gets 408 and its connection closed.",
    )
    shutdown_drain_seconds: float = Field(
        default=5.0,
        ge=0,
        validation_alias=_env("RLHF_SHUTDOWN_DRAIN_SECONDS"),
        description="After SIGTERM, seconds of serving with /readyz at 503 before shutting down.",
    )
    shutdown_timeout_seconds: int = Field(
        default=20,
        ge=0,
        validation_alias=_env("RLHF_SHUTDOWN_TIMEOUT_SECONDS"),
        description="After the drain, seconds running requests get before they are cut.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("RLHF_HEADER_TIMEOUT_SECONDS"),
        description="Seconds a connection has to send a request line and headers.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        min_length=1,
        validation_alias=_env("RLHF_API_TOKEN"),
        description="Bearer token /update requires; unset: /update is open.",
    )
    api_token_file: Path | None = Field(
        default=None,
        validation_alias=_env("RLHF_API_TOKEN_FILE"),
        description="File holding the bearer token (a mounted secret), instead of RLHF_API_TOKEN.",
    )
    log_level: LogLevel = Field(
        default="info",
        validation_alias=_env("RLHF_LOG_LEVEL"),
        description="Log level of the service and of uvicorn.",
    )

    @model_validator(mode="after")
    def _one_readable_token(self) -> Settings:
        if self.api_token is not None and self.api_token_file is not None:
            msg = "set RLHF_API_TOKEN or RLHF_API_TOKEN_FILE, not both"
            raise ValueError(msg)
        if self.api_token_file is not None:
            self.bearer_token()  # unreadable or empty: refuse to start
        return self

    def bearer_token(self) -> str | None:
        """The token /update requires, from RLHF_API_TOKEN or RLHF_API_TOKEN_FILE; or None."""
        if self.api_token is not None:
            return self.api_token.get_secret_value()
        if self.api_token_file is None:
            return None
        try:
            # A mounted secret usually ends with a newline that is no part of the token.
            token = self.api_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            msg = f"RLHF_API_TOKEN_FILE {str(self.api_token_file)!r} cannot be read ({exc})"
            raise ValueError(msg) from None
        if not token:
            msg = f"RLHF_API_TOKEN_FILE {str(self.api_token_file)!r} is empty"
            raise ValueError(msg)
        return token


class SettingsError(ValueError):
    """The environment holds a setting the service cannot run with; one line per problem."""


def load_settings() -> Settings:
    """The settings of the environment.

    Raises
    ------
    SettingsError
        Naming each variable that is not valid and what it expected, without a traceback's
        worth of Pydantic detail.
    """
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            variable = _variable_name(error["loc"])
            given = f" (got {str(error['input'])[:40]!r})" if variable else ""
            message = error["msg"].removeprefix("Value error, ")
            # A rule over several variables names them in its own message.
            lines.append(f"{variable}: {message}{given}" if variable else message)
        raise SettingsError("; ".join(lines)) from None


def _variable_name(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable behind a field's error location, or None for the model."""
    if not loc:
        return None
    field = Settings.model_fields.get(str(loc[0]))
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(loc[0])
