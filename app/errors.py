"""The documented problem types of the service: one class each, read by everything else.

Every error answer is an RFC 9457 problem document (application/problem+json). Each class
carries its HTTP status, the last part of its type URI (`slug`), its title, and the
`reason` label it counts under in ``rlhf_update_rejected_total`` (None: not counted as a
refusal). The decoders and the web layer raise them; `app.api.problems` renders them; the
probes, the update observer and the metrics read their attributes::

    ProblemError
    ├── MalformedJsonError          400 malformed-json          invalid
    ├── MalformedSafetensorsError   400 malformed-safetensors   invalid
    ├── ClientDisconnectedError     400 client-disconnected     (the client left)
    ├── MalformedRequestError       400 malformed-request       (HTTP parser, before the app)
    ├── UnauthorizedError           401 unauthorized            unauthorized
    ├── BodyTimeoutError            408 body-timeout            timeout
    ├── HeaderTimeoutError          408 header-timeout          (HTTP parser, before the app)
    ├── BodyTooLargeError           413 body-too-large          too_large
    ├── TooManyElementsError        413 too-many-elements       too_large
    ├── UriTooLongError             414 uri-too-long            (HTTP parser, before the app)
    ├── UnsupportedMediaTypeError   415 unsupported-media-type  invalid
    ├── InvalidPayloadError         422 invalid-payload         invalid
    ├── UpdateOverflowProblem       422 update-overflow         invalid
    ├── HeadersTooLargeError        431 headers-too-large       (HTTP parser, before the app)
    ├── InternalError               500 internal-error
    ├── SaturatedError              503 saturated               saturated
    │   └── UploadBudgetError       503 saturated               saturated
    ├── NotReadyError               503 not-ready
    └── HttpStatusError             any other status of the framework (about:blank)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType

from .core import InputProblem

__all__ = [
    "PROBLEM_TYPES",
    "PROBLEM_TYPE_PREFIX",
    "REJECTION_REASONS",
    "BodyTimeoutError",
    "BodyTooLargeError",
    "ClientDisconnectedError",
    "HeaderTimeoutError",
    "HeadersTooLargeError",
    "HttpStatusError",
    "InternalError",
    "InvalidPayloadError",
    "MalformedJsonError",
    "MalformedRequestError",
    "MalformedSafetensorsError",
    "NotReadyError",
    "ProblemError",
    "SaturatedError",
    "TooManyElementsError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "UpdateOverflowProblem",
    "UploadBudgetError",
    "UriTooLongError",
    "summary",
]

PROBLEM_TYPE_PREFIX = "urn:rlhf-update:problem:"
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class ProblemError(Exception):
    """A request failure of a documented problem type, with what went wrong (`detail`).

    `problems` lists every field (and index) at fault; the answer shows the first
    `app.core.MAX_LISTED_PROBLEMS` of them.
    """

    status: int = 400
    slug: str | None = None
    title: str = "Bad Request"
    reason: str | None = None
    headers: Mapping[str, str] = _NO_HEADERS

    def __init__(self, detail: str, problems: Sequence[InputProblem] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = tuple(problems)

    @property
    def type_uri(self) -> str:
        """The problem type as a URI; "about:blank" for a plain HTTP status."""
        return PROBLEM_TYPE_PREFIX + self.slug if self.slug else "about:blank"

    @property
    def label(self) -> str:
        """How logs name the problem: its slug, or the HTTP phrase of a plain status."""
        return self.slug or self.title


class MalformedJsonError(ProblemError):
    """The body is not well-formed JSON."""

    status = 400
    slug = "malformed-json"
    title = "Malformed JSON"
    reason = "invalid"


class MalformedSafetensorsError(ProblemError):
    """The body is not a well-formed safetensors file."""

    status = 400
    slug = "malformed-safetensors"
    title = "Malformed safetensors"
    reason = "invalid"


class ClientDisconnectedError(ProblemError):
    """The client left before sending the whole body: not a refusal, nobody reads it."""

    status = 400
    slug = "client-disconnected"
    title = "Client disconnected"


class MalformedRequestError(ProblemError):
    """The HTTP server's parser refused the request line or a header; the app never ran."""

    status = 400
    slug = "malformed-request"
    title = "Malformed HTTP request"


