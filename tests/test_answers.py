"""Answers a client can trust: no redirect followed with the key, the release's own error,
bounded reads, and the User-Agent."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import platform
import subprocess
import sys
import textwrap
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from browserbase_async import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    RetryPolicy,
    SessionsAPI,
    __version__,
)
from browserbase_async.testing import FakeBrowserbase, Fault

from .conftest import FAST, ApiFactory
from .helpers import session_json

KEY = "bb_live_secret_key"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[tuple[str, list]]:
    """A one-route server on loopback; yields its base URL and the requests' headers."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


# -- 1. redirects ---------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.asyncio
async def test_a_redirect_to_another_origin_never_receives_the_key(status: int) -> None:
    async def elsewhere(request: web.Request) -> web.Response:
        return web.json_response(session_json())

    # 'localhost' against '127.0.0.1': another origin on the same machine.
    async with serve(elsewhere, host="localhost") as (other_url, other_seen):

        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": f"{other_url}/v1/sessions/s-1"})

        async with serve(answer) as (url, seen), SessionsAPI(KEY, base_url=url, retry=FAST) as api:
            with pytest.raises(APIStatusError) as caught:
                await api.release("s-1")
            with pytest.raises(APIStatusError):
                await api.retrieve("s-1")

    error = caught.value
    assert type(error) is APIStatusError
    assert error.status_code == status
    assert str(status) in str(error)
    assert f"{other_url}/v1/sessions/s-1" in str(error)
    assert "not followed" in str(error)
    assert KEY not in str(error)
    assert other_seen == []  # nothing at all reached the other origin
    assert len(seen) == 2  # one each: a redirect is not retried


@pytest.mark.asyncio
async def test_a_same_origin_redirect_is_the_same_clear_error() -> None:
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/v1/sessions/s-1":
            return web.Response(status=307, headers={"Location": "/v2/sessions/s-1"})
        return web.json_response(session_json())

    async with serve(answer) as (url, seen), SessionsAPI(KEY, base_url=url, retry=FAST) as api:
        with pytest.raises(APIStatusError, match=r"307 .*/v2/sessions/s-1, not followed"):
            await api.retrieve("s-1")
        report = await api.release_many(["s-1"])
    assert [request.get("X-BB-API-Key") for request in seen] == [KEY, KEY]
    assert report.results[0].error is not None
    assert report.results[0].attempts == 1


@pytest.mark.asyncio
async def test_a_redirect_without_a_location_says_so() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=302)

    async with serve(answer) as (url, _), SessionsAPI(KEY, base_url=url, retry=FAST) as api:
        with pytest.raises(APIStatusError, match="no Location given"):
            await api.retrieve("s-1")


# -- 2. the release's own error -------------------------------------------------

CHECK_FAILURES = {
    "404": ([Fault.status(404, message="Session not found")], NotFoundError),
    "5xx": ([Fault.status(503)] * 3, InternalServerError),
    # aiohttp itself sends a GET again once when a kept-alive connection drops: twice as many.
    "dropped": ([Fault.drop()] * 6, APIConnectionError),
}


