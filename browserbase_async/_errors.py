"""The exceptions the library raises on purpose, and the status that maps to each.

Names match the official Browserbase SDK, so that ``except`` clauses carry over::

    BrowserbaseError                    base of everything raised on purpose
    └── APIError
        ├── APIConnectionError          could not connect / connection dropped
        │   ├── APICertificateError     the server's TLS certificate failed verification
        │   └── APITimeoutError         a request or the whole call ran out of time
        ├── APIResponseValidationError  2xx whose body is not the expected JSON shape
        └── APIStatusError              any non-2xx: .status_code, .body, .headers
            ├── BadRequestError             400
            ├── AuthenticationError         401
            ├── PermissionDeniedError       403
            ├── NotFoundError               404
            ├── ProxyAuthenticationError    407 (a proxy's, never retried)
            ├── ConflictError               409
            ├── UnprocessableEntityError    422
            ├── RateLimitError              429
            └── InternalServerError         >= 500

Caller mistakes found before any request (a bad session id, a missing key)
raise `ValueError` instead. No message here ever holds the API key: messages
are built from the response, and requests' headers are never kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final

EXCERPT_CHARS: Final = 200
PROXY_CREDENTIALS_HINT: Final = (
    "a proxy asks for credentials: not retried; give them in the proxy's URL, "
    "http://user:password@host:port, with proxy= (--proxy) or HTTPS_PROXY"
)
_BIDI_CONTROLS: Final = (0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_ESCAPES: Final = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), *_BIDI_CONTROLS)
}
"""Control characters (C0, DEL, C1, bidi overrides), each spelt as its escape.

Server text reaches terminals through messages and logs: an escape sequence
in it must not retitle the window, clear the screen or reorder the line.
"""
_SECRET_VALUES: Final = re.compile(
    r'("(?:connectUrl|seleniumRemoteUrl|signingKey)"\s*:\s*)"(?:[^"\\]|\\.)*"?'
    r"|(signingKey=)[^&\"\s]*",
    re.IGNORECASE,
)
"""A session's connection fields in an answer's text, and the key in a URL's query: an
answer of a shape the client cannot read (a list, an envelope, broken JSON) still holds them."""


class BrowserbaseError(Exception):
    """Base class of every exception the library raises on purpose."""


class APIError(BrowserbaseError):
    """A call to the API did not give the expected answer."""

    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIConnectionError(APIError):
    """The connection could not be made, or dropped before the answer arrived."""


class APICertificateError(APIConnectionError):
    """The server's TLS certificate failed verification: fatal, never retried.

    A certificate does not fix itself between attempts: the base URL points
    somewhere else than meant, or the server's CA is a private one (pass it
    with ``ssl=``). A bulk run ends at the first, as at a 401.
    """


class APITimeoutError(APIConnectionError):
    """A request, or the whole call, ran out of time."""


class APIResponseValidationError(APIError):
    """A 2xx answer whose body is not the JSON shape the API describes (or an answer too long).

    Attributes:
        body: A short excerpt of the body, for the log.
        status_code: The answer's HTTP status, when the error is about a whole
            answer (``None`` when it is about a decoded value).
    """

    body: str
    status_code: int | None

    def __init__(self, message: str, *, body: str, status_code: int | None = None) -> None:
        super().__init__(f"{message} (body: {body})" if body else message)
        self.body = body
        self.status_code = status_code

    @property
    def accepted(self) -> bool:
        """Whether the answer was a 2xx: the server did what was asked, whatever its body."""
        return self.status_code is not None and 200 <= self.status_code < 300


class APIStatusError(APIError):
    """The API answered with a status that is not 2xx.

    Attributes:
        status_code: The HTTP status.
        body: The decoded JSON error body, else a short excerpt of the text.
        headers: The response's headers (never the request's).
    """

    status_code: int
    body: object
    headers: Mapping[str, str]

    def __init__(
        self, message: str, *, status_code: int, body: object, headers: Mapping[str, str]
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.headers = headers


class BadRequestError(APIStatusError):
    """400: the request was refused as malformed, or not applicable to the session."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not act on this resource."""


class NotFoundError(APIStatusError):
    """404: no such session (or not in this key's projects)."""


