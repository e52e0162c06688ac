"""Scraper ergonomics: release(wait=True) and the release guard."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from browserbase_async import (
    APITimeoutError,
    InternalServerError,
    RetryPolicy,
    SessionsAPI,
    SessionStatus,
)
from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

from .conftest import ApiFactory
from .helpers import load_the_clock, the_task_running

pytestmark = pytest.mark.asyncio


async def test_wait_polls_until_the_session_ends(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=0.05)
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        assert (await api.release(sid)).status == SessionStatus.RUNNING
        (other,) = fake_browserbase.add_sessions(1)
        session = await api.release(other, wait=True, wait_timeout=5.0)
    assert session.status is SessionStatus.COMPLETED
    assert fake_browserbase.received.requests["retrieve"] >= 1


async def test_wait_gives_up_with_a_timeout(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        with pytest.raises(APITimeoutError, match=r"terminal state within 0\.1 s"):
            await api.release(sid, wait=True, wait_timeout=0.1)
    assert fake_browserbase.status(sid) == "RUNNING"


async def test_wait_returns_at_once_when_already_terminal(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        await api.release(sid, wait=True)
    assert fake_browserbase.received.requests == {"update": 1}


async def test_guard_releases_after_a_clean_block(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api, api.guard(sid):
        assert fake_browserbase.status(sid) == "RUNNING"
    assert fake_browserbase.status(sid) == "COMPLETED"


async def test_guard_releases_when_the_block_raises(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        with pytest.raises(KeyError, match="scrape failed"):
            async with api.guard(sid):
                raise KeyError("scrape failed")
    assert fake_browserbase.status(sid) == "COMPLETED"


async def test_guard_releases_when_cancelled_even_if_the_release_is_slow(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    inside = asyncio.Event()

    async def scrape(api: SessionsAPI) -> None:
        async with api.guard(sid):
            inside.set()
            await asyncio.Event().wait()  # a scrape that never ends by itself

    async with make_api() as api:
        task = asyncio.create_task(scrape(api))
        await inside.wait()
        fake_browserbase.hold()
        task.cancel()
        await fake_browserbase.wait_for_in_flight(1)  # the release is on the wire, held
        task.cancel()  # cancelled again while the release is under way
        await asyncio.sleep(0)
        assert not task.done()  # the release goes on, shielded
        fake_browserbase.let_go()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fake_browserbase.status(sid) == "COMPLETED"
    assert fake_browserbase.received.total == 1


async def test_guard_with_wait_confirms_the_end(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=0.01)
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api, api.guard(sid, wait=True):
        pass
    assert fake_browserbase.status(sid) == "COMPLETED"
    assert fake_browserbase.received.requests["retrieve"] >= 1


async def test_a_failed_release_never_hides_the_blocks_error(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.status(500)] * 3)
    async with make_api() as api:
        with pytest.raises(KeyError) as caught:
            async with api.guard(sid):
                raise KeyError("scrape failed")
    notes = getattr(caught.value, "__notes__", [])
    assert notes == [
        f"and releasing session {sid} failed:"
        " InternalServerError('500 Internal Server Error: fake error 500')"
    ]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage() == (
        f"could not release session {sid} after KeyError: 500 Internal Server Error: fake error 500"
    )


async def test_a_failed_release_after_a_clean_block_raises(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.status(500)] * 3)
    async with make_api() as api:
        with pytest.raises(InternalServerError) as caught:
            async with api.guard(sid):
                pass
    # Which session, and that it may run on: the error alone said "500" and nothing else.
    assert getattr(caught.value, "__notes__", []) == [
        f"releasing session {sid} failed: it may still be running"
    ]
    assert fake_browserbase.status(sid) == "RUNNING"


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "loaded"])
async def test_the_guards_release_is_bounded(
    fake_browserbase: FakeBrowserbase,
    make_api: ApiFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    loaded: bool,
) -> None:
    if loaded:
        # The bound said is the bound given: it said 0.104 s once, on a busy machine.
        load_the_clock(monkeypatch)
    caplog.set_level(logging.WARNING)
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.hang())
    async with make_api(retry=RetryPolicy(max_attempts=1)) as api:
        with pytest.raises(APITimeoutError, match=r"took over 0\.1 s"):
            async with api.guard(sid, release_timeout=0.1):
                pass
    # The block ended normally: the failure is raised, not logged.
    assert not caplog.records
    assert fake_browserbase.received.answers["hung"] == 1


async def test_guard_checks_the_id_on_entry(make_api: ApiFactory) -> None:
    async with make_api() as api:
        with pytest.raises(ValueError, match="session id"):
            async with api.guard("../x"):
                pass


async def test_cancelled_guard_whose_release_fails_notes_it(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.status(500)] * 3)
    inside = asyncio.Event()

    async def scrape(api: SessionsAPI) -> None:
        async with api.guard(sid):
            inside.set()
            await asyncio.Event().wait()

    async with make_api() as api:
        task = asyncio.create_task(scrape(api))
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
    assert getattr(caught.value, "__notes__", []) == [
        f"and releasing session {sid} failed:"
        " InternalServerError('500 Internal Server Error: fake error 500')"
    ]


async def test_a_release_cancelled_itself_is_a_cancellation_of_the_guard(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # What a loop shutting down does: it cancels every task, the shielded release included.
    (sid,) = fake_browserbase.add_sessions(1)

    async def scrape(api: SessionsAPI) -> None:
        async with api.guard(sid):
            pass

    async with make_api() as api:
        fake_browserbase.hold()
        task = asyncio.create_task(scrape(api))
        await fake_browserbase.wait_for_in_flight(1)
        the_task_running("bounded").cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fake_browserbase.let_go()


async def test_a_release_cancelled_itself_says_the_session_may_still_run(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A second Ctrl-C: asyncio.run then cancels every task, the shielded releases included,
    # and the program ends. What they leave running is said, never passed over in silence.
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        fake_browserbase.hold()
        guarded = asyncio.create_task(enter_and_leave(api, sid))
        await fake_browserbase.wait_for_in_flight(1)
        the_task_running("bounded").cancel()
        with pytest.raises(asyncio.CancelledError):
            await guarded
        fake_browserbase.let_go()
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sid in record.getMessage()
    assert "cancelled" in record.getMessage()


async def enter_and_leave(api: SessionsAPI, session_id: str) -> None:
    async with api.guard(session_id):
        pass


@pytest.mark.parametrize("block_raises", [False, True], ids=["clean", "raised"])
async def test_a_release_that_fails_while_the_guard_is_cancelled_is_still_said(
    fake_browserbase: FakeBrowserbase,
    make_api: ApiFactory,
    caplog: pytest.LogCaptureFixture,
    block_raises: bool,
) -> None:
    # A cancellation that lands while the release on exit runs (a timeout, a TaskGroup, a
    # shutdown) waits for it; a release that then fails must not go unsaid for that.
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(503), route="update")

    async def scrape(api: SessionsAPI) -> None:
        async with api.guard(sid):
            if block_raises:
                raise KeyError("scrape failed")

    async with make_api(retry=RetryPolicy(max_attempts=1)) as api:
        fake_browserbase.hold()
        task = asyncio.create_task(scrape(api))
        await fake_browserbase.wait_for_in_flight(1)
        task.cancel()  # reaches the guard at the loop's next turn, long before the answer
        fake_browserbase.let_go()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
    assert fake_browserbase.status(sid) == "RUNNING"
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sid in record.getMessage()
    assert "503" in record.getMessage()
    assert any(sid in note for note in getattr(caught.value, "__notes__", []))
