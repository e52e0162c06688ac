"""Networks users have: proxies, private CAs, keys read from files, credentials in URLs,
server text with terminal escapes. Real TLS (trustme certificates), a real proxy process
(proxy.py) and the fake, all on loopback."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
import subprocess
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import trustme

from browserbase_async import (
    APICertificateError,
    APIConnectionError,
    APIError,
    BadRequestError,
    InternalServerError,
    ProxyAuthenticationError,
    RetryPolicy,
    SessionsAPI,
)
from browserbase_async.testing import FakeBrowserbase, Fault

from .conftest import FAST
from .test_cli import run_cli

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x9b\u202e"


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class Handshakes:
    """Counts the TLS handshakes a server context takes part in."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.count = 0
        context.sni_callback = self._seen

    def _seen(self, *_: object) -> None:
        self.count += 1


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest_asyncio.fixture
async def tls_fake(server_context: ssl.SSLContext) -> AsyncIterator[FakeBrowserbase]:
    async with FakeBrowserbase(ssl_context=server_context) as fake:
        yield fake


def dead_port() -> int:
    """A loopback port where nothing listens: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProxyProcess:
    """proxy.py in a process of its own, its log read line by line as it comes."""

    def __init__(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--hostname",
                "127.0.0.1",
                "--port",
                "0",
                "--num-workers",
                "1",
                "--num-acceptors",
                "1",
                "--log-level",
                "DEBUG",
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        port = self.wait_for(r"Listening on 127\.0\.0\.1:(\d+)").group(1)
        self.url = f"http://127.0.0.1:{port}"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<exited>")
            self._changed.notify_all()

    def wait_for(self, pattern: str, since: int = 0, timeout: float = 30.0) -> re.Match[str]:
        """The first log line from line *since* on matching *pattern*, once it is written."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            lines = self.lines[since:]
            found[:] = [m for line in lines if (m := re.search(pattern, line))][:1]
            return bool(found) or "<exited>" in self.lines

        with self._changed:
            assert self._changed.wait_for(seen, timeout), f"proxy.py never logged {pattern!r}"
        assert found, "".join(self.lines[-20:])
        return found[0]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture(scope="module")
def proxy_py() -> Iterator[ProxyProcess]:
    proxy = ProxyProcess()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def proxy_with_auth() -> Iterator[ProxyProcess]:
    proxy = ProxyProcess("--basic-auth", "scraper:proxy-pass")
    try:
        yield proxy
    finally:
        proxy.close()


