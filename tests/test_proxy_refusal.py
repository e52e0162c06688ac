"""A proxy that answers 407 (Proxy Authentication Required): a configuration error, said at
once and never retried, for a release, a bulk run and a create. A raw proxy on loopback."""

from __future__ import annotations

import asyncio
import base64
import traceback
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from browserbase_async import (
    APIConnectionError,
    ProxyAuthenticationError,
    RetryPolicy,
    SessionsAPI,
)

from .test_cli import run_cli
from .test_networks import dead_port

pytestmark = pytest.mark.asyncio

KEY = "bb_live_not-a-real-key-0123456789"
CREDENTIALS = "scraper:proxy-secret"
# Retries that would be made at once, many of them: a refusal that is retried shows.
EAGER = RetryPolicy(max_attempts=5, initial_delay=0.0, max_delay=0.0)
REFUSAL = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="corp"\r\n'
    b"Content-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class RefusingProxy:
    """A proxy of a few lines on loopback that answers 407 to every request it is sent,
    ``CONNECT`` or plain, and keeps each request's head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def __aenter__(self) -> RefusingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self.url = f"http://{self.address}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(REFUSAL)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[RefusingProxy]:
    async with RefusingProxy() as refusing:
        yield refusing


def told(error: BaseException) -> str:
    """Everything an error says: its traceback, and each link of its chain with its request."""
    chain, todo = [], [error]
    while todo:
        if (link := todo.pop()) is not None and link not in chain:
            chain.append(link)
            todo += [link.__cause__, link.__context__]
    links = " ".join(f"{link!r} {getattr(link, 'request_info', '')!r}" for link in chain)
    return "".join(traceback.format_exception(error)) + links


def through(proxy: RefusingProxy, *, credentials: bool = True) -> SessionsAPI:
    """A client of an https API (nothing listens there) reached through *proxy*."""
    url = proxy.url.replace("//", f"//{CREDENTIALS}@") if credentials else proxy.url
    return SessionsAPI(KEY, base_url=f"https://127.0.0.1:{dead_port()}", proxy=url, retry=EAGER)


async def test_a_407_to_connect_fails_at_once_naming_the_proxy_not_its_credentials(
    proxy: RefusingProxy,
) -> None:
    async with through(proxy) as api:
        with pytest.raises(ProxyAuthenticationError) as caught:
            await api.release("a-session")
    assert len(proxy.heads) == 1  # no retry, no check with retrieve
    assert proxy.heads[0].startswith(b"CONNECT ")
    error = caught.value
    assert not isinstance(error, APIConnectionError)  # not a blip: retrying cannot help
    assert error.status_code == 407
    assert error.headers["Proxy-Authenticate"] == 'Basic realm="corp"'
    message = str(error)
    assert f"the proxy http://***@{proxy.address} answered 407" in message
    assert "credentials in its URL were refused" in message
    assert "not retried" in message
    everything = told(error)
    assert "proxy-secret" not in everything
    assert base64.b64encode(CREDENTIALS.encode()).decode() not in everything
    assert KEY not in everything


async def test_a_proxy_that_got_no_credentials_is_said_to_want_some(
    proxy: RefusingProxy,
) -> None:
    async with through(proxy, credentials=False) as api:
        with pytest.raises(ProxyAuthenticationError, match="asks for credentials") as caught:
            await api.retrieve("a-session")
    assert f"the proxy {proxy.url} answered 407" in str(caught.value)
    assert len(proxy.heads) == 1


async def test_a_bulk_run_through_a_refusing_proxy_gives_each_session_its_result(
    proxy: RefusingProxy,
) -> None:
    ids = [f"session-{n}" for n in range(40)]
    async with through(proxy) as api:
        report = await api.release_many(ids, concurrency=4)
    assert [result.session_id for result in report.results] == ids
    assert all(isinstance(result.error, ProxyAuthenticationError) for result in report.results)
    # Wrong for every session alike: the run stops sending at the first refusal (a proxy may
    # lock an account that keeps failing); what was already in flight is all it sent.
    assert len(proxy.heads) <= 4
    assert sum(result.attempts for result in report.results) == len(proxy.heads)


async def test_a_create_through_a_refusing_proxy_fails_at_once_with_no_lookup(
    proxy: RefusingProxy,
) -> None:
    async with through(proxy) as api:
        with pytest.raises(ProxyAuthenticationError):
            await api.create()
        # No handshake with the API: nothing was made there, nothing to look up by tag.
        assert api._lifecycle.counts.lost_answers == 0
    assert len(proxy.heads) == 1


async def test_a_407_to_a_plain_request_is_the_same_error(proxy: RefusingProxy) -> None:
    # A proxy in the way of a plain-http URL (an intercepting one) answers the request itself.
    async with SessionsAPI(KEY, base_url=proxy.url, retry=EAGER) as api:
        with pytest.raises(ProxyAuthenticationError, match="a proxy asks for credentials"):
            await api.release("a-session")
        report = await api.release_many(["one", "two", "three"], concurrency=1)
    assert all(isinstance(result.error, ProxyAuthenticationError) for result in report.results)
    assert [head.split(b" ", 1)[0] for head in proxy.heads] == [b"POST", b"POST"]


async def test_the_cli_says_the_proxy_refused_and_stops(proxy: RefusingProxy) -> None:
    environ = {
        "BROWSERBASE_API_KEY": KEY,
        "BROWSERBASE_BASE_URL": f"https://127.0.0.1:{dead_port()}",
    }
    with_credentials = proxy.url.replace("//", f"//{CREDENTIALS}@")
    ids = [f"session-{n}" for n in range(20)]
    ran = await run_cli(
        None, "release", *ids, "--proxy", with_credentials, "--concurrency", "4", env=environ
    )
    assert ran.code == 1
    assert "20 failed (20 proxy refused)" in ran.err
    assert "the proxy refused its credentials: check --proxy or HTTPS_PROXY" in ran.err
    assert len(proxy.heads) <= 4  # the first requests in flight, no more
    assert "proxy-secret" not in ran.err + ran.out


async def test_a_proxy_a_callers_session_found_itself_is_said_to_be_a_proxy(
    proxy: RefusingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    base_url = f"https://127.0.0.1:{dead_port()}"
    session = aiohttp.ClientSession(trust_env=True)
    async with session, SessionsAPI(KEY, base_url=base_url, http_session=session) as api:
        # Named after the client was made: aiohttp's own pick, from the environment.
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        with pytest.raises(ProxyAuthenticationError, match="the proxy answered 407"):
            await api.release("a-session")
    assert len(proxy.heads) == 1
