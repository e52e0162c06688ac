"""No session the client created leaks: a close mid-create, a lagging index, odd ids, bulk runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from browserbase_async import (
    APIResponseValidationError,
    BulkReleaseAborted,
    ReleaseResult,
    SessionsAPI,
)
from browserbase_async._lifecycle import CREATE_TAG_KEY
from browserbase_async.testing import FakeBrowserbase, Fault

from .conftest import FAST, ApiFactory
from .helpers import the_task_running, until

pytestmark = pytest.mark.asyncio

ODD_ID = "odd id/1?x#y%z"
"""An id with characters the client never takes from a caller: a space, a slash, a query."""
HANG_GUARD = 30.0
"""Seconds after which a test that would hang fails instead (a bound, never a timing)."""


def running(fake: FakeBrowserbase) -> list[str]:
    return [sid for sid, s in fake.sessions.items() if s["status"] == "RUNNING"]


async def cancel_while_the_lookup_waits(
    api: SessionsAPI, fake: FakeBrowserbase
) -> asyncio.Task[Any]:
    """A create made on the server, its answer stalled, cancelled: its settling's lookup
    waits (held) until the test lets the fake go. Returns the cancelled create's task."""
    fake.inject(Fault.stall(), route="create")
    call = asyncio.create_task(api.create())
    await fake.wait_until(lambda: len(fake.sessions) == 1)
    fake.hold()
    call.cancel()
    await fake.wait_until(lambda: fake.received.requests["list"] == 1)
    return call


def made_by_create(fake: FakeBrowserbase, session_id: str) -> dict[str, object]:
    """The create's answer for *session_id*, as the API gives it (with its connection fields)."""
    return {
        **fake.sessions[session_id],
        "connectUrl": "wss://connect.fake.invalid/?signingKey=k",
        "seleniumRemoteUrl": "http://connect.fake.invalid/webdriver",
        "signingKey": "k",
    }


# -- 1. aclose() racing a create -----------------------------------------------------------


async def test_closing_while_a_create_is_on_the_wire_releases_what_it_made() -> None:
    async with FakeBrowserbase() as fake:
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        fake.inject(Fault.stall(), route="create")  # the session made, its answer never sent
        call = asyncio.create_task(api.create(user_metadata={"job": "a"}))
        await fake.wait_until(lambda: len(fake.sessions) == 1)
        await api.aclose()
        assert running(fake) == []
        with pytest.raises(RuntimeError, match="closed") as caught:
            await asyncio.wait_for(call, HANG_GUARD)
    (session,) = fake.sessions.values()
    tag = session["userMetadata"][CREATE_TAG_KEY]
    assert any(tag in note for note in caught.value.__notes__)
    assert api._lifecycle.counts.released_after_giving_up == 1


async def test_closing_while_a_create_looks_its_tag_up_releases_what_it_made() -> None:
    async with FakeBrowserbase() as fake:
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        fake.inject(Fault.lose(), route="create")
        fake.inject(Fault.hang(), route="list")  # the create's own lookup never answers
        call = asyncio.create_task(api.create())
        await fake.wait_until(lambda: fake.received.requests["list"] == 1)
        await api.aclose()
        assert running(fake) == []
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(call, HANG_GUARD)
    assert len(fake.sessions) == 1
    assert fake.received.requests["create"] == 1


async def test_a_create_waiting_for_a_permit_while_the_client_closes_is_never_sent() -> None:
    async with FakeBrowserbase() as fake:
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST, max_connections=1)
        (held,) = fake.add_sessions(1)
        entered = asyncio.Event()

        async def block() -> None:
            async with api.guard(held):
                entered.set()
                await asyncio.Event().wait()

        guarded = asyncio.create_task(block())
        await entered.wait()
        fake.hold()
        first = asyncio.create_task(api.create())  # holds the one permit, on the wire
        await fake.wait_for_in_flight(1)
        second = asyncio.create_task(api.create())  # waits for that permit
        await until(lambda: len(api._flow._waiters) == 1)
        closing = asyncio.create_task(api.aclose())
        await until(lambda: api._lifecycle.closing)
        with pytest.raises(RuntimeError, match="closed"):
            await api.create()  # a create that comes while the client closes
        fake.let_go()
        await asyncio.wait_for(closing, HANG_GUARD)
        for call in (first, second):
            with pytest.raises(RuntimeError, match="closed"):
                await asyncio.wait_for(call, HANG_GUARD)
        guarded.cancel()
        with pytest.raises(asyncio.CancelledError):
            await guarded
    assert running(fake) == []
    # The first was cut on the wire (its lookup found nothing made); the second never went out.
    assert fake.received.requests["create"] == 1


