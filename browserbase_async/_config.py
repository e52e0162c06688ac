"""Defaults, environment resolution and the checks made before any request.

Everything here is pure: no I/O but reading ``os.environ``.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import re
import ssl as _ssl
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Final, Literal, TypeAlias
from urllib.parse import SplitResult, quote, urlsplit

from ._errors import APIResponseValidationError
from ._models import Session

DEFAULT_BASE_URL: Final = "https://api.browserbase.com"
DEFAULT_TIMEOUT: Final = 60.0
"""Seconds allowed for one attempt (connect, send, answer)."""
DEFAULT_MAX_CONNECTIONS: Final = 100
DEFAULT_CONCURRENCY: Final = 32
"""Requests in flight in one bulk run.

Enough to keep a loopback or same-region server busy at ~50 ms per answer
(~600 releases/s), while staying under the concurrency limits of the smaller
Browserbase plans, where a higher value only buys 429s.
"""


class _UseClientDefault(enum.Enum):
    TOKEN = "USE_CLIENT_DEFAULT"

    def __repr__(self) -> str:
        return self.value


USE_CLIENT_DEFAULT: Final = _UseClientDefault.TOKEN
"""A per-call ``timeout=`` left out: the client's own applies (``None`` means no limit)."""
Timeout: TypeAlias = float | Literal[_UseClientDefault.TOKEN] | None


class _Environment(Mapping[str, str]):
    """``os.environ``, read as it is at each lookup, whose ``repr()`` shows none of it.

    The default of the functions that read it: a traceback's locals (an error
    tracker's) would otherwise show every variable, the API key's included.
    """

    def __getitem__(self, name: str) -> str:
        return os.environ[name]

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)

    def __repr__(self) -> str:
        return "<os.environ>"


ENVIRONMENT: Final = _Environment()

API_KEY_ENV: Final = "BROWSERBASE_API_KEY"
BASE_URL_ENV: Final = "BROWSERBASE_BASE_URL"
PROJECT_ID_ENV: Final = "BROWSERBASE_PROJECT_ID"

# RFC 3986 "unreserved": nothing that could end the path segment, start a
# query, or be decoded by a proxy into something that does.
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9._~-]+")
SESSIONS_PATH: Final = "/v1/sessions/"
_UNADDRESSABLE: Final = frozenset({"", ".", ".."})
"""Ids no URL path can hold: a path ends, or steps up, there; percent-encoding ``.`` changes
nothing (RFC 3986 holds ``%2E`` equal to ``.``, and URL libraries decode it)."""
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def resolve_api_key(api_key: str | None, environ: Mapping[str, str] = ENVIRONMENT) -> str:
    """Return the API key given, else the one from the environment.

    Surrounding whitespace is stripped: a key read from a file (a mounted
    secret) ends in a newline.

    Raises:
        ValueError: Neither was given, the key is blank, or it holds a control
            character (the message names the key, never its value).
    """
    key = api_key if api_key is not None else environ.get(API_KEY_ENV)
    if key is None:
        raise ValueError(f"no API key: pass api_key= or set the {API_KEY_ENV} environment variable")
    key = key.strip()
    if not key:
        raise ValueError(f"the API key is empty (api_key= or {API_KEY_ENV})")
    if _CONTROL.search(key):
        raise ValueError(
            f"the API key (api_key= or {API_KEY_ENV}) contains a control character: "
            "check how it was read (a file or a variable holding more than the key?)"
        )
    return key


