"""The reaper over weeks: ages on the server's clock, ended sessions sent nothing,
sessions of unknown age skipped with a warning."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from aiohttp import web

from browserbase_async import Session, SessionsAPI
from browserbase_async._bulk import clock_offset, sort_out
from browserbase_async._converter import structure_session
from browserbase_async.testing import FakeBrowserbase, Fault

from .conftest import ApiFactory
from .helpers import session_json
from .test_answers import serve
from .test_cli import run_cli


def server_ago(fake: FakeBrowserbase, **delta: float) -> datetime:
    """A moment *delta* ago by the fake's clock."""
    return datetime.now(UTC) + timedelta(seconds=fake.clock_offset) - timedelta(**delta)


@pytest.mark.asyncio
async def test_a_client_whose_clock_is_fast_spares_a_young_job(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.clock_offset = -600.0  # the client is 10 minutes fast
    young = fake_browserbase.add_session(started_at=server_ago(fake_browserbase, seconds=5))
    old = fake_browserbase.add_session(started_at=server_ago(fake_browserbase, minutes=6))
    async with make_api() as api:
        report = await api.release_all(older_than=timedelta(minutes=5))
        skew = (datetime.now(UTC) - api.server_now()).total_seconds()
    assert [result.session_id for result in report.results] == [old]
    assert fake_browserbase.status(young) == "RUNNING"
    assert 598 <= skew <= 602


@pytest.mark.asyncio
async def test_a_server_whose_clock_is_ahead_still_has_its_old_sessions_reaped(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.clock_offset = 120.0
    sid = fake_browserbase.add_session(started_at=server_ago(fake_browserbase, seconds=10))
    async with make_api() as api:
        report = await api.release_all(older_than=0)
    assert [result.session_id for result in report.results] == [sid]


@pytest.mark.asyncio
async def test_the_cli_measures_ages_on_the_server_clock(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.clock_offset = -600.0
    fake_browserbase.add_session(started_at=server_ago(fake_browserbase, seconds=5))
    ran = await run_cli(fake_browserbase, "release", "--all", "--older-than", "5m")
    assert ran.code == 0, ran.err
    assert fake_browserbase.received.requests["update"] == 0


def test_the_offset_reads_the_date_header() -> None:
    received = datetime(2026, 12, 1, 12, 0, 0, 300000, tzinfo=UTC)
    assert clock_offset({"Date": "Tue, 01 Dec 2026 12:10:00 GMT"}, received) == pytest.approx(600.2)
    assert clock_offset({"Date": "Tue, 01 Dec 2026 12:00:00 GMT"}, received) == 0.0
    assert clock_offset({"Date": "yesterday"}, received) == 0.0
    assert clock_offset({"Date": "Tue, 01 Dec 2026 12:10:00"}, received) == 0.0  # no zone
    assert clock_offset({}, received) == 0.0


@pytest.mark.asyncio
async def test_release_all_of_every_status_sends_nothing_to_ended_sessions(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    running = fake_browserbase.add_sessions(2)
    ended = fake_browserbase.add_sessions(10, status="COMPLETED")
    ended += fake_browserbase.add_sessions(1, status="ERROR")
    async with make_api() as api:
        report = await api.release_all(status=None)
    assert [result.session_id for result in report.results] == running
    assert report.ok
    assert sorted(session.id for session in report.already_ended) == sorted(ended)
    assert report.age_unknown == []
    assert set(fake_browserbase.received.updates) == set(running)


@pytest.mark.asyncio
async def test_the_cli_sends_nothing_to_ended_sessions(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.add_sessions(3, status="COMPLETED")
    ran = await run_cli(fake_browserbase, "release", "--all", "--status", "COMPLETED")
    assert ran.code == 0, ran.err
    assert fake_browserbase.received.requests["update"] == 0


def test_a_session_whose_age_cannot_be_told_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(UTC)
    known = structure_session(session_json(id="known"))
    unknown = [attrs.evolve(known, id=f"unknown-{n}", started_at=None) for n in range(7)]
    chosen = sort_out([known, *unknown], older_than=60.0, where=None, now=now)
    assert chosen.chosen == [known]
    assert chosen.age_unknown == unknown
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "skipped 7 session(s) whose age cannot be told" in record.getMessage()
    assert "and 2 more" in record.getMessage()
    # Without an age filter, the age does not matter.
    assert sort_out(unknown, older_than=None, where=None, now=now).chosen == unknown


@pytest.mark.asyncio
async def test_the_reaper_skips_a_listed_session_without_started_at(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    old = fake_browserbase.add_session(started_at=datetime.now(UTC) - timedelta(hours=2))
    drifted = fake_browserbase.add_session(started_at=datetime.now(UTC) - timedelta(hours=2))
    # A drifted listing, off the API's description on purpose: served as a fault.
    listing = [dict(session) for session in fake_browserbase.sessions.values()]
    del listing[1]["startedAt"]
    fake_browserbase.inject(Fault.json(listing), route="list")
    async with make_api() as api:
        report = await api.release_all(older_than=3600)
    assert [result.session_id for result in report.results] == [old]
    assert [session.id for session in report.age_unknown] == [drifted]
    assert fake_browserbase.status(drifted) == "RUNNING"


def test_sessions_are_sorted_out_by_state_age_and_predicate() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    base = structure_session(session_json())

    def make(name: str, status: str, hours: float, keep_alive: bool = False) -> Session:
        started = now - timedelta(hours=hours)
        return attrs.evolve(base, id=name, status=status, started_at=started, keep_alive=keep_alive)

    listing = [
        make("old", "RUNNING", 3),
        make("young", "RUNNING", 0.1),
        make("kept", "RUNNING", 3, keep_alive=True),
        make("done", "COMPLETED", 3),
        make("timed-out", "TIMED_OUT", 3),
    ]
    chosen = sort_out(listing, older_than=3600, where=lambda s: not s.keep_alive, now=now)
    assert [s.id for s in chosen.chosen] == ["old"]
    assert [s.id for s in chosen.already_ended] == ["done", "timed-out"]


@pytest.mark.asyncio
async def test_a_date_at_the_calendars_edge_is_no_clock() -> None:
    # The server's "now" would be past year 9999: an OverflowError escaped from server_now(),
    # release_all(older_than=...) and every `release --all` of the CLI.
    date = "Fri, 31 Dec 9999 23:59:59 -2359"
    assert clock_offset({"Date": date}, datetime.now(UTC)) == 0.0

    async def listing(request: web.Request) -> web.Response:
        old = session_json(id="s-old", startedAt="2020-01-01T00:00:00Z")
        return web.json_response([old], headers={"Date": date})

    async with serve(listing) as (url, _), SessionsAPI("k", base_url=url) as api:
        listed = await api.list()
        assert abs((api.server_now() - datetime.now(UTC)).total_seconds()) < 60
        chosen = sort_out(listed, older_than=60, where=None, now=api.server_now()).chosen
    assert [session.id for session in chosen] == ["s-old"]
