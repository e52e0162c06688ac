"""The aiohttp seam: the only module that does I/O.

One `Transport.request` sends a request and returns the status, headers and
body, or raises `APIConnectionError` / `APITimeoutError`. Statuses are not
judged here; that is `_errors.for_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import re
import ssl as _ssl
import sys
from collections.abc import AsyncGenerator, Mapping
from typing import Final, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import attrs
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from ._config import USE_CLIENT_DEFAULT, Timeout, plain_http_env_proxy, redact_url
from ._errors import (
    APICertificateError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    BrowserbaseError,
    ProxyAuthenticationError,
    client_closed,
    excerpt,
)
from ._version import __version__

_USERINFO: Final = re.compile(r"//[^/@\s]*@")
"""The credentials of a URL (``//user:password@``), to be kept out of messages."""
_SCRUBBED_KEY_LENGTH: Final = 8
"""Keys at least this long are masked in a lower layer's text."""
USER_AGENT: Final = (
    f"browserbase-async/{__version__} aiohttp/{aiohttp.__version__} "
    f"Python/{platform.python_version()}"
)
API_KEY_HEADER: Final = "X-BB-API-Key"
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
"""The longest answer read: a list of about 100,000 sessions fits."""


class Response(NamedTuple):
    """What came back: the status, the headers (case-insensitive) and the raw body.

    A named tuple, not an attrs class: one is made per request, and a tuple is
    made at half the cost of a frozen attrs instance.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


@attrs.define
class Transport:
    """Sends requests through one aiohttp ``ClientSession``, created on first use.

    A session passed in by the caller is used as it is and never closed here.
    ``base_url`` may hold credentials: only its redacted form, ``shown_url``,
    goes into a message.
    """

    base_url: str = attrs.field(repr=False)
    api_key: str = attrs.field(repr=False)
    timeout: float | None
    max_connections: int
    session: aiohttp.ClientSession | None = attrs.field(default=None, repr=False)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    proxy: str | None = attrs.field(default=None, repr=False)
    """The proxy to tunnel through (``_config.resolve_proxy``); it may hold credentials."""
    ssl: _ssl.SSLContext | bool = attrs.field(default=True, repr=False)
    """What verifies the server's certificate (``_config.resolve_ssl``)."""
    closed: bool = attrs.field(default=False, init=False)
    shown_url: str = attrs.field(init=False)
    _owns_session: bool = attrs.field(init=False, repr=False)
    _get_headers: dict[str, str] = attrs.field(init=False, repr=False)
    _post_headers: dict[str, str] = attrs.field(init=False, repr=False)
    _echo: bytes | None = attrs.field(init=False, repr=False)
    """The key as an answer would quote it back, to be masked there (see `_answer`)."""
    _timeout: aiohttp.ClientTimeout = attrs.field(init=False, repr=False)
    env_proxied: bool = attrs.field(init=False, repr=False)
    """A caller's session with ``trust_env=True`` and a plain ``http`` base URL: aiohttp
    would proxy it from the environment, whatever ``proxy=`` says (see `check_env_proxy`)."""
    _wire: set[asyncio.Task[object]] = attrs.field(init=False, repr=False, factory=set)
    """The tasks of our requests on the wire: `aclose` ends them (see `request`)."""
    _cut: set[asyncio.Task[object]] = attrs.field(init=False, repr=False, factory=set)
    _watch: AsyncGenerator[None, None] | None = attrs.field(init=False, repr=False, default=None)
    """Closes our own session when the client's event loop shuts down (see `watch_loop`)."""

    def __attrs_post_init__(self) -> None:
        self._owns_session = self.session is None
        self._get_headers = {
            API_KEY_HEADER: self.api_key,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._post_headers = {**self._get_headers, "Content-Type": "application/json"}
        long_enough = len(self.api_key) >= _SCRUBBED_KEY_LENGTH
        self._echo = self.api_key.encode() if long_enough else None
        self._timeout = aiohttp.ClientTimeout(total=self.timeout)
        self.shown_url = redact_url(self.base_url)
        self.env_proxied = (
            self.session is not None
            and self.session.trust_env
            and self.base_url.startswith("http://")
        )

    def check_env_proxy(self) -> None:
        """Refuse to let a caller's ``trust_env`` session carry the key in clear to a proxy.

        Such a session sends a plain ``http`` URL through ``HTTP_PROXY``: the key
        would reach the proxy in clear, which a plain ``http`` base URL never does
        here. aiohttp reads the environment at each request, so this is asked at
        each request too, not only when the client is made.

        Raises:
            ValueError: The environment names a proxy for the base URL's host.
        """
        if not self.env_proxied or (proxy := plain_http_env_proxy(self.base_url)) is None:
            return
        host = urlsplit(self.base_url).hostname
        raise ValueError(
            f"refusing to send the API key in clear text to the proxy {redact_url(proxy)}: "
            f"the http_session given has trust_env=True, so aiohttp would send the plain-http "
            f"base URL {self.shown_url} through HTTP_PROXY; add {host} to NO_PROXY, or pass "
            "a session with trust_env=False (or none)"
        )

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            if self.closed:
                # A call that wakes after the close must not open a session nobody closes.
                raise client_closed()
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=self._timeout,
            )
        return self.session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Response:
        """Send one request and read the whole answer, up to ``max_response_bytes``.

        Redirects are not followed: the API never redirects, and a redirect
        followed would carry the key to wherever it points.

        Args:
            method: ``GET`` or ``POST``.
            path: The path below the base URL, starting with ``/``; already safe.
            body: A JSON body, already encoded.
            params: Query parameters.
            timeout: Seconds for this request, instead of the client's.

        Raises:
            APITimeoutError: No full answer within the timeout.
            APIConnectionError: The connection failed or dropped, or the client
                closed under the request.
            APIResponseValidationError: The answer is longer than ``max_response_bytes``,
                or it is a ``POST``'s 2xx whose body broke off (its ``status_code`` says so).
            RuntimeError: The client is closed.
        """
        if timeout is USE_CLIENT_DEFAULT:
            timeout, limit = self.timeout, self._timeout
        else:
            limit = aiohttp.ClientTimeout(total=timeout)
        session = self._session()  # a closed client's RuntimeError, as it is
        # The caller's own exception, if it calls from an except block: aiohttp's may be chained
        # to it, and it is not ours to scrub.
        callers = sys.exception()
        wire, task = self._wire, self._on_the_wire()
        status = 0  # the answer's, once its head is read
        try:
            async with session.request(
                method,
                self.base_url + path,
                data=body,
                params=params,
                # Not a local of this frame: a traceback's locals (an error tracker's) would
                # show the key.
                headers=self._get_headers if body is None else self._post_headers,
                timeout=limit,
                allow_redirects=False,
                proxy=self.proxy,
                ssl=self.ssl,
            ) as answer:
                status, answered = answer.status, answer.headers
                # istr keys: the lookups skip case folding, on every answer.
                length = answered.get(hdrs.CONTENT_LENGTH)
                declared = None if length is None else int(length)
                try:
                    if (
                        declared is not None
                        and declared <= self.max_response_bytes
                        and hdrs.CONTENT_ENCODING not in answered
                    ):
                        # The length is known and the body arrives as it is: no bound to watch.
                        return self._answer(status, answered, await answer.read())
                    return self._answer(
                        status, answered, await self._read_bounded(answer, declared)
                    )
                except (aiohttp.ClientPayloadError, TimeoutError):
                    if method != "POST" or not 200 <= status < 300:
                        raise  # a read is sent again; so is a refusal
                    # The status is the server's word that it acted: a 2xx to a release is
                    # never a failure (see `Releaser.confirm`), whatever became of its body.
                    raise _broke_off(method, path, status) from None
        except TimeoutError:
            raise APITimeoutError(f"{method} {path}: no answer within {timeout} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise APICertificateError(
                f"{method} {self.shown_url}{path}: the server's TLS certificate failed "
                f"verification ({self._scrub(str(exc.certificate_error))}): not retried; if a "
                "private CA signed it, pass its bundle with ssl= (or --ca-file)"
            ) from None
        except aiohttp.ClientError as exc:
            failed: APIError
            if isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status == 407:
                # Wrong or missing credentials fail the same way every time: not a connection
                # error (those are retried). aiohttp's exception holds the Proxy-Authorization
                # sent: it is raised below, out of this block, so as not to be the context.
                failed = self._proxy_refused(method, path, exc)
            else:
                failed = APIConnectionError(self._connection_failed(method, path, exc))
                if self._may_chain(exc, callers):
                    raise failed from exc
            # aiohttp's exception may quote a URL with its credentials (the base URL's, the
            # proxy's), carry them in its request's headers, or quote the server's bytes that
            # echo the key: it is then kept neither as the cause nor as the context, which a
            # raise in this block would set.
        except APIError:
            raise
        except Exception as exc:
            # Whatever else the stack raises (aiohttp's ValueError for a header, an
            # OverflowError of a timer) is a failed request, in our terms, not a crash.
            reason = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            raise APIError(f"{method} {path}: the request failed: {reason}") from None
        except asyncio.CancelledError:
            # Our own cut (`aclose`, which ends every request on the wire before it closes the
            # pool) is not a cancellation of the caller's task, and must not look like one to
            # its TaskGroup: the caller's unless it cancelled the task too.
            if task in self._cut:
                self._cut.discard(task)
                if task.uncancel() == 0:
                    if method == "POST" and 200 <= status < 300:
                        raise _broke_off(method, path, status) from None  # it acted
                    raise APIConnectionError(f"{method} {path}: the client was closed") from None
            raise
        finally:
            wire.discard(task)
        raise failed

    def _on_the_wire(self) -> asyncio.Task[object]:
        """Count the running task as on the wire: `aclose` ends it.

        Our requests are ended one by one: a caller's session is not ours to close,
        and aiohttp's close of our own leaves a body being read waiting for its
        timeout (for ever, without one).

        Raises:
            RuntimeError: The client is closed.
        """
        if self.closed:
            raise client_closed()
        task = asyncio.current_task()
        assert task is not None
        self._wire.add(task)
        return task

    def _answer(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> Response:
        """The answer, with the key masked wherever the server quoted it back.

        A debugging proxy's page, an echo service behind a wrong base URL or a
        ``Location`` built from the request quote the key: that text would go into
        an error's message, ``body`` and ``headers``, and the log. Only the headers of
        an answer that is not a 2xx are looked at: those of a 2xx go into no error.
        """
        echo = self._echo
        if echo is None:
            return Response(status, headers, body)
        if echo in body:
            body = body.replace(echo, b"***")
        if status >= 300 and any(self.api_key in value for value in headers.values()):
            masked = CIMultiDict(
                (name, value.replace(self.api_key, "***")) for name, value in headers.items()
            )
            headers = CIMultiDictProxy(masked)
        return Response(status, headers, body)

    def _connection_failed(self, method: str, path: str, exc: aiohttp.ClientError) -> str:
        """Say which URL could not be reached, and why, in the user's terms."""
        url = self.shown_url + path
        if type(exc) is aiohttp.ClientConnectorError:
            # aiohttp's own text names "ssl:default" even for http://, which misleads.
            return f"{method} {url}: cannot connect to {self.shown_url}: {exc.strerror}"
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return f"{method} {url}: cannot connect to the proxy: {exc.strerror}"
        reason = self._scrub(str(exc)) or "connection failed"
        return f"{method} {url}: {type(exc).__name__}: {reason}"

    def _proxy_refused(
        self, method: str, path: str, exc: aiohttp.ClientHttpProxyError
    ) -> ProxyAuthenticationError:
        """The proxy's 407 to our ``CONNECT``, naming the proxy (never its credentials)."""
        proxy = self.proxy
        if proxy is None:  # a caller's session that found one in the environment itself
            named, given = "the proxy", False
        else:
            named, given = f"the proxy {redact_url(proxy)}", "@" in urlsplit(proxy).netloc
        then = (
            "the credentials in its URL were refused: check them"
            if given
            else "it asks for credentials: give them in its URL, http://user:password@host:port"
        )
        return ProxyAuthenticationError(
            f"{method} {self.shown_url}{path}: {named} answered 407 Proxy Authentication "
            f"Required: not retried; {then} (proxy= or --proxy, else HTTPS_PROXY)",
            status_code=exc.status,
            body="",
            headers=exc.headers or CIMultiDictProxy(CIMultiDict()),
        )

    def _may_chain(self, exc: aiohttp.ClientError, callers: BaseException | None) -> bool:
        """Scrub aiohttp's *exc* (see `_scrub_key`); whether it may then be chained to ours.

        Not if its text, or that of an exception chained to it, may hold a secret:
        a URL with credentials (the base URL's, the proxy's), or the key that the
        server echoed back into bytes aiohttp could not parse, and quotes.
        """
        chain, key = _scrub_key(exc, callers), self.api_key
        quoted = len(key) >= _SCRUBBED_KEY_LENGTH and any(
            key in str(link) or key in repr(link) for link in chain
        )
        return not (quoted or self.shown_url != self.base_url or _USERINFO.search(str(exc)))

    def _scrub(self, text: str) -> str:
        """*text* (a lower layer's, which may quote the server) as one safe line.

        Neither the key nor the credentials of the base URL or the proxy. (A key
        of a few characters, a test's, is left alone: it would mask common words.)
        """
        key = self.api_key
        text = text.replace(key, "***") if len(key) >= _SCRUBBED_KEY_LENGTH else text
        return excerpt(_USERINFO.sub("//***@", text))

    async def _read_bounded(self, answer: aiohttp.ClientResponse, declared: int | None) -> bytes:
        """Read an answer of unknown or compressed length, dropping it past the limit.

        A *declared* length (``Content-Length``) over the limit fails before reading.
        """
        limit = self.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        if declared is None or declared <= limit:
            async for chunk in answer.content.iter_any():
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        # Dropped, not drained: an answer without end would otherwise be read to its end.
        answer.close()
        method, url = answer.method, answer.url
        raise APIResponseValidationError(
            f"{method} {url.path}: the answer is longer than max_response_bytes "
            f"({limit} bytes); it was dropped",
            body="",
            status_code=answer.status,
        )

    async def aclose(self) -> None:
        """Close the ``ClientSession`` if it is ours; a caller's is left open.

        No request is sent after this, through either.
        """
        self.closed = True
        for task in self._wire:
            self._cut.add(task)
            task.cancel()
        self._wire.clear()
        if self._watch is not None:
            watch, self._watch = self._watch, None
            await watch.aclose()  # closes our session, as below
        await self._close_own_session()

    async def _close_own_session(self) -> None:
        if self._owns_session and self.session is not None:
            session, self.session = self.session, None
            await session.close()

    def watch_loop(self) -> None:
        """Close our own session, and its sockets, when the running event loop shuts down.

        A client used by one ``asyncio.run`` and never closed (a module-level
        client, a sync wrapper) would otherwise leave that loop's keep-alive
        sockets open for ever: ``asyncio.run`` closes the async generators of
        its loop before it closes the loop, and this one closes the session then.
        """
        if not self._owns_session:
            return
        self._watch = self._until_the_loop_ends()
        # Run to its `yield` now: that registers it with the loop, which will close it.
        with contextlib.suppress(StopIteration):
            self._watch.asend(None).send(None)

    async def _until_the_loop_ends(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_own_session()

    def owns_open_session(self) -> bool:
        """Whether an aiohttp ``ClientSession`` of ours is still open."""
        return self._owns_session and self.session is not None and not self.session.closed


def _broke_off(method: str, path: str, status: int) -> APIResponseValidationError:
    """The error of a ``POST`` whose 2xx broke off after its status: the server accepted it."""
    return APIResponseValidationError(
        f"{method} {path}: the answer broke off after its status {status}: "
        "the server accepted the request",
        body="",
        status_code=status,
    )


def _scrub_key(exc: BaseException, callers: BaseException | None) -> list[BaseException]:
    """Take the request's headers, and so the key, out of aiohttp's exceptions in *exc*'s chain.

    aiohttp keeps the request's headers in ``request_info``, which its
    exceptions' ``repr()`` shows, and in the locals of its frames, which a
    traceback with locals shows (an error tracker records them): ours chain
    them as a cause, and the key must appear in no exception of an error's
    chain. Their frames are dropped; ours, from outside the request, and the
    exception *callers* handles (with its own chain), are left as they are.

    Returns:
        The lower layer's exceptions in the chain, *exc* first.
    """
    pending, seen, chain = [exc], set(), []
    while pending:
        link = pending.pop()
        if id(link) in seen or link is callers or isinstance(link, BrowserbaseError):
            continue
        seen.add(id(link))
        chain.append(link)
        link.__traceback__ = None
        info = getattr(link, "request_info", None)
        if isinstance(info, aiohttp.RequestInfo):
            clean = info._replace(headers=_without_key(info.headers))
            link.request_info = clean  # type: ignore[attr-defined]
            link.args = tuple(clean if arg is info else arg for arg in link.args)
        pending += [chained for chained in (link.__cause__, link.__context__) if chained]
    return chain


def _without_key(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    kept = CIMultiDict(headers)
    for secret in (API_KEY_HEADER, hdrs.PROXY_AUTHORIZATION):
        if secret in kept:
            kept[secret] = "<redacted>"
    return CIMultiDictProxy(kept)