class UnauthorizedError(ProblemError):
    """The bearer token is missing, malformed or wrong."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"
    reason = "unauthorized"
    headers = MappingProxyType({"WWW-Authenticate": "Bearer"})


class BodyTimeoutError(ProblemError):
    """No byte of the body arrived for RLHF_BODY_TIMEOUT_SECONDS; the connection is closed."""

    status = 408
    slug = "body-timeout"
    title = "Request body timeout"
    reason = "timeout"
    # The rest of the body may still come; closing ends it instead of reading it.
    headers = MappingProxyType({"Connection": "close"})


class HeaderTimeoutError(ProblemError):
    """The request line and headers did not arrive within RLHF_HEADER_TIMEOUT_SECONDS."""

    status = 408
    slug = "header-timeout"
    title = "Request timeout"

    def __init__(self, limit: float) -> None:
        super().__init__(
            f"the request line and headers did not arrive within {limit:g} s "
            "(RLHF_HEADER_TIMEOUT_SECONDS)"
        )


class BodyTooLargeError(ProblemError):
    """The body is larger than RLHF_MAX_BODY_SIZE."""

    status = 413
    slug = "body-too-large"
    title = "Content too large"
    reason = "too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes (RLHF_MAX_BODY_SIZE)")


class TooManyElementsError(ProblemError):
    """The update is larger than RLHF_MAX_ELEMENTS allows."""

    status = 413
    slug = "too-many-elements"
    title = "Content too large"
    reason = "too_large"


class UriTooLongError(ProblemError):
    """The request line's target is longer than the server reads."""

    status = 414
    slug = "uri-too-long"
    title = "URI too long"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request target exceeds the limit of {limit} bytes")


class UnsupportedMediaTypeError(ProblemError):
    """The body's Content-Type is not one the endpoint reads."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"
    reason = "invalid"


class InvalidPayloadError(ProblemError):
    """The body parsed, but its fields break the request contract."""

    status = 422
    slug = "invalid-payload"
    title = "Invalid payload"
    reason = "invalid"

    def __init__(self, problems: Sequence[InputProblem], unlisted: int = 0) -> None:
        super().__init__(summary(problems, unlisted), problems)


class UpdateOverflowProblem(InvalidPayloadError):
    """Valid inputs whose update (or one of its statistics) cannot be represented."""

    slug = "update-overflow"
    title = "Update overflows"


class HeadersTooLargeError(ProblemError):
    """The request's head is larger, or has more header lines, than the server reads."""

    status = 431
    slug = "headers-too-large"
    title = "Request header fields too large"


class InternalError(ProblemError):
    """A failure of the server's own; logged with its traceback, no detail leaked."""

    status = 500
    slug = "internal-error"
    title = "Internal server error"

    def __init__(self) -> None:
        super().__init__("the server failed to process this request; it has been logged")


class SaturatedError(ProblemError):
    """The worker already runs as many updates as it may; the client should retry soon."""

    status = 503
    slug = "saturated"
    title = "Service saturated"
    reason = "saturated"
    headers = MappingProxyType({"Retry-After": "1"})


class UploadBudgetError(SaturatedError):
    """The bodies the worker holds would pass its memory budget: refused, not buffered.

    The same problem type as `SaturatedError`; the connection is closed, as the rest of
    the body has not been read.
    """

    headers = MappingProxyType({**SaturatedError.headers, "Connection": "close"})


class NotReadyError(ProblemError):
    """The service is starting or shutting down (GET /readyz)."""

    status = 503
    slug = "not-ready"
    title = "Not ready"
    headers = MappingProxyType({"Retry-After": "1"})


class HttpStatusError(ProblemError):
    """A plain HTTP status of the framework (404, 405, ...): type about:blank."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = HTTPStatus(status).phrase
        self.headers = MappingProxyType(dict(headers or {}))


def summary(problems: Sequence[InputProblem], unlisted: int = 0) -> str:
    """The first problem's message, and how many more there are.

    `unlisted` counts problems found but not worded (past the listed maximum).
    """
    first = problems[0].msg
    more = len(problems) - 1 + unlisted
    return f"{first} (and {more} more problem{'s' if more > 1 else ''})" if more else first


# Every documented problem type, as the OpenAPI document and the metrics list them.
PROBLEM_TYPES: tuple[type[ProblemError], ...] = (
    MalformedJsonError,
    MalformedSafetensorsError,
    ClientDisconnectedError,
    MalformedRequestError,
    UnauthorizedError,
    BodyTimeoutError,
    HeaderTimeoutError,
    BodyTooLargeError,
    TooManyElementsError,
    UriTooLongError,
    UnsupportedMediaTypeError,
    InvalidPayloadError,
    UpdateOverflowProblem,
    HeadersTooLargeError,
    InternalError,
    SaturatedError,
    NotReadyError,
)
# The `reason` labels of rlhf_update_rejected_total, each scraped from the start.
REJECTION_REASONS: tuple[str, ...] = tuple(
    dict.fromkeys(kind.reason for kind in PROBLEM_TYPES if kind.reason is not None)
)
