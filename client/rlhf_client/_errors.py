"""The client's exceptions: one base class, a branch per way a call can fail.

RLHFClientError
├── APIConnectionError            the server could not be reached, or the connection broke
│   └── APITimeoutError           connect, read or write timed out
├── APIResponseError              a 2xx answer the client cannot read
├── UpdateTooLargeError           refused before uploading: beyond the limits /info states
└── APIStatusError                the server answered with an error status (problem+json)
    ├── BadRequestError           400
    ├── AuthenticationError       401
    ├── ContentTooLargeError      413
    ├── UnsupportedMediaTypeError 415
    ├── UnprocessableEntityError  422
    └── InternalServerError       5xx
        └── ServiceUnavailableError 503
"""

from __future__ import annotations

from typing import Any

import httpx2

__all__ = [
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ContentTooLargeError",
    "InternalServerError",
    "RLHFClientError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "UpdateTooLargeError",
]


class RLHFClientError(Exception):
    """Base class of every error the client raises."""


class UpdateTooLargeError(RLHFClientError, ValueError):
    """The update cannot fit the limits the service states at GET /info; nothing was sent."""


class APIConnectionError(RLHFClientError):
    """The request did not get an HTTP answer (after any retries)."""


class APITimeoutError(APIConnectionError):
    """The request timed out (after any retries)."""


class APIResponseError(RLHFClientError):
    """The server answered 2xx with a body that is not a valid /update or /healthz answer,
    or with new weights beyond the range of the dtype the weights were sent in."""

    def __init__(self, message: str, response: httpx2.Response) -> None:
        super().__init__(message)
        self.response = response


class APIStatusError(RLHFClientError):
    """The server answered with an error status; `problem` is its problem+json body."""

    def __init__(
        self, response: httpx2.Response, problem: dict[str, Any], request_id: str | None
    ) -> None:
        self.response = response
        self.status_code = response.status_code
        self.problem = problem
        self.request_id = request_id
        self.hint: str | None = None
        super().__init__(str(self))

    @property
    def type(self) -> str:
        return str(self.problem.get("type", "about:blank"))

    @property
    def title(self) -> str:
        return str(self.problem.get("title", ""))

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The problem's `errors` list: one `{"loc": [...], "msg": "..."}` per problem found."""
        errors = self.problem.get("errors")
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    def __str__(self) -> str:
        text = f"{self.status_code} {self.title}".rstrip()
        if self.detail:
            text += f": {self.detail}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        if self.hint:
            text += f"; {self.hint}"
        return text


class BadRequestError(APIStatusError):
    """400: the body was malformed."""


class AuthenticationError(APIStatusError):
    """401: the bearer token was missing or wrong."""


class ContentTooLargeError(APIStatusError):
    """413: the body exceeds the server's size limit.

    When the body was JSON, `hint` says to send safetensors, which takes 8 bytes per
    float64 (4 per float32) against about 20 as JSON text.
    """


class UnsupportedMediaTypeError(APIStatusError):
    """415: the server does not read this Content-Type."""


class UnprocessableEntityError(APIStatusError):
    """422: the payload breaks the contract, or the update overflows float64."""


class InternalServerError(APIStatusError):
    """5xx: the server failed (after any retries)."""


class ServiceUnavailableError(InternalServerError):
    """503: the server is saturated (after any retries)."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    413: ContentTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    503: ServiceUnavailableError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The exception class for an error status."""
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    return InternalServerError if status_code >= 500 else APIStatusError