def resolve_base_url(
    base_url: str | None,
    *,
    allow_insecure_http: bool = False,
    environ: Mapping[str, str] = ENVIRONMENT,
) -> str:
    """Return the base URL without a trailing slash, checked for safety.

    Args:
        base_url: The URL given by the caller; ``None`` means the environment,
            then the public API.
        allow_insecure_http: Accept ``http://`` to a host that is not loopback.
        environ: Where to read ``BROWSERBASE_BASE_URL``.

    Raises:
        ValueError: The URL is not ``http(s)://host[...]``, ends in ``/v1``, or
            is plain HTTP to a non-loopback host without ``allow_insecure_http``.
    """
    url = base_url if base_url is not None else environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    parts = _split_usable("base_url", url)
    shown = redact_url(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {shown!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or a fragment, got {shown!r}")
    root = url.rstrip("/")
    if parts.path.rstrip("/").endswith("/v1"):
        raise ValueError(
            f"base_url must be the API's root, without /v1 (the paths start with it): "
            f"use {redact_url(root.removesuffix('/v1'))!r}, not {shown!r}"
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise ValueError(
            f"refusing to send the API key in clear text to {parts.hostname!r}: "
            "use https://, or pass allow_insecure_http=True"
        )
    return root


def _split_usable(name: str, url: str) -> SplitResult:
    """Split *url*, refusing what no request could use.

    A port out of range (or not a number), a bracket left open, a backslash in the
    host part (urllib reads past it; aiohttp refuses it at each request): the
    caller's mistake, said when the client is made, not a connection error at every
    call. The parser's messages quote no part of the URL but its port: no credentials.

    Raises:
        ValueError: *url* cannot be used; the message names *name*.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid URL: {exc}") from None
    if "\\" in parts.netloc:
        raise ValueError(f"{name} is not a valid URL: a backslash in its host part")
    return parts


def redact_url(url: str) -> str:
    """Return *url* with its credentials (``user:password@``), if any, replaced by ``***@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def resolve_proxy(proxy: str | None, base_url: str) -> str | None:
    """Return the proxy to reach *base_url* through, if any.

    An ``https`` base URL goes through *proxy*, else through ``HTTPS_PROXY``
    (or ``ALL_PROXY``) from the environment unless ``NO_PROXY`` names its host,
    as curl, requests and the official SDK do. The proxy only sees a tunnel
    (``CONNECT``), never the key. A plain ``http`` base URL (a loopback fake)
    never goes through a proxy: the key would travel in clear to it.

    Raises:
        ValueError: *proxy* is not an ``http(s)://host[:port]`` URL.
    """
    parts = urlsplit(base_url)
    if parts.scheme != "https":
        return None
    if proxy is not None:
        given = _split_usable("proxy", proxy)
        if given.scheme not in ("http", "https") or not given.hostname:
            raise ValueError(f"proxy must be an http(s) URL with a host, got {redact_url(proxy)!r}")
        return proxy
    proxies = urllib.request.getproxies_environment()
    found = proxies.get("https") or proxies.get("all")
    if not found or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return found


def plain_http_env_proxy(base_url: str) -> str | None:
    """Return the proxy that an aiohttp session with ``trust_env=True`` would send a plain
    ``http`` *base_url* through, from the environment (``HTTP_PROXY``, unless ``NO_PROXY``
    names its host); ``None`` for an ``https`` one, or none found.

    It asks what aiohttp itself asks (urllib's ``getproxies`` and ``proxy_bypass``).
    """
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        return None
    found = urllib.request.getproxies().get("http")
    if not found or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return found


def resolve_ssl(ssl: _ssl.SSLContext | str | os.PathLike[str] | None) -> _ssl.SSLContext | bool:
    """Return what verifies the server's certificate: a context, or ``True`` for system trust.

    Args:
        ssl: An `ssl.SSLContext`, or the path of a CA bundle (PEM) to trust
            instead of the system's; ``None``: the system's trust store.

    Raises:
        ValueError: The CA bundle cannot be read, or *ssl* is of another type.
    """
    if ssl is None:
        return True
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    if isinstance(ssl, str | os.PathLike):
        try:
            return _ssl.create_default_context(cafile=os.fspath(ssl))
        except (OSError, _ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"cannot read the CA bundle {os.fspath(ssl)!r}: {reason}") from None
    raise ValueError(f"ssl must be an SSLContext or a CA bundle path, got {type(ssl).__name__}")


def is_loopback(host: str) -> bool:
    """Tell whether *host* names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_session_id(session_id: object) -> str:
    """Return *session_id* (or a `Session`'s id) if it is safe to put in a URL path.

    Raises:
        ValueError: It is neither a string nor a `Session`, is empty, ``.`` or
            ``..``, or has a character outside RFC 3986 "unreserved"
            (``A-Z a-z 0-9 - . _ ~``).
    """
    if not isinstance(session_id, str):
        if isinstance(session_id, Session):
            return check_session_id(session_id.id)
        raise ValueError(f"session id must be a str or a Session, got {type(session_id).__name__}")
    if session_id in (".", "..") or not _SESSION_ID.fullmatch(session_id):
        raise ValueError(
            f"invalid session id {session_id[:80]!r}: "
            "use only letters, digits and '-', '.', '_', '~' (and not '.' or '..')"
        )
    return session_id


def session_path(session_id: str) -> str:
    """Return the path of the session *session_id*, its id percent-encoded where needed.

    A caller's id was checked (`check_session_id`) and goes in as it is; an id
    that the server gave may hold any character, and is never put into a URL raw.

    Raises:
        ValueError: No URL can address *session_id* (empty, ``.`` or ``..``).
    """
    if session_id in _UNADDRESSABLE:
        raise ValueError(f"session id {session_id!r}: no URL can address it")
    if _SESSION_ID.fullmatch(session_id) is not None:
        return SESSIONS_PATH + session_id
    return SESSIONS_PATH + quote(session_id, safe="")


def server_session_id(session_id: str) -> str:
    """Return *session_id*, an id the server gave, if a URL can address it (percent-encoded).

    Such an id is released whatever characters it holds (`session_path`
    encodes them); only one that no path can hold is refused.

    Raises:
        APIResponseValidationError: *session_id* is empty, ``.`` or ``..``.
    """
    if session_id in _UNADDRESSABLE:
        raise APIResponseValidationError(
            f"the server gave the session id {session_id!r}, which no URL can address: "
            "no client can release that session through the API; it ends at its timeout",
            body="",
        )
    return session_id


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Refuse a number that must be positive (and finite): a count or seconds.

    Raises:
        ValueError: *value* is not a number (a ``bool`` is not one), is NaN or
            infinite, below zero, or zero where that is not allowed.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_seconds(name: str, value: object) -> None:
    """Refuse a duration that is not a finite number of seconds >= 0.

    Raises:
        ValueError: *value* is not an ``int`` or a ``float`` (a ``bool`` or a
            ``str`` is not one), or is NaN, infinite or negative.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def check_positive_int(name: str, value: object) -> None:
    """Refuse anything but a whole number above zero (a ``bool`` or a ``float`` is not one).

    Raises:
        ValueError: *value* is not an ``int``, or is below one.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number > 0, got {value!r}")


def check_timeout(timeout: Timeout) -> None:
    """Refuse a timeout that is not ``None``, the client's default, or finite seconds above zero.

    Raises:
        ValueError: *timeout* is not a number, or is zero, negative, NaN or infinite.
    """
    if timeout is None or timeout is USE_CLIENT_DEFAULT:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf
    ):
        raise ValueError(f"timeout must be > 0 seconds or None (finite), got {timeout!r}")
