"""Confirmed releases: release(wait=True) past failing polls and 404s, at a pace of its own;
a guard's cancellation never held back by its timeouts."""

from __future__ import annotations

import asyncio
import math

import pytest

from browserbase_async import (
    APITimeoutError,
    AuthenticationError,
    RetryPolicy,
    SessionsAPI,
    _release,
)
from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

from .conftest import ApiFactory

pytestmark = pytest.mark.asyncio

ONE_ATTEMPT = RetryPolicy(max_attempts=1)
NEVER = 1e9
"""Seconds that a guard's release may take: as good as never bounded (infinity is refused)."""


def completed(fake: FakeBrowserbase, session_id: str) -> Fault:
    """The answer of a retrieve that finds the session ended."""
    return Fault.json({**fake.sessions[session_id], "status": "COMPLETED"})


async def test_a_404_while_polling_after_an_accepted_release_means_ended(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    sid, other = fake_browserbase.add_sessions(2)
    fake_browserbase.inject(Fault.status(404, message="Session not found"), route="retrieve")
    async with make_api() as api:
        session = await api.release(sid, wait=True, wait_timeout=30.0)
        assert session.id == sid  # as last seen: the session is gone, not failed
        fake_browserbase.inject(Fault.status(404), route="retrieve")
        report = await api.release_many([other], wait=True, wait_timeout=30.0)
    assert report.ok
    assert fake_browserbase.received.requests["retrieve"] == 2


async def test_failing_polls_are_tried_again_until_the_session_ends(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    ids = fake_browserbase.add_sessions(5)
    async with make_api(retry=ONE_ATTEMPT) as api:
        (first,) = ids[:1]
        fake_browserbase.inject(
            Fault.status(503),
            Fault.drop(),
            Fault.status(502),
            completed(fake_browserbase, first),
            route="retrieve",
        )
        session = await api.release(first, wait=True, wait_timeout=30.0)
        assert session.status == "COMPLETED"
        blips = [Fault.status(503)] * 4
        fake_browserbase.inject(*blips, route="retrieve")
        for sid in ids[1:]:
            fake_browserbase.inject(completed(fake_browserbase, sid), route="retrieve")
        report = await api.release_many(ids[1:], wait=True, wait_timeout=30.0)
    assert report.ok, report.failed


async def test_a_poll_refused_for_good_ends_the_wait(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(401), route="retrieve")
    async with make_api(retry=ONE_ATTEMPT) as api:
        with pytest.raises(AuthenticationError):
            await api.release(sid, wait=True, wait_timeout=30.0)
    assert fake_browserbase.received.requests["retrieve"] == 1


async def test_a_wait_that_runs_out_names_the_last_failure(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.status(503)] * 20, route="retrieve")
    async with make_api(retry=ONE_ATTEMPT) as api:
        with pytest.raises(APITimeoutError, match=r"the last poll failed: 503"):
            # Long enough for the first poll (at 0.25 s) on a loaded machine.
            await api.release(sid, wait=True, wait_timeout=1.0)


async def test_a_wait_that_runs_out_after_polls_that_answered_names_no_failure(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(503), route="retrieve")  # then it answers RUNNING
    async with make_api(retry=ONE_ATTEMPT) as api:
        with pytest.raises(APITimeoutError) as caught:
            await api.release(sid, wait=True, wait_timeout=1.2)
    assert fake_browserbase.received.requests["retrieve"] >= 2
    assert "failed" not in str(caught.value)


async def test_polls_keep_their_own_pace_whatever_the_retry_policy(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # The session ends 0.6 s after its release: at 0.25 s, then x1.5, that is 3 or 4 polls
    # (fewer on a slow machine), where the retry policy's zero backoff made thousands.
    fake_browserbase.faults = FaultPlan(release_delay=0.6)
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api(retry=RetryPolicy(initial_delay=0.0, max_delay=0.0)) as api:
        session = await api.release(sid, wait=True, wait_timeout=30.0)
    assert session.status == "COMPLETED"
    assert 1 <= fake_browserbase.received.requests["retrieve"] <= 5


async def test_a_cancelled_guard_is_never_held_back_by_its_timeouts(
    fake_browserbase: FakeBrowserbase,
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)  # released, never ends
    (sid,) = fake_browserbase.add_sessions(1)
    entered = asyncio.Event()

    async def scrape(api: SessionsAPI) -> None:
        async with api.guard(sid, wait=True, release_timeout=NEVER):
            entered.set()
            await asyncio.Event().wait()

    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        task = asyncio.create_task(scrape(api))
        await entered.wait()
        task.cancel()
        # The release goes out; its end is not waited for.
        async with asyncio.timeout(10):
            with pytest.raises(asyncio.CancelledError):
                await task
    assert fake_browserbase.received.requests == {"update": 1}


async def test_a_guard_cancelled_while_its_release_waits_waits_only_so_long(
    fake_browserbase: FakeBrowserbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_release, "CANCELLED_RELEASE_TIMEOUT", 0.2)
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    (sid,) = fake_browserbase.add_sessions(1)

    async def scrape(api: SessionsAPI) -> None:
        async with api.guard(sid, wait=True, release_timeout=NEVER):
            pass

    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        task = asyncio.create_task(scrape(api))
        await fake_browserbase.wait_until(
            lambda: fake_browserbase.received.requests["retrieve"] >= 1
        )
        for _ in range(3):
            task.cancel()
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            with pytest.raises(asyncio.CancelledError):
                await task
    assert fake_browserbase.received.updates == {sid: 1}
