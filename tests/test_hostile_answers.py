"""What a server may answer, and the truth of what the client reports: adversarial servers
on loopback, down to the bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from browserbase_async import (
    APIConnectionError,
    BulkReleaseAborted,
    RateLimitError,
    RetryPolicy,
    SessionsAPI,
)
from browserbase_async._config import ENVIRONMENT
from browserbase_async._transport import _scrub_key

from .helpers import session_json, until

KEY = "bb_live_secret_key"
ONCE = RetryPolicy(max_attempts=1)
FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.002)
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A server on loopback that answers each connection with *script*, byte by byte.

    On exit, the connections still open are closed, their scripts ended.
    """
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    def start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.ensure_future(handle(reader, writer)))

    server = await asyncio.start_server(start, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request's head, then close without a word."""
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


def shown_with_locals(error: BaseException) -> str:
    """The traceback as an error tracker captures it: every frame's locals, every cause."""
    return "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())


@pytest.mark.asyncio
async def test_a_traceback_with_its_locals_never_shows_the_key() -> None:
    # Error trackers (Sentry, rich's show_locals, pytest --showlocals) record each frame's
    # locals, those of the cause's frames too: the request's headers must be in none of them.
    errors: list[BaseException] = []
    async with raw_server(hang_up) as url, SessionsAPI(KEY, base_url=url, retry=ONCE) as api:
        for call in (api.retrieve, api.release):
            with pytest.raises(APIConnectionError) as caught:
                await call("s-1")
            errors.append(caught.value)
    # The release's own failure, with its check's failure (a retrieve) as its cause.
    assert errors[1].__cause__ is not None
    for error in errors:
        shown = shown_with_locals(error)
        assert "method = " in shown  # the frames and their locals are there...
        assert KEY not in shown  # ...but not the key


async def echo_in_the_status_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Quote the request's head, the key's header included, back in a malformed status line."""
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 2" + head.replace(b"\r\n", b" ") + b"\r\n\r\n")
    await writer.drain()
    writer.close()


@pytest.mark.asyncio
async def test_an_answer_aiohttp_cannot_parse_never_brings_the_key_quoted_in_it() -> None:
    # aiohttp's parse error quotes the bytes it could not read: a server (an echo service
    # behind a wrong base URL) that sends the request back there has the key in that text.
    errors: list[BaseException] = []
    async with (
        raw_server(echo_in_the_status_line) as url,
        SessionsAPI(KEY, base_url=url, retry=ONCE) as api,
    ):
        for call in (api.retrieve, api.release):
            with pytest.raises(APIConnectionError) as caught:
                await call("s-1")
            errors.append(caught.value)
    for error in errors:
        assert "Bad status line" in str(error)  # aiohttp's reason is still said...
        shown = "".join(traceback.format_exception(error)) + shown_with_locals(error)
        chain = [error, error.__cause__, error.__context__]
        assert KEY not in shown + repr(chain) + str(getattr(error, "__notes__", ""))


def test_a_client_that_could_not_be_made_still_has_a_repr() -> None:
    # A traceback with locals (an error tracker's) shows the half-made client of a
    # constructor's ValueError: its repr raised AttributeError, and the report with it.
    with pytest.raises(ValueError, match="base_url") as caught:
        SessionsAPI(KEY, base_url="ftp://example.com")
    assert "self = <SessionsAPI, not made>" in shown_with_locals(caught.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "http://api.example.com"},  # plain http to another host
        {"timeout": -1.0},
        {"ssl": "/no/such/bundle.pem"},
    ],
)
def test_a_constructors_error_shows_the_key_from_the_environment_in_no_frame(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any]
) -> None:
    # The key read from BROWSERBASE_API_KEY was a local of the constructor, and the
    # environment itself (every variable, the key's included) a default argument of the
    # function that read it: an error tracker records both with a bad argument's ValueError.
    monkeypatch.setenv("BROWSERBASE_API_KEY", KEY)
    with pytest.raises(ValueError) as caught:
        SessionsAPI(**kwargs)
    shown = shown_with_locals(caught.value)
    assert "self = <SessionsAPI, not made>" in shown
    assert KEY not in shown


@pytest.mark.asyncio
async def test_a_refused_trust_env_session_shows_the_key_in_no_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROWSERBASE_API_KEY", KEY)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    async with aiohttp.ClientSession(trust_env=True) as session:
        with pytest.raises(ValueError, match="trust_env") as caught:
            SessionsAPI(base_url="http://127.0.0.1:9", http_session=session)
    assert KEY not in shown_with_locals(caught.value)


def test_the_environment_read_by_default_is_os_environ_as_it_is_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROWSERBASE_API_KEY", KEY)
    assert dict(ENVIRONMENT) == dict(os.environ)
    assert len(ENVIRONMENT) == len(os.environ)
    assert ENVIRONMENT["BROWSERBASE_API_KEY"] == KEY
    assert KEY not in repr(ENVIRONMENT)


EVIL_ID = "s-\x1b]0;pwned\x07\x1b[2J"
"""An id a server may give: a terminal's title and a clear screen, if written as it is."""


@pytest.mark.asyncio
async def test_a_servers_session_id_reaches_the_log_with_its_control_characters_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ids are the server's text too: in a log line (a terminal's), an escape in one must not
    # retitle the window or clear the screen.
    caplog.set_level(logging.DEBUG, logger="browserbase_async")
    released: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/v1/sessions":
            # Running, of an age the listing does not say: skipped, with a warning.
            return web.json_response([session_json(id=EVIL_ID, startedAt=None)])
        if request.path == "/v1/sessions/s-1":  # a drifted field: read as None, logged at DEBUG
            return web.json_response(session_json(id=EVIL_ID, proxyBytes="many"))
        if request.method == "GET":  # the check of an accepted release: unreadable, logged
            return web.Response(text="<p>?</p>")
        if request.path == "/v1/sessions":  # the create
            created = session_json(id=EVIL_ID, connectUrl="wss://x", seleniumRemoteUrl="http://x")
            return web.json_response(created | {"signingKey": "k"}, status=201)
        released.append(request.path)
        if len(released) == 1:
            return web.json_response({"message": "busy"}, status=503)  # retried, logged
        return web.Response(text="<p>ok</p>")  # accepted, unreadable: checked

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        async with SessionsAPI(KEY, base_url=url, retry=FAST_RETRY) as api:
            report = await api.release_all(older_than=60.0)
            await api.retrieve("s-1")
            async with api.session() as created:
                assert created.id == EVIL_ID
    assert report.age_unknown
    assert len(released) == 2
    messages = [record.getMessage() for record in caplog.records]
    for needle in ("skipped 1 session", "proxyBytes read", "retrying session", "(the server"):
        assert any(needle in message for message in messages), needle
    for message in messages:
        assert not {"\x1b", "\x07"} & set(message), message


