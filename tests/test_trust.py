"""A report you can trust under anything (issue 22): each promise against a real loopback server.

A 2xx that is not a Session, JSON nested too deep, an input or a callback that raises,
a client closed under its guards, its sleeps and its calls, a second event loop, and
the key in an error's chain.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import traceback
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from browserbase_async import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    BrowserbaseError,
    BulkReleaseAborted,
    InternalServerError,
    ReleaseResult,
    RetryPolicy,
    SessionsAPI,
    SessionStatus,
    _bulk,
)
from browserbase_async._models import bare_session
from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

from .conftest import FAST, ApiFactory
from .helpers import session_json

KEY = "bb_live_trust_secret_key"
DEEP = b"[" * 100_000 + b"]" * 100_000
"""Nested far deeper than the JSON parser's recursion allows."""
SLOW = RetryPolicy(initial_delay=60.0, max_delay=60.0)
"""Backoffs and poll sleeps that a test would notice: a minute each."""


class EndingServer:
    """A loopback API that ends a session on its release, then answers *update_body*.

    ``None``: the session as it is. The retrieve answers the session as it is, or
    *retrieve_body* when set.
    """

    def __init__(
        self, update_body: bytes | None, status: int = 200, content_type: str = ""
    ) -> None:
        self.update_body = update_body
        self.status = status
        self.content_type = content_type
        self.retrieve_body: bytes | None = None
        self.sessions: dict[str, dict[str, Any]] = {}
        self.updates = 0

    def add(self, count: int) -> list[str]:
        ids = [f"s-{len(self.sessions) + n}" for n in range(count)]
        for session_id in ids:
            self.sessions[session_id] = session_json(id=session_id)
        return ids

    async def update(self, request: web.Request) -> web.StreamResponse:
        self.updates += 1
        session = self.sessions[request.match_info["id"]]
        session["status"] = "COMPLETED"
        if self.update_body is None:
            return web.json_response(session)
        headers = {"Content-Type": self.content_type} if self.content_type else {}
        return web.Response(status=self.status, body=self.update_body, headers=headers)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        if self.retrieve_body is not None:
            return web.Response(body=self.retrieve_body)
        return web.json_response(self.sessions[request.match_info["id"]])

    async def listing(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(self.sessions.values()))

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/v1/sessions/{id}", self.update)
        app.router.add_get("/v1/sessions/{id}", self.retrieve)
        app.router.add_get("/v1/sessions", self.listing)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()


# -- 1. a 2xx to a release is the server's yes -----------------------------------


@pytest.mark.parametrize(
    ("body", "status", "content_type"),
    [
        (b"<html><body>oops</body></html>", 200, "text/html"),
        (b"{}", 200, ""),
        (b"", 204, ""),
        (b'\xef\xbb\xbf{"surprise": true}', 200, "application/json"),
        (b"\xef\xbb\xbf<html>behind a BOM</html>", 200, "text/html"),
        (b'{"id": "s-0"}', 200, "application/json"),
        (DEEP, 200, "application/json"),
    ],
    ids=["html", "empty-object", "204", "bom", "bom-html", "no-status", "deep"],
)
@pytest.mark.asyncio
async def test_a_2xx_release_whose_body_is_not_a_session_is_released(
    body: bytes, status: int, content_type: str
) -> None:
    server = EndingServer(body, status, content_type)
    ids = server.add(21)
    async with server.serving() as url, SessionsAPI(KEY, base_url=url, retry=FAST) as api:
        session = await api.release(ids[0])
        report = await api.release_many(ids[1:])
    assert session.id == ids[0]
    assert session.status == SessionStatus.COMPLETED  # as retrieved
    assert report.ok
    assert all(result.session is not None for result in report.results)
    assert server.updates == 21


@pytest.mark.asyncio
async def test_a_schema_drift_fails_no_release() -> None:
    server = EndingServer(None)
    ids = server.add(100)
    for session in server.sessions.values():
        session["proxyBytes"] = None  # the schema says integer
    async with server.serving() as url, SessionsAPI(KEY, base_url=url, retry=FAST) as api:
        report = await api.release_many(ids)
    assert report.ok, report.failed[:3]
    assert all(result.session and result.session.proxy_bytes is None for result in report.results)
    assert all(result.session and result.session.project_id == "p-1" for result in report.results)