async def test_closing_joins_the_settling_a_cancelled_create_began() -> None:
    async with FakeBrowserbase() as fake:
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        call = await cancel_while_the_lookup_waits(api, fake)
        closing = asyncio.create_task(api.aclose())
        await until(lambda: api._lifecycle.closing)
        fake.let_go()
        await asyncio.wait_for(closing, HANG_GUARD)
        with pytest.raises(asyncio.CancelledError):
            await call
    assert running(fake) == []
    assert fake.received.requests["list"] == 1  # settled once, not once per asking


async def test_a_settling_cancelled_itself_says_which_tag_may_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A second Ctrl-C: asyncio.run cancels every task, a cancelled create's settling included.
    async with FakeBrowserbase() as fake:
        async with SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api:
            call = await cancel_while_the_lookup_waits(api, fake)
            the_task_running("_abandon").cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            fake.let_go()
        (session,) = fake.sessions.values()
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert session["userMetadata"][CREATE_TAG_KEY] in record.getMessage()
    assert "cancelled" in record.getMessage()


async def test_closing_at_any_moment_of_a_cancelled_creates_settling_leaves_nothing() -> None:
    # Every phase of the settling as the close finds it: the lookup on the wire, the release,
    # ended with the create not yet resumed (its settling's done callbacks pending).
    async with FakeBrowserbase() as fake:
        for turns in range(40):
            api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
            fake.inject(Fault.stall(), route="create")
            call = asyncio.create_task(api.create())
            await fake.wait_until(lambda: len(running(fake)) == 1)
            call.cancel()
            for _ in range(turns):
                await asyncio.sleep(0)
            await asyncio.wait_for(api.aclose(), HANG_GUARD)
            with pytest.raises(asyncio.CancelledError):
                await call
            assert running(fake) == [], turns


@pytest.mark.parametrize("turns", range(3))
async def test_closing_cuts_a_cancelled_creates_settling_that_has_not_run_yet_to_its_bound(
    monkeypatch: pytest.MonkeyPatch, turns: int
) -> None:
    import browserbase_async._client
    import browserbase_async._lifecycle

    monkeypatch.setattr(browserbase_async._client, "CLOSE_RELEASE_TIMEOUT", 0.05)
    monkeypatch.setattr(browserbase_async._lifecycle, "RECOVERY_TIMEOUT", 1e9)
    async with FakeBrowserbase() as fake:
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        fake.inject(Fault.stall(), route="create")
        call = asyncio.create_task(api.create())
        await fake.wait_until(lambda: len(fake.sessions) == 1)
        fake.hold()  # the settling's lookup never answers
        call.cancel()
        for _ in range(turns):
            await asyncio.sleep(0)
        await asyncio.wait_for(api.aclose(), HANG_GUARD)  # the close's bound, not the cancel's
        with pytest.raises(asyncio.CancelledError):
            await call
        fake.let_go()


# -- 2. a retried create and a lagging index -------------------------------------------------


async def test_a_retried_create_releases_the_session_a_lagging_lookup_missed(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.lose(), route="create")  # made; its answer lost
    fake_browserbase.inject(Fault.json([]), route="list")  # the index has not caught up
    async with make_api() as api:
        session = await api.create()
        assert running(fake_browserbase) == [session.id]
    assert len(fake_browserbase.sessions) == 2
    assert fake_browserbase.received.requests["create"] == 2
    assert fake_browserbase.received.requests["list"] == 2  # the lookup, and the one after
    assert api._lifecycle.counts.duplicates_released == 1


async def test_a_lookup_that_finds_two_sessions_keeps_one_and_releases_the_other(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.lose(), Fault.lose(), route="create")
    fake_browserbase.inject(Fault.json([]), route="list")  # lags after the first
    async with make_api() as api:
        session = await api.create()
        assert running(fake_browserbase) == [session.id]
    assert len(fake_browserbase.sessions) == 2
    assert fake_browserbase.received.requests["list"] == 2  # no lookup more than needed


async def test_a_create_that_needed_no_retry_costs_no_second_lookup(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.lose(), route="create")
    async with make_api() as api:
        await api.create()
        await api.create()
    assert fake_browserbase.received.requests["list"] == 1