@pytest.mark.parametrize("kind", sorted(CHECK_FAILURES))
@pytest.mark.parametrize("way", ["release", "release_many"])
@pytest.mark.asyncio
async def test_a_failed_check_leaves_the_releases_own_refusal(
    kind: str, way: str, fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    faults, check_error = CHECK_FAILURES[kind]
    session_id = fake_browserbase.add_session()
    fake_browserbase.inject(Fault.status(400, message="refused for a reason"), route="update")
    fake_browserbase.inject(*faults, route="retrieve")
    async with make_api() as api:
        if way == "release":
            with pytest.raises(BadRequestError) as caught:
                await api.release(session_id)
            error: BaseException | None = caught.value
        else:
            [result] = (await api.release_many([session_id])).results
            error = result.error
            assert result.attempts == 1
    assert isinstance(error, BadRequestError)
    assert error.status_code == 400
    assert "refused for a reason" in str(error)
    assert isinstance(error.__cause__, check_error)
    assert any(f"checking session {session_id}" in note for note in error.__notes__)


@pytest.mark.parametrize("way", ["cut", "stalled"])
@pytest.mark.asyncio
async def test_a_release_answered_2xx_whose_body_breaks_off_is_released(way: str) -> None:
    # The status said the server accepted: a body cut (or stalled) after it once made a
    # connection error, retried, then reported failed while the session had not ended yet.
    posts: list[str] = []
    never = asyncio.Event()

    async def accept_then_break(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.json_response(session_json(id="s-1", status="RUNNING"))
        posts.append(request.path)
        answer = web.StreamResponse(status=200, headers={"Content-Length": "400"})
        await answer.prepare(request)
        await answer.write(b'{"id": "s-1", "sta')
        if way == "stalled":
            await never.wait()
        if request.transport is not None:
            request.transport.close()
        return answer

    async with (
        serve(accept_then_break) as (url, _),
        SessionsAPI(KEY, base_url=url, retry=FAST, timeout=1.0) as api,
    ):
        try:
            [result] = (await api.release_many(["s-1"])).results
            released = await api.release("s-1")
        finally:
            never.set()  # the stalled handlers end, and the server with them
    assert result.ok, result.error
    assert result.session is not None
    assert result.session.status == "RUNNING"
    assert released.id == "s-1"
    assert len(posts) == 2  # one each: an accepted release is not sent again


@pytest.mark.asyncio
async def test_a_read_whose_body_breaks_off_is_still_retried() -> None:
    gets: list[str] = []

    async def cut_once(request: web.Request) -> web.StreamResponse:
        gets.append(request.path)
        if len(gets) > 1:
            return web.json_response(session_json(id="s-1"))
        answer = web.StreamResponse(status=200, headers={"Content-Length": "400"})
        await answer.prepare(request)
        await answer.write(b'{"id": "s-1", "sta')
        assert request.transport is not None
        request.transport.close()
        return answer

    async with serve(cut_once) as (url, _), SessionsAPI(KEY, base_url=url, retry=FAST) as api:
        assert (await api.retrieve("s-1")).id == "s-1"
    assert len(gets) == 2


# -- 3. bounded reads -----------------------------------------------------------


def _padded(size: int) -> bytes:
    """A valid Session of exactly *size* bytes (JSON allows trailing whitespace)."""
    body = json.dumps(session_json()).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("limit_delta", "fits"), [(0, True), (-1, False)])
@pytest.mark.asyncio
async def test_an_answer_is_read_up_to_max_response_bytes(
    chunked: bool, limit_delta: int, fits: bool
) -> None:
    size = 256 * 1024
    body = _padded(size)

    async def answer(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, size, 10_000):
            await response.write(body[start : start + 10_000])
        await response.write_eof()
        return response

    limit = size + limit_delta
    async with (
        serve(answer) as (url, seen),
        SessionsAPI(KEY, base_url=url, retry=FAST, max_response_bytes=limit) as api,
    ):
        if fits:
            assert (await api.retrieve("s-1")).id == "s-1"
        else:
            with pytest.raises(APIResponseValidationError, match=f"max_response_bytes \\({limit}"):
                await api.retrieve("s-1")
    assert len(seen) == 1  # not retried


@pytest.mark.asyncio
async def test_a_compressed_answer_is_bounded_by_its_decompressed_size() -> None:
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    async with (
        serve(answer) as (url, _),
        SessionsAPI(KEY, base_url=url, max_response_bytes=1024 * 1024) as api,
    ):
        assert len(bomb) < 1024 * 1024
        with pytest.raises(APIResponseValidationError, match="max_response_bytes"):
            await api.retrieve("s-1")


@pytest.mark.asyncio
async def test_a_compressed_answer_under_the_limit_is_read() -> None:
    async def answer(request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps(session_json()).encode())
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async with serve(answer) as (url, _), SessionsAPI(KEY, base_url=url) as api:
        assert (await api.retrieve("s-1")).id == "s-1"


@pytest.mark.asyncio
async def test_a_declared_length_over_the_limit_fails_before_reading() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=b" " * 5000, content_type="application/json")

    async with (
        serve(answer) as (url, _),
        SessionsAPI(KEY, base_url=url, max_response_bytes=4096) as api,
    ):
        with pytest.raises(APIResponseValidationError, match=r"\(4096 bytes\)"):
            await api.list()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64"])
def test_max_response_bytes_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="max_response_bytes must be a whole number > 0"):
        SessionsAPI(KEY, max_response_bytes=bad)  # type: ignore[arg-type]