class LostThenRefused:
    """A server that acts on the first release and loses its answer, then answers 429 to every
    release sent again; a retrieve says what became of the session."""

    def __init__(self, *, lose_first: bool = True) -> None:
        self.ended = False
        self.lose_first = lose_first
        self.requests: list[str] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed its connection
                return
            method = head.split(b" ", 1)[0].decode()
            self.requests.append(method)
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if b"Content-Length" in line
                ),
                0,
            )
            await reader.readexactly(length)
            if method == "POST" and self.lose_first and self.requests.count("POST") == 1:
                self.ended = True  # done, and the answer never leaves
                writer.close()
                return
            if method == "POST":
                status, body = b"429 Too Many Requests", b'{"message": "slow down"}'
            else:
                state = "COMPLETED" if self.ended else "RUNNING"
                status, body = b"200 OK", json.dumps(session_json(status=state)).encode()
            writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()


@pytest.mark.asyncio
async def test_a_release_acted_on_then_refused_with_429s_is_reported_released() -> None:
    # Its first attempt ended the session, but the answer was lost; the attempts sent again
    # were refused with 429 until the policy gave up. The last refusal is not the truth: the
    # session ended, and the release counts as done.
    policy = RetryPolicy(initial_delay=0.001, max_delay=0.002, max_rate_limited=1)
    server = LostThenRefused()
    async with raw_server(server) as url, SessionsAPI(KEY, base_url=url, retry=policy) as api:
        session = await api.release("s-1")
    assert session.status == "COMPLETED"
    assert server.requests == ["POST", "POST", "POST", "GET"]
    server = LostThenRefused()
    async with raw_server(server) as url, SessionsAPI(KEY, base_url=url, retry=policy) as api:
        report = await api.release_many(["s-1"])
    assert report.ok
    assert report.results[0].session is not None
    assert report.results[0].session.status == "COMPLETED"