async def test_a_cancelled_create_releases_every_session_its_tag_carries(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.lose(), Fault.stall(), route="create")
    fake_browserbase.inject(Fault.json([]), route="list")
    async with make_api() as api:
        task = asyncio.create_task(api.create())
        await fake_browserbase.wait_until(lambda: len(fake_browserbase.sessions) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert running(fake_browserbase) == []


async def test_a_failed_check_after_a_retried_create_is_logged_and_the_create_stands(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake_browserbase.inject(Fault.status(503), route="create")
    fake_browserbase.inject(Fault.json([]), Fault.status(400), route="list")
    async with make_api() as api:
        session = await api.create()
    assert running(fake_browserbase) == [session.id]
    assert "could not check for a second session" in caplog.text


# -- 3. ids the server gives that a caller could not ----------------------------------------


@pytest.mark.off_spec
async def test_a_session_block_releases_a_session_whose_id_needs_encoding(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.add_session(ODD_ID)
    fake_browserbase.inject(Fault.json(made_by_create(fake_browserbase, ODD_ID), 201))
    async with make_api() as api:
        async with api.session() as session:
            assert session.id == ODD_ID
        assert fake_browserbase.status(ODD_ID) == "COMPLETED"
        with pytest.raises(ValueError, match="invalid session id"):
            await api.release(ODD_ID)  # a caller's id: still refused, before any request
    assert fake_browserbase.received.updates == {ODD_ID: 1}


@pytest.mark.off_spec
async def test_release_all_releases_a_listed_session_whose_id_needs_encoding(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # The sweep's ids are the server's. Before, it reported the session failed (ValueError,
    # 0 attempts) and sent nothing: the reaper left it running.
    fake_browserbase.add_session(ODD_ID)
    plain = fake_browserbase.add_session()
    async with make_api() as api:
        report = await api.release_all()
        assert fake_browserbase.status(ODD_ID) == "COMPLETED"
        fake_browserbase.add_session(f"{ODD_ID}-2")
        (listed,) = await api.list(status="RUNNING")
        # A caller's value, even a Session, is held to the contract's URL-safe ids.
        (refused,) = (await api.release_many([listed])).results
    assert sorted((r.session_id, r.ok) for r in report.results) == sorted(
        [(ODD_ID, True), (plain, True)]
    )
    assert (refused.session_id, refused.attempts) == (listed.id, 0)
    assert isinstance(refused.error, ValueError)
    assert fake_browserbase.received.updates == {ODD_ID: 1, plain: 1}


@pytest.mark.off_spec
async def test_a_listed_session_whose_id_no_url_can_address_is_its_own_failure(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.add_session("x")
    listed = [{**fake_browserbase.sessions["x"], "id": ".."}, fake_browserbase.sessions["x"]]
    fake_browserbase.inject(Fault.json(listed), route="list")
    async with make_api() as api:
        report = await api.release_all()
    unaddressable, fine = report.results
    assert (unaddressable.session_id, fine.session_id) == ("..", "x")
    assert isinstance(unaddressable.error, APIResponseValidationError)
    assert fine.ok
    assert fake_browserbase.received.updates == {"x": 1}


@pytest.mark.off_spec
async def test_a_server_id_with_a_terminal_escape_is_released_and_shown_escaped(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    escape = "id\x1b]0;pwned\x07"
    fake_browserbase.add_session(escape)
    fake_browserbase.inject(Fault.json(made_by_create(fake_browserbase, escape), 201))
    fake_browserbase.inject(Fault.status(503), Fault.status(503), Fault.status(503))
    async with make_api() as api:
        with pytest.raises(KeyError) as caught:
            async with api.session():
                raise KeyError("the block's own")
    (note,) = caught.value.__notes__
    assert "\\x1b" in note
    for text in (note, caplog.text):
        assert "\x1b" not in text
        assert "\x07" not in text


@pytest.mark.off_spec
async def test_a_found_session_whose_id_needs_encoding_is_retrieved_or_released(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.add_session(ODD_ID)
    listed = [fake_browserbase.sessions[ODD_ID]]
    fake_browserbase.inject(Fault.drop(), route="create")
    fake_browserbase.inject(Fault.json(listed), route="list")
    fake_browserbase.inject(Fault.json(fake_browserbase.sessions[ODD_ID]), route="retrieve")
    async with make_api() as api:
        with pytest.raises(APIResponseValidationError, match="connectUrl"):
            await api.create()  # found, but its retrieve lacks the connection fields
    assert fake_browserbase.received.requests["retrieve"] == 1
    assert fake_browserbase.status(ODD_ID) == "COMPLETED"


@pytest.mark.off_spec
@pytest.mark.parametrize("bad", ["", ".", ".."])
async def test_an_id_no_url_can_address_is_never_put_into_one(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, bad: str
) -> None:
    fake_browserbase.add_session("x")
    answer = {**made_by_create(fake_browserbase, "x"), "id": bad}
    fake_browserbase.inject(Fault.json(answer, 201), route="create")
    async with make_api() as api:
        with pytest.raises(APIResponseValidationError, match="no URL can address"):
            async with api.session():
                pass
    assert fake_browserbase.received.requests["update"] == 0
    assert fake_browserbase.received.requests["retrieve"] == 0


@pytest.mark.off_spec
async def test_a_lookup_skips_a_session_no_url_can_address(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake_browserbase.add_session("x")
    listed = [{**fake_browserbase.sessions.pop("x"), "id": ".."}]
    fake_browserbase.inject(Fault.drop(), route="create")
    fake_browserbase.inject(Fault.json(listed), route="list")
    async with make_api() as api:
        session = await api.create()  # nothing usable found: sent again
    assert running(fake_browserbase) == [session.id]
    assert "no URL can address" in caplog.text


@pytest.mark.parametrize("block", [False, True], ids=["create", "session"])
async def test_a_lookup_answered_with_other_sessions_never_takes_nor_releases_them(
    fake_browserbase: FakeBrowserbase,
    make_api: ApiFactory,
    caplog: pytest.LogCaptureFixture,
    block: bool,
) -> None:
    # Other workers' sessions, running. A create's answer is lost, and the listing answers
    # sessions that do not carry its tag (a server that ignores q, or reads it otherwise).
    others = [
        fake_browserbase.add_session(user_metadata={"worker": str(n), CREATE_TAG_KEY: "theirs"})
        for n in range(3)
    ]
    listed = [fake_browserbase.sessions[sid] for sid in others]
    fake_browserbase.inject(Fault.lose(), route="create")
    fake_browserbase.inject(Fault.json(listed), Fault.json(listed), route="list")
    async with make_api() as api:
        if block:
            async with api.session() as session:
                assert running(fake_browserbase)[:3] == others
        else:
            session = await api.create()
    assert session.id not in others
    assert session.user_metadata is not None
    assert session.user_metadata[CREATE_TAG_KEY] != "theirs"
    assert running(fake_browserbase)[:3] == others  # none of them taken, none released
    assert "listed 3 sessions that do not carry it" in caplog.text


# -- 4. aclose() and a bulk run waiting on its input -----------------------------------------


async def hung_after(ids: list[str], taken: asyncio.Event) -> AsyncIterator[str]:
    for session_id in ids:
        yield session_id
    taken.set()
    await asyncio.Event().wait()  # an input that never yields again


async def test_closing_ends_a_release_many_waiting_on_a_hung_input() -> None:
    async with FakeBrowserbase() as fake:
        ids = fake.add_sessions(3)
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        taken = asyncio.Event()
        seen: list[ReleaseResult] = []
        fake.hold()
        run = asyncio.create_task(
            api.release_many(hung_after(ids, taken), concurrency=8, on_result=seen.append)
        )
        await taken.wait()
        await fake.wait_for_in_flight(3)
        await api.aclose()
        with pytest.raises(BulkReleaseAborted) as caught:
            await asyncio.wait_for(run, HANG_GUARD)
        fake.let_go()
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "closed" in str(caught.value.__cause__)
    # Every release that was sent is reported: ended by the close, each a failed result.
    assert [result.session_id for result in caught.value.report.results] == ids
    assert not caught.value.report.released
    assert len(seen) == 3


async def test_closing_ends_a_release_iter_waiting_on_a_hung_input() -> None:
    async with FakeBrowserbase() as fake:
        ids = fake.add_sessions(2)
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        taken = asyncio.Event()
        results: list[ReleaseResult] = []

        async def consume() -> None:
            async for result in api.release_iter(hung_after(ids, taken), concurrency=4):
                results.append(result)

        run = asyncio.create_task(consume())
        await taken.wait()
        await until(lambda: len(results) == 2)
        await api.aclose()
        with pytest.raises(BulkReleaseAborted) as caught:
            await asyncio.wait_for(run, HANG_GUARD)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert all(result.ok for result in results)
    assert running(fake) == []


async def test_a_guard_entered_while_the_close_settles_a_create_is_not_left_running() -> None:
    # The close settles a create (its lookup held on the wire) before it closes: a guard
    # entered meanwhile must be either refused on entry or released by the close.
    async with FakeBrowserbase() as fake:
        (guarded,) = fake.add_sessions(1)
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        fake.inject(Fault.stall(), route="create")  # made, its answer never sent
        call = asyncio.create_task(api.create())
        await fake.wait_until(lambda: len(running(fake)) == 2)
        fake.hold()
        closing = asyncio.create_task(api.aclose())
        await fake.wait_until(lambda: fake.received.requests["list"] == 1)  # the settling's
        gate = asyncio.Event()
        entered: list[BaseException | None] = []

        async def guard() -> None:
            try:
                async with api.guard(guarded):
                    entered.append(None)
                    await gate.wait()
            except RuntimeError as exc:
                entered.append(exc)

        block = asyncio.create_task(guard())
        await until(lambda: bool(entered))
        fake.let_go()
        await asyncio.wait_for(closing, HANG_GUARD)  # never raises
        gate.set()
        await asyncio.wait_for(block, HANG_GUARD)
        with pytest.raises(RuntimeError, match="closed"):
            await call
        refused_on_entry = entered[0] is not None
        assert refused_on_entry or running(fake) == [], entered
