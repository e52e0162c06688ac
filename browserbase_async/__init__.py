"""An async client for the Browserbase sessions API, made to close many sessions at once."""

from ._bulk import BulkReleaseAborted, BulkReleaseReport, ReleaseResult
from ._client import SessionsAPI
from ._errors import (
    APICertificateError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BrowserbaseError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    ProxyAuthenticationError,
    RateLimitError,
    UnprocessableEntityError,
)
from ._flow import FlowStats
from ._models import CreatedSession, Region, Session, SessionStatus
from ._retry import RetryPolicy
from ._version import __version__

__all__ = [
    "APICertificateError",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BrowserbaseError",
    "BulkReleaseAborted",
    "BulkReleaseReport",
    "ConflictError",
    "CreatedSession",
    "FlowStats",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProxyAuthenticationError",
    "RateLimitError",
    "Region",
    "ReleaseResult",
    "RetryPolicy",
    "Session",
    "SessionStatus",
    "SessionsAPI",
    "UnprocessableEntityError",
    "__version__",
]