class ProxyAuthenticationError(APIStatusError):
    """407: a proxy on the way refused the request for want of the right credentials.

    Fatal, never retried: the next attempt would meet the same refusal (and a
    proxy may lock an account that keeps failing). A bulk run ends at the first,
    as at a 401. The credentials go in the proxy's URL
    (``http://user:password@host:port``), in ``proxy=``, ``--proxy`` or
    ``HTTPS_PROXY``.
    """


class ConflictError(APIStatusError):
    """409: the request conflicts with the session's current state."""


class UnprocessableEntityError(APIStatusError):
    """422: the request is well-formed but its values are refused."""


class RateLimitError(APIStatusError):
    """429: the plan's rate or concurrency limit was reached."""


class InternalServerError(APIStatusError):
    """A status of 500 or more: the server failed."""


_BY_STATUS: Final[Mapping[int, type[APIStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    407: ProxyAuthenticationError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def for_status(status: int, headers: Mapping[str, str], body: bytes) -> APIStatusError | None:
    """Return the exception for an answer, or ``None`` when *status* is 2xx.

    A pure function: it only reads its arguments.

    Args:
        status: The HTTP status of the answer.
        headers: The answer's headers.
        body: The answer's raw body.

    Returns:
        The exception to raise, of the class for *status*, with the server's
        own message in its text; ``None`` for a 2xx status.
    """
    if 200 <= status < 300:
        return None
    if status >= 500:
        kind: type[APIStatusError] = InternalServerError
    else:
        kind = _BY_STATUS.get(status, APIStatusError)
    decoded, detail = _decode_error_body(body)
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown Status"
    if 300 <= status < 400:
        # Followed, a redirect would carry the key to wherever it points; the API never sends one.
        location = excerpt(headers.get("Location", "")) or "no Location given"
        detail = f"a redirect to {location}, not followed (the API never redirects): check base_url"
    elif status == 407:
        detail = f"{detail}; {PROXY_CREDENTIALS_HINT}".lstrip("; ")
    elif status == 404 and not _is_api_error(decoded):
        detail = f"{detail} (not the API's JSON error: is base_url the API's root?)".lstrip()
    message = f"{status} {reason}: {detail}" if detail else f"{status} {reason}"
    return kind(message, status_code=status, body=decoded, headers=headers)


def _is_api_error(decoded: object) -> bool:
    """Tell whether an error body has the API's shape: a JSON object with a message."""
    return isinstance(decoded, dict) and isinstance(decoded.get("message"), str)


def _decode_error_body(body: bytes) -> tuple[object, str]:
    text = body.decode("utf-8", errors="replace")
    try:
        decoded: object = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deep for the parser
        return excerpt(text), excerpt(text)
    if isinstance(decoded, dict):
        for key in ("message", "error", "detail"):
            value = decoded.get(key)
            if isinstance(value, str) and value:
                return decoded, excerpt(value)
    return decoded, excerpt(text)


def may_have_acted(failure: BaseException) -> bool:
    """Whether the server may have acted on a request that failed so: no answer came (a
    connection error, a timeout) or a 5xx, but not a certificate refused before any byte."""
    return isinstance(failure, APIConnectionError | InternalServerError) and not isinstance(
        failure, APICertificateError
    )


def excerpt(text: str) -> str:
    """Return *text* on one line, control characters escaped, cut to `EXCERPT_CHARS` characters.

    A session's signing key, and the connection URLs that carry it, are masked: an
    excerpt goes into messages and logs.
    """
    flat = printable(" ".join(text.split()))
    # Masked once cut: the cut is short, and a value it breaks off is masked to its end.
    if len(flat) <= EXCERPT_CHARS:
        return _SECRET_VALUES.sub(_masked, flat)
    return _SECRET_VALUES.sub(_masked, flat[: EXCERPT_CHARS - 1]) + "…"


def _masked(found: re.Match[str]) -> str:
    field = found.group(1)
    return f'{field}"***"' if field is not None else f"{found.group(2)}***"


def printable(text: str) -> str:
    """Return *text* with every control character spelt as its escape (``\\x1b``)."""
    return text.translate(_ESCAPES)


class ClientClosedError(RuntimeError):
    """A call made to, or still waiting in, a closed `SessionsAPI` (a `RuntimeError`)."""


def client_closed() -> ClientClosedError:
    """The error of a call made to, or still waiting in, a closed `SessionsAPI`."""
    return ClientClosedError("this SessionsAPI is closed; create a new one")