@pytest.mark.asyncio
async def test_a_bom_before_a_session_is_forgiven(fake_browserbase: FakeBrowserbase) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    payload = b"\xef\xbb\xbf" + json.dumps(session_json(id=sid, status="COMPLETED")).encode()
    fake_browserbase.inject(Fault("body", 200, {}, payload), route="retrieve")
    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        assert (await api.retrieve(sid)).status == SessionStatus.COMPLETED


@pytest.mark.asyncio
async def test_the_fakes_html_answer_to_a_release_is_a_release(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(3)
    fake_browserbase.inject(Fault.html(), Fault.html(), Fault.html(), route="update")
    async with make_api() as api:
        one = await api.release(ids[0])
        report = await api.release_many(ids[1:])
    assert one.status == SessionStatus.COMPLETED
    assert report.ok
    assert fake_browserbase.received.requests["update"] == 3


@pytest.mark.asyncio
async def test_when_neither_answer_can_be_read_the_release_still_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = EndingServer(b"<html>proxy</html>")
    server.retrieve_body = b"<html>proxy</html>"
    ids = server.add(2)
    async with server.serving() as url, SessionsAPI(KEY, base_url=url, retry=FAST) as api:
        session = await api.release(ids[0])
        report = await api.release_many(ids[1:])
    assert session == bare_session(ids[0], "REQUEST_RELEASE")
    assert report.ok
    assert report.results[0].session is None
    assert "released" in caplog.text
    assert "not JSON" in caplog.text


@pytest.mark.asyncio
async def test_a_listing_keeps_every_session_it_can_read() -> None:
    server = EndingServer(None)
    ids = server.add(3)
    server.sessions[ids[0]]["startedAt"] = None
    del server.sessions[ids[1]]["status"]
    server.sessions[ids[2]]["proxyBytes"] = "lots"
    async with server.serving() as url, SessionsAPI(KEY, base_url=url) as api:
        listed = await api.list()
        # The reaper's filter skips what it cannot age, and fails nothing.
        report = await api.release_all(status=None, older_than=0)
    assert [(s.id, s.started_at, s.proxy_bytes) for s in listed] == [
        (ids[0], None, 0),
        (ids[2], listed[1].started_at, None),
    ]
    assert [result.session_id for result in report.results] == [ids[2]]


# -- 2. a raising input or callback: an abort that carries the report ------------


@pytest.mark.asyncio
async def test_an_input_that_raises_aborts_with_the_report_of_every_release_sent(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(20)

    def ids_then_failure() -> Iterator[str]:
        yield from ids
        raise ConnectionResetError("the queue went away")

    async with make_api() as api:
        with pytest.raises(BulkReleaseAborted) as caught:
            await api.release_many(ids_then_failure(), concurrency=8)
    abort = caught.value
    assert isinstance(abort, BrowserbaseError)
    assert isinstance(abort.__cause__, ConnectionResetError)
    assert [result.session_id for result in abort.report.results] == ids
    assert abort.report.ok
    assert fake_browserbase.received.requests["update"] == 20


@pytest.mark.asyncio
async def test_a_callback_that_raises_stops_the_run_and_nothing_sent_goes_unreported(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(30)
    calls: list[ReleaseResult] = []

    def progress(result: ReleaseResult) -> None:
        calls.append(result)
        if len(calls) == 4:
            raise KeyError("the progress bar broke")

    async with make_api() as api:
        with pytest.raises(BulkReleaseAborted, match="KeyError") as caught:
            await api.release_many(ids, concurrency=4, on_result=progress)
    report = caught.value.report
    assert isinstance(caught.value.__cause__, KeyError)
    assert len(calls) == 4  # never called again once it raised
    # Every release sent is in the report, ended; no more ids were taken.
    sent = fake_browserbase.received.updates
    assert sorted(result.session_id for result in report.results) == sorted(sent)
    assert all(
        fake_browserbase.status(result.session_id) == "COMPLETED" for result in report.results
    )
    assert len(report.results) < len(ids)


@pytest.mark.asyncio
async def test_closing_the_client_under_a_run_of_endless_input_stops_it(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ids = fake_browserbase.add_sessions(10)

    def endless() -> Iterator[str]:
        while True:
            yield from ids

    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url)
    fake_browserbase.hold()
    run = asyncio.create_task(api.release_many(endless(), concurrency=4))
    await fake_browserbase.wait_for_in_flight(4)
    await api.aclose()
    with pytest.raises(BulkReleaseAborted) as caught:
        await asyncio.wait_for(run, 10)
    fake_browserbase.let_go()
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "closed" in str(caught.value.__cause__)
    assert 4 <= len(caught.value.report.results) < 100


# -- 3. guards and aclose ---------------------------------------------------------


@pytest.mark.asyncio
async def test_a_guards_exception_survives_a_client_closed_in_its_block(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(2)
    own = ZeroDivisionError("the block's own")
    status_in_block: list[str] = []

    async def block(api: SessionsAPI) -> None:
        async with api.guard(ids[0]):
            await api.aclose()
            status_in_block.append(fake_browserbase.status(ids[0]))
            raise own

    async with make_api() as api:
        with pytest.raises(ZeroDivisionError) as caught:
            await block(api)
    assert caught.value is own
    assert not getattr(own, "__notes__", None)  # the release did not fail
    assert status_in_block == ["COMPLETED"]  # released by aclose, before the block went on
    async with make_api() as api, api.guard(ids[1]):
        await api.aclose()
        # A clean block: its session was released by aclose, nothing to raise.
    assert fake_browserbase.status(ids[1]) == "COMPLETED"
    assert fake_browserbase.received.updates == {ids[0]: 1, ids[1]: 1}


@pytest.mark.asyncio
async def test_closing_releases_what_detached_guards_hold_and_their_cancellation_stays(
    fake_browserbase: FakeBrowserbase,
) -> None:
    # Ctrl-C: `async with SessionsAPI` exits before the tasks that hold guards are cancelled.
    ids = fake_browserbase.add_sessions(3)
    entered = 0
    all_in = asyncio.Event()

    async def scrape(api: SessionsAPI, session_id: str) -> None:
        nonlocal entered
        async with api.guard(session_id):
            entered += 1
            if entered == len(ids):
                all_in.set()
            await asyncio.Event().wait()  # works until cancelled

    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        tasks = [asyncio.create_task(scrape(api, session_id)) for session_id in ids]
        await all_in.wait()
    assert all(fake_browserbase.status(session_id) == "COMPLETED" for session_id in ids)
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes), outcomes
    assert fake_browserbase.received.requests["update"] == 3


@pytest.mark.asyncio
async def test_a_failing_release_of_any_class_never_replaces_the_blocks_cancellation(
    fake_browserbase: FakeBrowserbase,
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url)
    task = await _parked_in_a_guard(api, sid)
    # Forget the open guard, so that its exit meets a closed client (as where none is held).
    for held in [getattr(getattr(api, "_releaser", None), "holds", set())]:
        held.clear()
    await api.aclose()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake_browserbase.status(sid) == "RUNNING"


@pytest.mark.asyncio
async def test_a_close_cancelled_while_it_releases_the_guards_finishes_them_first(
    fake_browserbase: FakeBrowserbase,
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url)
    guarded = await _parked_in_a_guard(api, sid)
    fake_browserbase.hold()
    closing = asyncio.create_task(api.aclose())
    await fake_browserbase.wait_for_in_flight(1)
    closing.cancel()
    await _until(lambda: closing.cancelling() == 1)
    fake_browserbase.let_go()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert fake_browserbase.status(sid) == "COMPLETED"
    assert "closed" in repr(api)
    guarded.cancel()
    with pytest.raises(asyncio.CancelledError):
        await guarded
    assert fake_browserbase.received.requests["update"] == 1


async def _parked_in_a_guard(api: SessionsAPI, session_id: str) -> asyncio.Task[None]:
    """A task whose block holds *session_id* in a guard until cancelled; returned once inside."""
    inside = asyncio.Event()

    async def block() -> None:
        async with api.guard(session_id):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(block())
    await inside.wait()
    return task


# -- 4. no foreign exception, whatever the answer --------------------------------


@pytest.mark.asyncio
async def test_json_nested_too_deep_is_a_validation_error(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault("body", 200, {}, DEEP), route="retrieve")
    fake_browserbase.inject(Fault("body", 200, {}, DEEP), route="list")
    async with make_api() as api:
        with pytest.raises(APIResponseValidationError, match="not JSON"):
            await api.retrieve(sid)
        with pytest.raises(APIResponseValidationError, match="not JSON"):
            await api.list()


@pytest.mark.asyncio
async def test_a_deep_error_body_is_that_statuss_error_and_aborts_no_run(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(200)
    deep_502 = Fault("body", 502, {}, DEEP)
    fake_browserbase.inject(*[deep_502] * 12, route="update")
    async with make_api(retry=RetryPolicy(max_attempts=1)) as api:
        with pytest.raises(InternalServerError, match="502"):
            await api.release(ids[0])
        report = await api.release_many(ids[1:], concurrency=10)
    assert len(report.results) == 199
    assert all(isinstance(r.error, InternalServerError) for r in report.failed)
    assert all(
        fake_browserbase.status(result.session_id) == "COMPLETED" for result in report.released
    )
    assert len(report.released) >= 199 - 11


# -- 5. one event loop ------------------------------------------------------------


def test_a_client_used_from_a_second_event_loop_says_what_to_do() -> None:
    with FakeBrowserbase.in_thread() as fake:
        (sid,) = fake.add_sessions(1)
        api = SessionsAPI(fake.api_key, base_url=fake.base_url)

        async def enter() -> None:
            await api.__aenter__()  # binds the client to this loop, opens nothing

        asyncio.run(enter())
        with pytest.raises(RuntimeError, match="another event loop") as caught:
            asyncio.run(api.release(sid))
        assert "inside the loop that uses it" in str(caught.value)
        assert "Event loop is closed" not in str(caught.value)
        asyncio.run(api.aclose())
        assert fake.received.total == 0
        assert fake.status(sid) == "RUNNING"


def test_a_client_left_open_by_its_loop_leaks_no_socket_into_the_next() -> None:
    # The sync wrapper: one asyncio.run per call, a client made once and never closed.
    with FakeBrowserbase.in_thread() as fake:
        first, second = fake.add_sessions(2)
        api = SessionsAPI(fake.api_key, base_url=fake.base_url)
        assert asyncio.run(api.release(first)).status == SessionStatus.COMPLETED
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(api.release(second))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del api
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught
        assert fake.status(second) == "RUNNING"


# -- 6 and 7. closing ends what waits and what is on the wire --------------------


@pytest.mark.asyncio
async def test_closing_ends_a_call_sleeping_in_a_backoff(
    fake_browserbase: FakeBrowserbase,
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(503), route="update")
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=SLOW)
    call = asyncio.create_task(api.release(sid))
    await fake_browserbase.wait_for_requests(1)
    await _until(lambda: api.flow_stats().in_flight == 0)  # answered: off to its backoff
    await api.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(call, 10)  # not the minute of its backoff


@pytest.mark.asyncio
async def test_closing_ends_a_wait_poll(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    (sid,) = fake_browserbase.add_sessions(1)
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=SLOW)
    call = asyncio.create_task(api.release(sid, wait=True, wait_timeout=600))
    await fake_browserbase.wait_for_requests(2)  # the update, then the first poll
    await _until(lambda: api.flow_stats().in_flight == 0)  # answered: off to its poll's sleep
    await api.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(call, 10)


@pytest.mark.asyncio
async def test_closing_ends_our_calls_on_a_callers_session_and_leaves_it_open(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ids = fake_browserbase.add_sessions(3)
    async with aiohttp.ClientSession() as http:
        api = SessionsAPI(
            fake_browserbase.api_key, base_url=fake_browserbase.base_url, http_session=http
        )
        fake_browserbase.hold()
        calls = [asyncio.create_task(api.release(session_id)) for session_id in ids]
        await fake_browserbase.wait_for_in_flight(3)
        await api.aclose()
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        assert all(isinstance(outcome, APIConnectionError) for outcome in outcomes), outcomes
        assert all("closed" in str(outcome) for outcome in outcomes)
        assert not http.closed
        fake_browserbase.let_go()
        headers = {"X-BB-API-Key": fake_browserbase.api_key}
        async with http.get(f"{fake_browserbase.base_url}/v1/sessions", headers=headers) as answer:
            assert answer.status == 200


@pytest.mark.asyncio
async def test_a_callers_own_cancellation_during_close_stays_a_cancellation(
    fake_browserbase: FakeBrowserbase,
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with aiohttp.ClientSession() as http:
        api = SessionsAPI(
            fake_browserbase.api_key, base_url=fake_browserbase.base_url, http_session=http
        )
        fake_browserbase.hold()
        call = asyncio.create_task(api.retrieve(sid))
        await fake_browserbase.wait_for_in_flight(1)
        call.cancel()
        await api.aclose()
        with pytest.raises(asyncio.CancelledError):
            await call
        fake_browserbase.let_go()


# -- 8. release_iter's memo -------------------------------------------------------


@pytest.mark.asyncio
async def test_release_iters_memo_stays_bounded_while_its_oldest_id_hangs(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []

    class Watched(_bulk._Memo):
        def lookup(self, session_id: str) -> Any:
            found = super().lookup(session_id)
            sizes.append(len(self))
            return found

    monkeypatch.setattr(_bulk, "STREAM_MEMO_SIZE", 50)
    monkeypatch.setattr(_bulk, "_Memo", Watched)
    ids = fake_browserbase.add_sessions(600)
    fake_browserbase.inject(Fault.hang(), route="update")  # the first id never answers
    done = 0
    async with make_api(timeout=None) as api:
        async with asyncio.timeout(30):
            async for _ in api.release_iter(ids, concurrency=4):
                done += 1
                if done == len(ids) - 1:
                    break
    assert max(sizes) <= 50


# -- 9 and 10. every number checked, and no pool larger than the input ----------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda api, sid: api.release(sid, wait=True, wait_timeout=math.nan), "wait_timeout"),
        (lambda api, sid: api.release(sid, wait=True, wait_timeout="30"), "wait_timeout"),
        (lambda api, sid: api.release(sid, wait_timeout=-1), "wait_timeout"),
        (lambda api, sid: api.release(sid, wait_timeout=math.inf), "wait_timeout"),
        (lambda api, sid: api.release(sid, timeout=math.inf), "timeout"),
        (lambda api, sid: api.release_many([sid], concurrency=2.5), "concurrency"),
        (lambda api, sid: api.release_many([sid], concurrency=True), "concurrency"),
        (lambda api, sid: api.release_many([sid], wait_timeout=math.nan), "wait_timeout"),
        (lambda api, sid: api.release_all(wait_timeout="30"), "wait_timeout"),
        (lambda api, sid: api.release_all(older_than=math.inf), "older_than"),
        (lambda api, sid: _drain(api.release_iter([sid], concurrency=0.5)), "concurrency"),
        (lambda api, sid: _drain(api.release_iter([sid], wait_timeout=math.nan)), "wait_timeout"),
        (lambda api, sid: _enter(api.guard(sid, release_timeout=math.nan)), "release_timeout"),
    ],
)
@pytest.mark.asyncio
async def test_every_number_of_every_call_is_checked_before_any_request(
    call: Any, message: str, fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        with pytest.raises(ValueError, match=message):
            await call(api, sid)
    assert fake_browserbase.received.total == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0.5},
        {"max_connections": True},
        {"max_connections": 0},
        {"timeout": math.nan},
        {"max_response_bytes": 1.5},
    ],
)
def test_the_clients_numbers_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SessionsAPI(KEY, base_url="http://127.0.0.1:9", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"max_rate_limited": 1.5},
        {"max_delay": math.inf},
        {"initial_delay": math.nan},
        {"budget_ratio": "0.2"},
    ],
)
def test_the_retry_policys_numbers_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(**kwargs)