@pytest.mark.asyncio
async def test_a_release_refused_with_429s_alone_is_not_checked() -> None:
    server = LostThenRefused(lose_first=False)
    policy = RetryPolicy(initial_delay=0.001, max_delay=0.002, max_rate_limited=1)
    async with raw_server(server) as url, SessionsAPI(KEY, base_url=url, retry=policy) as api:
        with pytest.raises(RateLimitError):
            await api.release("s-1")
    assert server.requests == ["POST", "POST"]  # a 429 says nothing was done: no retrieve


def test_scrubbing_aiohttps_exception_leaves_the_callers_own_as_it_was() -> None:
    # A call made while the caller handles an exception of its own: aiohttp's may be chained
    # to that one, which is the caller's, traceback and all.
    caught: list[BaseException] = []
    try:
        raise LookupError("the caller's own")
    except LookupError as own:
        try:
            raise aiohttp.ClientConnectionError("dropped")
        except aiohttp.ClientError as lower:
            _scrub_key(lower, own)
            caught += [own, lower]
    own, lower = caught
    assert lower.__context__ is own
    assert lower.__traceback__ is None  # aiohttp's frames and their locals: dropped
    assert own.__traceback__ is not None


class Stalled:
    """A server whose answer stops after its head and the first bytes of its body."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reading = asyncio.Event()
        """Set once the client has read the head and waits for the body."""
        read = aiohttp.ClientResponse.read

        async def reading(response: aiohttp.ClientResponse) -> bytes:
            self.reading.set()
            return await read(response)

        monkeypatch.setattr(aiohttp.ClientResponse, "read", reading)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id": ')
        await writer.drain()
        await reader.read()  # until the client hangs up


@pytest.mark.asyncio
async def test_closing_ends_a_call_whose_answer_is_still_coming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp's close of our own session drops a body being read without a word to its
    # reader: the call waited for its timeout (for ever, with timeout=None).
    server = Stalled(monkeypatch)
    async with raw_server(server) as url:
        api = SessionsAPI(KEY, base_url=url, timeout=None)
        call = asyncio.ensure_future(api.retrieve("s-1"))
        await server.reading.wait()
        await api.aclose()
        await until(call.done)
        with pytest.raises(APIConnectionError, match="the client was closed"):
            call.result()


@pytest.mark.asyncio
@pytest.mark.parametrize("bulk", [False, True])
async def test_a_release_answered_2xx_then_closed_under_is_reported_released(
    monkeypatch: pytest.MonkeyPatch, bulk: bool
) -> None:
    # The server said 200, and its body was still coming when the client was closed: the
    # server acted, and the release is no failure, whatever became of the body and the check.
    server = Stalled(monkeypatch)
    async with raw_server(server) as url:
        api = SessionsAPI(KEY, base_url=url, timeout=None)
        if bulk:
            run = asyncio.ensure_future(api.release_many(["s-1"]))
        else:
            release = asyncio.ensure_future(api.release("s-1"))
        await server.reading.wait()
        await api.aclose()
        if bulk:
            with pytest.raises(BulkReleaseAborted) as aborted:  # the close stopped the run
                await run
            [result] = aborted.value.report.results
            assert result.ok, result
            assert result.session is None  # accepted; nothing more could be read
        else:
            session = await release
            assert session.id == "s-1"
            assert session.status == "REQUEST_RELEASE"