ENDLESS = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    from aiohttp import web
    from browserbase_async import APIResponseValidationError, SessionsAPI

    LIMIT = int(sys.argv[1])
    sent = 0

    async def endless(request):
        global sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            while True:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            return response

    async def main():
        app = web.Application()
        app.router.add_get("/v1/sessions/{id}", endless)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = "http://127.0.0.1:%d" % runner.addresses[0][1]
        async with SessionsAPI("k", base_url=url, timeout=None, max_response_bytes=LIMIT) as api:
            # A first small call, so that what is measured is the answer, not the imports.
            api._transport.max_response_bytes = 65536
            try:
                await api.retrieve("warm-up")
            except APIResponseValidationError:
                pass
            api._transport.max_response_bytes = LIMIT
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                await api.retrieve("s-1")
            except APIResponseValidationError as exc:
                error = str(exc)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        await runner.cleanup()
        print(json.dumps({"growth_kib": after - before, "sent": sent, "error": error}))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("limit_mib", [1, 64])
def test_an_endless_answer_fails_fast_and_holds_little_memory(limit_mib: int) -> None:
    limit = limit_mib * 1024 * 1024
    # A process of its own, so that its peak memory is the call's and nobody else's.
    run = subprocess.run(
        [sys.executable, "-c", ENDLESS, str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(run.stdout)
    assert "max_response_bytes" in outcome["error"]
    # Dropped as soon as the limit passed: no more than the limit, the warm-up and what the
    # sockets' buffers held (8 MiB here on loopback; autotuned, so allow 32) was ever written.
    assert outcome["sent"] < limit + 32 * 1024 * 1024
    # The call holds at most the limit twice (the chunks, then their join), plus slack.
    assert outcome["growth_kib"] * 1024 < 2 * limit + 16 * 1024 * 1024


@pytest.mark.asyncio
async def test_an_error_page_becomes_a_short_excerpt(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    page = b"<html><body>" + b"<p>Bad gateway, and a story</p>" * 2000 + b"</body></html>"
    assert len(page) > 50_000
    fake_browserbase.inject(Fault("status", 502, {"Content-Type": "text/html"}, page))
    async with make_api(retry=RetryPolicy(max_attempts=1)) as api:
        with pytest.raises(InternalServerError) as caught:
            await api.retrieve("s-1")
    assert len(str(caught.value)) < 300
    assert str(caught.value).startswith("502 Bad Gateway: <html><body><p>Bad gateway")


@pytest.mark.asyncio
async def test_a_server_that_echoes_the_key_never_gets_it_into_an_error_or_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A debugging proxy's page, an echo service behind a wrong base URL, a Location built
    # from the request: the server's text quotes the key back, and that text goes into
    # errors (their message, .body, .headers), the log, and the CLI's output.
    caplog.set_level(logging.DEBUG)

    async def echo(request: web.Request) -> web.Response:
        key = request.headers["X-BB-API-Key"]
        kind = request.path.rsplit("/", 1)[-1]
        if kind == "redirect":
            return web.Response(status=307, headers={"Location": f"http://other.test/?k={key}"})
        if kind == "page":
            return web.Response(status=403, text=f"<p>denied {key}</p>", content_type="text/html")
        if kind == "busy":
            return web.json_response({"message": f"busy, key {key}"}, status=503)
        if kind == "text":
            return web.Response(text=f"ok {key}")  # a 2xx that is not JSON
        return web.json_response({"echo": {"X-BB-API-Key": key}})  # a 2xx, not a Session

    errors: list[BaseException] = []
    async with serve(echo) as (url, _), SessionsAPI(KEY, base_url=url, retry=FAST) as api:
        for kind in ("redirect", "page", "busy", "text", "object"):
            for call in (api.release, api.retrieve):
                try:
                    await call(kind)
                except APIError as exc:
                    errors.append(exc)
        report = await api.release_many(["busy", "page", "redirect"])
    assert len(errors) == 8  # a release answered 2xx stands, whatever its body
    errors += [result.error for result in report.results if result.error is not None]
    for error in errors:
        shown = "".join(traceback.format_exception(error)) + repr(error)
        shown += repr(getattr(error, "body", "")) + repr(getattr(error, "headers", ""))
        assert KEY not in shown, shown
    assert KEY not in repr(report)
    assert caplog.records
    assert all(KEY not in record.getMessage() for record in caplog.records)


# -- 4. User-Agent --------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_request_says_who_it_is() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(session_json())

    async with serve(answer) as (url, seen), SessionsAPI(KEY, base_url=url) as api:
        await api.retrieve("s-1")
        await api.release("s-1")
    expected = (
        f"browserbase-async/{__version__} aiohttp/{aiohttp.__version__} "
        f"Python/{platform.python_version()}"
    )
    assert [request["User-Agent"] for request in seen] == [expected, expected]