async def _drain(results: AsyncIterator[ReleaseResult]) -> None:
    async for _ in results:
        pass


async def _enter(guard: Any) -> None:
    async with guard:
        pass


@pytest.mark.asyncio
async def test_a_huge_concurrency_starts_no_more_workers_than_ids(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(3)
    started: list[str] = []
    loop = asyncio.get_running_loop()

    def count(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        started.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop)

    loop.set_task_factory(count)
    try:
        async with make_api() as api:
            report = await api.release_many(ids[:1], concurrency=10**6)
            assert report.ok
            report = await api.release_many(iter(ids[1:]), concurrency=10**5)
            assert report.ok
    finally:
        loop.set_task_factory(None)
    # Each run: one worker per id taken, and the one that found the end.
    assert started.count("drive.<locals>.worker") <= 2 + 3


# -- 12. the key in no error's chain ---------------------------------------------


@pytest.mark.asyncio
async def test_the_key_is_in_no_exception_of_an_errors_chain() -> None:
    async def malformed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(malformed, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with SessionsAPI(
            KEY, base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1)
        ) as api:
            with pytest.raises(APIConnectionError) as caught:
                await api.retrieve("s-1")
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.__cause__ is not None
    texts = ["".join(traceback.format_exception(caught.value))]
    for link in _chain(caught.value):
        texts += [repr(link), str(link), repr(link.args)]
        texts += [repr(value) for value in vars(link).values()] if hasattr(link, "__dict__") else []
    assert not [text for text in texts if KEY in text]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending = [exc]
    while pending:
        link = pending.pop()
        if any(link is known for known in seen):
            continue
        seen.append(link)
        pending += [chained for chained in (link.__cause__, link.__context__) if chained]
    return seen


# -- 13. a Session wherever an id is taken ---------------------------------------


@pytest.mark.asyncio
async def test_a_session_is_taken_wherever_an_id_is(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.add_sessions(6)
    async with make_api() as api:
        listed = await api.list(status="RUNNING")
        report = await api.release_many(listed[:3])
        assert report.ok
        assert [r.session_id for r in report.results] == [s.id for s in listed[:3]]
        streamed = [r async for r in api.release_iter(listed[3:4])]
        assert streamed[0].ok
        assert streamed[0].session_id == listed[3].id
        assert (await api.retrieve(listed[4])).id == listed[4].id
        assert (await api.update(listed[4])).id == listed[4].id
        assert (await api.release(listed[4])).id == listed[4].id
        async with api.guard(listed[5]):
            pass
    assert all(fake_browserbase.status(s.id) == "COMPLETED" for s in listed)


async def _until(condition: Any, turns: int = 1000) -> None:
    """Let the loop run until *condition()* holds: a bounded number of turns, never a clock."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.mark.asyncio
async def test_closing_at_any_moment_of_a_call_on_a_callers_session_never_cancels_its_caller(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ids = fake_browserbase.add_sessions(4)
    outcomes: list[object] = []
    async with aiohttp.ClientSession() as http:
        # Every phase of a call: before it is sent, on the wire, answered but not yet resumed.
        for turns in range(60):
            api = SessionsAPI(
                fake_browserbase.api_key, base_url=fake_browserbase.base_url, http_session=http
            )
            calls = [asyncio.create_task(api.retrieve(session_id)) for session_id in ids]
            for _ in range(turns):
                await asyncio.sleep(0)
            await api.aclose()
            outcomes += await asyncio.gather(*calls, return_exceptions=True)
    kinds = {type(outcome).__name__ for outcome in outcomes}
    assert kinds <= {"Session", "APIConnectionError", "ClientClosedError"}, kinds
    assert "Session" in kinds
    assert "APIConnectionError" in kinds, kinds


@pytest.mark.asyncio
async def test_closing_cuts_a_guards_own_longer_release_to_the_closings_bound(
    fake_browserbase: FakeBrowserbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    import browserbase_async._client

    monkeypatch.setattr(browserbase_async._client, "CLOSE_RELEASE_TIMEOUT", 0.05)
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.hang(), route="update")
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST)

    async def guarded() -> None:
        async with api.guard(sid, release_timeout=1e9):
            pass

    task = asyncio.create_task(guarded())
    await fake_browserbase.wait_for_requests(1)  # the guard's own release: on the wire, hung
    await asyncio.wait_for(api.aclose(), 30)  # within the closing's bound, not the guard's
    with pytest.raises(APITimeoutError, match="took over") as caught:
        await task
    assert "e+09" not in str(caught.value)  # how long it took, not the bound it began with


@pytest.mark.asyncio
async def test_closing_at_any_moment_of_the_guards_releases_ends_every_session(
    fake_browserbase: FakeBrowserbase,
) -> None:
    # Every phase of the guards' own releases as the close finds them: not begun, begun but
    # not run, on the wire, ended with the hold not yet let go (its done callback pending).
    for turns in range(40):
        ids = fake_browserbase.add_sessions(3)
        api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST)
        gate = asyncio.Event()

        async def guarded(api: SessionsAPI, session_id: str, gate: asyncio.Event) -> None:
            async with api.guard(session_id):
                await gate.wait()

        tasks = [asyncio.create_task(guarded(api, session_id, gate)) for session_id in ids]
        await asyncio.sleep(0)
        gate.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        await api.aclose()
        assert await asyncio.gather(*tasks) == [None] * 3, turns
        assert {fake_browserbase.sessions[i]["status"] for i in ids} == {"COMPLETED"}, turns


@pytest.mark.asyncio
@pytest.mark.parametrize("turns", range(4))
async def test_closing_cuts_a_guards_release_that_has_not_run_yet_to_its_bound(
    fake_browserbase: FakeBrowserbase, monkeypatch: pytest.MonkeyPatch, turns: int
) -> None:
    import browserbase_async._client

    monkeypatch.setattr(browserbase_async._client, "CLOSE_RELEASE_TIMEOUT", 0.05)
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.hang(), route="update")
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST)
    gate = asyncio.Event()

    async def guarded() -> None:
        async with api.guard(sid, release_timeout=1e9):
            await gate.wait()

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    gate.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    await asyncio.wait_for(api.aclose(), 30)  # within the closing's bound, not the guard's
    with pytest.raises(APITimeoutError, match="took over"):
        await task