class RecordingTunnel:
    """A CONNECT proxy of a few lines on loopback that keeps every byte a client sent it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RecordingTunnel:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        head = await reader.readuntil(b"\r\n\r\n")
        self.received += head
        host, port = head.split()[1].decode().rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer, record=True),
                self._pipe(upstream_reader, writer, record=False),
            )
        finally:
            writer.close()
            upstream_writer.close()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, record: bool
    ) -> None:
        while data := await source.read(65536):
            if record:
                self.received += data
            sink.write(data)
            await sink.drain()
        sink.close()


# -- 1. proxies ---------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["environment", "argument"])
async def test_an_https_api_is_reached_through_the_proxy_and_the_key_stays_in_the_tunnel(
    how: str,
    tls_fake: FakeBrowserbase,
    ca_file: str,
    proxy_py: ProxyProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = tls_fake.base_url.rsplit(":", 1)[1]
    if how == "environment":
        monkeypatch.setenv("HTTPS_PROXY", proxy_py.url)
        kwargs = {}
    else:
        kwargs = {"proxy": proxy_py.url}
    sid = tls_fake.add_session()
    since = len(proxy_py.lines)
    async with SessionsAPI(
        tls_fake.api_key, base_url=tls_fake.base_url, ssl=ca_file, retry=FAST, **kwargs
    ) as api:
        assert (await api.release(sid)).status == "COMPLETED"
    # proxy.py logs a tunnel when it closes; closing the client closed it.
    connect = f"CONNECT 127.0.0.1:{port} "
    await asyncio.to_thread(proxy_py.wait_for, re.escape(connect), since)
    assert not any(tls_fake.api_key in line for line in proxy_py.lines)


@pytest.mark.asyncio
async def test_a_proxy_that_asks_for_credentials_gets_those_of_its_url(
    tls_fake: FakeBrowserbase,
    ca_file: str,
    proxy_with_auth: ProxyProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_credentials = proxy_with_auth.url.replace("//", "//scraper:proxy-pass@")
    wrong = proxy_with_auth.url.replace("//", "//scraper:wrong-pass@")
    sid = tls_fake.add_session()
    async with SessionsAPI(
        tls_fake.api_key, base_url=tls_fake.base_url, ssl=ca_file, proxy=with_credentials
    ) as api:
        assert (await api.release(sid)).status == "COMPLETED"
    monkeypatch.setenv("HTTPS_PROXY", wrong)
    async with SessionsAPI(
        tls_fake.api_key, base_url=tls_fake.base_url, ssl=ca_file, retry=RetryPolicy(max_attempts=1)
    ) as api:
        with pytest.raises(ProxyAuthenticationError, match="credentials in its URL") as refused:
            await api.release(sid)
    assert "wrong-pass" not in "".join(traceback.format_exception(refused.value))
    assert "proxy-pass" not in repr(api)
    # Nor anywhere in the chain, context included: not in a URL, not in Proxy-Authorization.
    chain, todo = [], [refused.value]
    while todo:
        if (link := todo.pop()) is not None and link not in chain:
            chain.append(link)
            todo += [link.__cause__, link.__context__]
    told = " ".join(f"{link!r} {getattr(link, 'request_info', '')!r}" for link in chain)
    assert "wrong-pass" not in told
    assert base64.b64encode(b"scraper:wrong-pass").decode() not in told


@pytest.mark.asyncio
async def test_the_key_never_reaches_the_proxy_in_clear(
    tls_fake: FakeBrowserbase,
    fake_browserbase: FakeBrowserbase,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with RecordingTunnel() as tunnel:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, tunnel.url)
        secure, plain = tls_fake.add_session(), fake_browserbase.add_session()
        async with SessionsAPI(tls_fake.api_key, base_url=tls_fake.base_url, ssl=ca_file) as api:
            assert (await api.release(secure)).status == "COMPLETED"
        port = tls_fake.base_url.rsplit(":", 1)[1]
        assert tunnel.received.startswith(f"CONNECT 127.0.0.1:{port} ".encode())
        sent = len(tunnel.received)
        async with SessionsAPI(
            fake_browserbase.api_key, base_url=fake_browserbase.base_url, proxy=tunnel.url
        ) as api:
            assert (await api.release(plain)).status == "COMPLETED"
        assert len(tunnel.received) == sent  # plain http went direct, not to the proxy
    assert tls_fake.api_key.encode() not in tunnel.received
    assert b"X-BB-API-Key" not in tunnel.received


@pytest.mark.asyncio
async def test_no_proxy_naming_the_host_goes_direct(
    tls_fake: FakeBrowserbase, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{dead_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    sid = tls_fake.add_session()
    async with SessionsAPI(tls_fake.api_key, base_url=tls_fake.base_url, ssl=ca_file) as api:
        assert (await api.release(sid)).status == "COMPLETED"


@pytest.mark.asyncio
async def test_a_dead_proxy_is_said_to_be_the_proxy(
    tls_fake: FakeBrowserbase, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:proxy-secret@127.0.0.1:{dead_port()}")
    sid = tls_fake.add_session()
    async with SessionsAPI(
        tls_fake.api_key,
        base_url=tls_fake.base_url,
        ssl=ca_file,
        retry=RetryPolicy(max_attempts=1),
    ) as api:
        with pytest.raises(APIConnectionError, match="cannot connect to the proxy") as caught:
            await api.release(sid)
    assert "proxy-secret" not in "".join(traceback.format_exception(caught.value))
    assert tls_fake.received.total == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["environment", "argument"])
async def test_a_plain_http_api_never_goes_through_a_proxy(
    how: str, fake_browserbase: FakeBrowserbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would see the key in clear: a loopback fake is reached directly.
    dead = f"http://127.0.0.1:{dead_port()}"
    kwargs = {}
    if how == "environment":
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, dead)
    else:
        kwargs = {"proxy": dead}
    sid = fake_browserbase.add_session()
    async with SessionsAPI(
        fake_browserbase.api_key, base_url=fake_browserbase.base_url, **kwargs
    ) as api:
        assert (await api.release(sid)).status == "COMPLETED"


@pytest.mark.asyncio
async def test_a_callers_trust_env_session_never_carries_the_key_to_a_proxy_in_clear(
    fake_browserbase: FakeBrowserbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp's trust_env=True sends a plain-http URL through HTTP_PROXY, whatever proxy= says.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    ids = fake_browserbase.add_sessions(3)
    key, url = fake_browserbase.api_key, fake_browserbase.base_url
    async with RecordingTunnel() as tunnel, aiohttp.ClientSession(trust_env=True) as session:
        proxy_url = tunnel.url.replace("//", "//user:proxy-secret@")
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        with pytest.raises(ValueError, match="trust_env=True") as refused:
            SessionsAPI(key, base_url=url, http_session=session)
        message = str(refused.value)
        assert f"proxy http://***@{tunnel.url.split('//')[1]}" in message
        assert "add 127.0.0.1 to NO_PROXY" in message
        assert "proxy-secret" not in message
        # Set after the client was made: aiohttp reads it at each request, and so do we.
        monkeypatch.delenv("HTTP_PROXY")
        async with SessionsAPI(key, base_url=url, http_session=session, retry=FAST) as api:
            assert (await api.release(ids[0])).status == "COMPLETED"
            monkeypatch.setenv("HTTP_PROXY", proxy_url)
            with pytest.raises(ValueError, match="in clear text to the proxy"):
                await api.release(ids[1])
            report = await api.release_many(ids[1:])
            assert all(isinstance(result.error, ValueError) for result in report.results)
            assert all(result.attempts == 0 for result in report.results)
            # NO_PROXY naming the host: aiohttp goes direct, and so may we.
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            assert (await api.release(ids[1])).status == "COMPLETED"
    assert tunnel.received == b""
    assert fake_browserbase.status(ids[2]) == "RUNNING"


def test_a_proxy_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(ValueError, match="proxy must be an http") as caught:
        SessionsAPI("k", base_url="https://api.example", proxy="socks5://u:secret@h:1")
    assert "secret" not in str(caught.value)


@pytest.mark.asyncio
async def test_the_cli_takes_a_proxy_and_a_ca_file(
    tls_fake: FakeBrowserbase, ca_file: str, proxy_py: ProxyProcess
) -> None:
    ids = tls_fake.add_sessions(2)
    since = len(proxy_py.lines)
    ran = await run_cli(tls_fake, "release", *ids, "--proxy", proxy_py.url, "--ca-file", ca_file)
    assert ran.code == 0, ran.err
    assert all(tls_fake.status(sid) == "COMPLETED" for sid in ids)
    port = tls_fake.base_url.rsplit(":", 1)[1]
    await asyncio.to_thread(proxy_py.wait_for, re.escape(f"CONNECT 127.0.0.1:{port} "), since)


# -- 2. certificates ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_certificate_failure_is_fatal_named_and_tried_once(
    tls_fake: FakeBrowserbase, server_context: ssl.SSLContext
) -> None:
    handshakes = Handshakes(server_context)
    sid = tls_fake.add_session()
    async with SessionsAPI(tls_fake.api_key, base_url=tls_fake.base_url) as api:
        with pytest.raises(APICertificateError, match="certificate") as caught:
            await api.release(sid)
    assert isinstance(caught.value, APIConnectionError)
    assert "ssl=" in str(caught.value)
    assert handshakes.count == 1
    assert tls_fake.received.total == 0


@pytest.mark.asyncio
async def test_a_bulk_run_ends_at_the_first_certificate_failure(
    tls_fake: FakeBrowserbase, server_context: ssl.SSLContext
) -> None:
    handshakes = Handshakes(server_context)
    ids = tls_fake.add_sessions(200)
    async with SessionsAPI(tls_fake.api_key, base_url=tls_fake.base_url) as api:
        report = await api.release_many(ids, concurrency=4)
    assert len(report.failed) == 200
    assert all(isinstance(result.error, APICertificateError) for result in report.results)
    assert handshakes.count <= 4
    assert sum(result.attempts for result in report.results) <= 4


@pytest.mark.asyncio
async def test_ssl_takes_a_ca_bundle_or_a_context(
    tls_fake: FakeBrowserbase, ca: trustme.CA, ca_file: str
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for trust in (ca_file, Path(ca_file), context):
        sid = tls_fake.add_session()
        async with SessionsAPI(tls_fake.api_key, base_url=tls_fake.base_url, ssl=trust) as api:
            assert (await api.release(sid)).status == "COMPLETED"


def test_an_unreadable_ca_bundle_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the CA bundle"):
        SessionsAPI("k", ssl=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="ssl must be"):
        SessionsAPI("k", ssl=42)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_cli_says_certificate_and_stops(tls_fake: FakeBrowserbase) -> None:
    ids = tls_fake.add_sessions(50)
    ran = await run_cli(tls_fake, "release", *ids, "--concurrency", "2")
    assert ran.code == 1
    assert "50 certificate rejected" in ran.err
    assert tls_fake.received.total == 0
    listed = await run_cli(tls_fake, "list")
    assert listed.code == 1
    assert "certificate" in listed.err


# -- 3. the key ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_key_read_from_a_file_has_its_newline_stripped(
    fake_browserbase: FakeBrowserbase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "api-key"
    secret.write_text(fake_browserbase.api_key + "\n")
    sid, other = fake_browserbase.add_sessions(2)
    async with SessionsAPI(secret.read_text(), base_url=fake_browserbase.base_url) as api:
        assert (await api.release(sid)).status == "COMPLETED"
    monkeypatch.setenv("BROWSERBASE_API_KEY", f"  {fake_browserbase.api_key}\r\n")
    async with SessionsAPI(base_url=fake_browserbase.base_url) as api:
        report = await api.release_many([other])
    assert report.ok


@pytest.mark.parametrize(
    "key", ["bb_live_SECRETVALUE\x00", "bb_live\nSECRETVALUE", "bb\x7fSECRETVALUE"]
)
def test_a_control_character_in_the_key_is_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ValueError, match="API key") as caught:
        SessionsAPI(key)
    assert "SECRETVALUE" not in str(caught.value)


@pytest.mark.asyncio
async def test_the_cli_strips_a_key_from_the_environment(fake_browserbase: FakeBrowserbase) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    ran = await run_cli(
        fake_browserbase,
        "release",
        sid,
        env={"BROWSERBASE_API_KEY": fake_browserbase.api_key + "\n"},
    )
    assert ran.code == 0, ran.err


@pytest.mark.asyncio
async def test_the_cli_names_a_key_with_a_control_character_and_exits_2(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ran = await run_cli(fake_browserbase, "release", "s-1", "--api-key", "bb_SECRETVALUE\x07x")
    assert ran.code == 2
    assert "API key" in ran.err
    assert "SECRETVALUE" not in ran.err
    assert fake_browserbase.received.total == 0


# -- 4. credentials in the base URL -------------------------------------------------


@pytest.mark.asyncio
async def test_credentials_in_the_base_url_are_never_shown(
    retry_logs: pytest.LogCaptureFixture,
) -> None:
    url = f"https://user:url-secret@127.0.0.1:{dead_port()}"
    async with SessionsAPI("k", base_url=url, retry=FAST) as api:
        assert "url-secret" not in repr(api)
        assert api.base_url.startswith("https://***@127.0.0.1:")
        with pytest.raises(APIConnectionError) as caught:
            await api.release("s-1")
        report = await api.release_many(["s-2"])
    shown = [
        str(caught.value),
        "".join(traceback.format_exception(caught.value)),
        str(report.results[0].error),
        *(record.getMessage() for record in retry_logs.records),
    ]
    assert retry_logs.records  # the retries were logged
    assert not [text for text in shown if "url-secret" in text]
    for bad in ("https://user:url-secret@h/v1", "https://user:url-secret@h/?q=1"):
        with pytest.raises(ValueError) as refused:
            SessionsAPI("k", base_url=bad)
        assert "url-secret" not in str(refused.value)


# -- 5. terminal escapes in server text ---------------------------------------------


def no_controls(text: str) -> bool:
    return not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", text)


@pytest.mark.asyncio
async def test_server_text_reaches_messages_and_logs_escaped(
    fake_browserbase: FakeBrowserbase, make_api: object, retry_logs: pytest.LogCaptureFixture
) -> None:
    sid, other = fake_browserbase.add_sessions(2)
    fake_browserbase.inject(Fault.status(400, message=ESCAPES), route="update")
    fake_browserbase.inject(Fault.status(503, message=ESCAPES), route="retrieve")
    fake_browserbase.inject(Fault.status(503, message=ESCAPES), route="update")
    async with SessionsAPI(
        fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST
    ) as api:
        with pytest.raises(BadRequestError) as refused:
            await api.release(sid)
        assert (await api.release(other)).status == "COMPLETED"
    assert "\\x1b]0;owned\\x07" in str(refused.value)
    texts = [str(refused.value), *(record.getMessage() for record in retry_logs.records)]
    assert len(texts) >= 2
    assert all(no_controls(text) for text in texts)


@pytest.mark.asyncio
async def test_the_cli_prints_server_text_escaped(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.inject(Fault.status(400, message=ESCAPES), route="list")
    listed = await run_cli(fake_browserbase, "list")
    fake_browserbase.inject(Fault.status(400, message=ESCAPES), route="list")
    swept = await run_cli(fake_browserbase, "release", "--all")
    for ran in (listed, swept):
        assert ran.code == 1
        assert "owned" in ran.err
        assert no_controls(ran.err)


@pytest.mark.asyncio
@pytest.mark.off_spec  # an id with escapes, a field that does not fit: what a log must survive
async def test_a_listed_sessions_id_reaches_the_debug_log_escaped(
    fake_browserbase: FakeBrowserbase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="browserbase_async")
    sid = fake_browserbase.add_session(f"s-{ESCAPES}")
    fake_browserbase.sessions[sid]["region"] = 5
    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        (listed,) = await api.list()
    assert listed.region is None
    (message,) = [r.getMessage() for r in caplog.records if "does not fit" in r.getMessage()]
    assert message.startswith("session s-\\x1b]0;owned\\x07")
    assert no_controls(message)


@pytest.mark.asyncio
@pytest.mark.off_spec  # an id with escapes and no startedAt: what a terminal must survive
async def test_the_reapers_warning_names_a_session_escaped(
    fake_browserbase: FakeBrowserbase,
) -> None:
    # The warning of a session whose age cannot be told named it raw: the id's escapes
    # reached the terminal through the log record.
    sid = fake_browserbase.add_session(f"s-{ESCAPES}")
    del fake_browserbase.sessions[sid]["startedAt"]
    ran = await run_cli(fake_browserbase, "release", "--all", "--older-than", "1h")
    assert ran.code == 0, ran.err
    assert "whose age cannot be told (no startedAt): s-\\x1b]0;owned\\x07" in ran.err
    assert no_controls(ran.err)
    assert fake_browserbase.status(sid) == "RUNNING"


# -- 6. whatever the transport raises is ours ---------------------------------------


@pytest.mark.asyncio
async def test_any_exception_of_the_stack_is_an_api_error_and_a_guard_keeps_its_block_error(
    fake_browserbase: FakeBrowserbase, caplog: pytest.LogCaptureFixture
) -> None:
    sid, other = fake_browserbase.add_sessions(2)
    async with aiohttp.ClientSession() as http:
        api = SessionsAPI(
            fake_browserbase.api_key, base_url=fake_browserbase.base_url, http_session=http
        )
    # The caller's session is closed: aiohttp raises a RuntimeError of its own.
    with pytest.raises(APIError, match="RuntimeError"):
        await api.release(sid)
    report = await api.release_many([sid])
    assert isinstance(report.results[0].error, APIError)
    with pytest.raises(KeyError, match="the scrape failed") as caught:
        async with api.guard(other):
            raise KeyError("the scrape failed")
    assert any("releasing session" in note for note in caught.value.__notes__)
    with pytest.raises(APIError):
        async with api.guard(other):
            pass
    await api.aclose()
    assert fake_browserbase.received.total == 0


# -- 5 bis: excerpts of 5xx bodies that are not JSON ----------------------------------


@pytest.mark.asyncio
async def test_a_proxy_error_page_is_an_escaped_excerpt(
    fake_browserbase: FakeBrowserbase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="browserbase_async")
    (sid,) = fake_browserbase.add_sessions(1)
    page = Fault("status", 502, {"Content-Type": "text/html"}, f"<h1>{ESCAPES}</h1>".encode())
    fake_browserbase.inject(page, page, page, route="update")
    async with SessionsAPI(
        fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST
    ) as api:
        with pytest.raises(InternalServerError) as caught:
            await api.update(sid)
    assert no_controls(str(caught.value))
    assert isinstance(caught.value.body, str)
    assert no_controls(caught.value.body)


@pytest.mark.asyncio
async def test_a_certificate_failure_on_create_is_no_lost_answer(
    tls_fake: FakeBrowserbase, server_context: ssl.SSLContext
) -> None:
    handshakes = Handshakes(server_context)
    async with SessionsAPI(tls_fake.api_key, base_url=tls_fake.base_url) as api:
        with pytest.raises(APICertificateError) as caught:
            await api.create()
        assert api._lifecycle.counts.lost_answers == 0  # nothing reached the server
    assert handshakes.count == 1  # no lookup by tag behind it
    assert not any("may exist" in note for note in getattr(caught.value, "__notes__", []))
    assert tls_fake.sessions == {}
