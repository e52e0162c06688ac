"""The client-wide flow control: its promises through the public API, then its window's rules.

Behaviour, not timing: servers that hold requests until the test lets them go, server-side
arrival times for waits, and the figures of `flow_stats()` against the fake's own counts.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import browserbase_async
from browserbase_async import (
    APIConnectionError,
    FlowStats,
    RateLimitError,
    RetryPolicy,
    SessionsAPI,
)
from browserbase_async._flow import (
    DECREASE,
    FIRST_GAP,
    GAP_GROWTH,
    INITIAL_WINDOW,
    PROBE_ROUNDS,
    SWEEP_SLACK,
    FlowControl,
    Permit,
)
from browserbase_async._transport import Response
from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

from .conftest import ApiFactory
from .helpers import load_the_clock

pytestmark = pytest.mark.asyncio

PAST_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"


# -- through the public API, against the fake --------------------------------------------


@pytest.mark.parametrize("limit", ["in-flight", "per-second"])
@pytest.mark.parametrize("way", ["gather", "guards"])
async def test_every_session_closes_under_a_limit_however_it_is_called(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, way: str, limit: str
) -> None:
    # Each limit sits far below what even a slow run sends (ten at once to start with, each
    # held 20 ms): it is met in every run, not by luck.
    if limit == "in-flight":
        fake_browserbase.faults = FaultPlan(max_in_flight=8, latency=0.02)
    else:
        fake_browserbase.faults = FaultPlan(max_per_second=200.0, rate_burst=5, latency=0.02)
    ids = fake_browserbase.add_sessions(300)
    async with make_api(retry=RetryPolicy()) as api:  # the default policy
        if way == "gather":
            await asyncio.gather(*(api.release(session_id) for session_id in ids))
        else:

            async def work(session_id: str) -> None:
                async with api.guard(session_id):
                    await asyncio.sleep(0)

            await asyncio.gather(*(work(session_id) for session_id in ids))
        stats = api.flow_stats()
    assert all(fake_browserbase.status(session_id) == "COMPLETED" for session_id in ids)
    received = fake_browserbase.received
    assert received.answers[429] > 0  # the limit was met, and lived with
    # The figures add up to what the server saw.
    assert stats.requests == received.total
    assert stats.rate_limited == received.answers[429]
    assert stats.in_flight == 0
    assert received.answers[200] == len(ids)


async def test_max_rate_limited_zero_raises_on_the_first_429(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(429))
    async with make_api(retry=RetryPolicy(max_rate_limited=0)) as api:
        with pytest.raises(RateLimitError):
            await api.release(sid)
    assert fake_browserbase.received.total == 1
    assert fake_browserbase.status(sid) == "RUNNING"


async def test_429s_spend_no_attempt_up_to_max_rate_limited(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.status(429, headers={"retry-after-ms": "1"})] * 3)
    async with make_api(retry=RetryPolicy(max_attempts=1, max_rate_limited=3)) as api:
        session = await api.release(sid)
    assert session.status == "COMPLETED"
    assert fake_browserbase.received.total == 4


async def test_a_server_asked_wait_holds_single_calls_and_bulk_runs_alike() -> None:
    async with FakeBrowserbase(record_exchanges=True) as fake:
        first, *others = fake.add_sessions(21)
        fake.inject(Fault.status(429, headers={"retry-after-ms": "50"}))
        async with SessionsAPI(fake.api_key, base_url=fake.base_url) as api:
            await asyncio.gather(
                api.release(first),  # told to wait: the gate closes for the whole client
                api.release_many(others[:10], concurrency=4),
                *(api.release(session_id) for session_id in others[10:]),
            )
            stats = api.flow_stats()
    refused, *after = sorted(fake.received.exchanges, key=lambda exchange: exchange.arrived)
    assert refused.status == 429
    assert all(exchange.status == 200 for exchange in after)
    # Whatever was not already on the wire waited for the gate, on the server's own clock.
    held = [exchange for exchange in after if exchange.arrived >= refused.arrived + 0.05]
    assert len(held) >= len(after) - INITIAL_WINDOW
    assert stats.pauses == 1
    assert stats.paused_seconds == pytest.approx(0.05, abs=0.005)
    assert all(fake.status(session_id) == "COMPLETED" for session_id in [first, *others])


async def test_a_bulk_report_carries_its_runs_figures(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(max_in_flight=4, latency=0.02)
    ids = fake_browserbase.add_sessions(100)
    async with make_api() as api:
        await api.retrieve(ids[0])  # before the run: not in its figures
        report = await api.release_many(ids, concurrency=16)
        after = api.flow_stats()
    assert report.ok
    stats = report.stats
    assert stats is not None
    received = fake_browserbase.received
    assert stats.requests == received.requests["update"] == len(ids) + received.answers[429]
    assert stats.rate_limited == received.answers[429] > 0
    assert stats.elapsed is not None
    assert stats.elapsed > 0
    assert stats.window == after.window <= 16
    assert after.requests == stats.requests + 1


async def test_cancelled_waiters_leave_no_task_and_no_lost_permit(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(50)
    async with make_api() as api:
        fake_browserbase.hold()
        calls = [asyncio.create_task(api.release(session_id)) for session_id in ids]
        await fake_browserbase.wait_for_in_flight(int(INITIAL_WINDOW))
        waiting = calls[int(INITIAL_WINDOW) :]
        assert api.flow_stats().in_flight == INITIAL_WINDOW
        for task in waiting[::2]:
            task.cancel()
        fake_browserbase.let_go()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        stats = api.flow_stats()
    cancelled = [ids[calls.index(task)] for task in waiting[::2]]
    assert sum(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes) == 20
    assert stats.in_flight == 0
    assert stats.requests == fake_browserbase.received.total == 30
    assert all(fake_browserbase.status(session_id) == "RUNNING" for session_id in cancelled)
    assert sum(fake_browserbase.status(session_id) == "COMPLETED" for session_id in ids) == 30


async def test_a_guard_is_not_starved_by_a_bulk_run() -> None:
    async with FakeBrowserbase(record_exchanges=True) as fake:
        ids = fake.add_sessions(200)
        (mine,) = fake.add_sessions(1)
        async with SessionsAPI(fake.api_key, base_url=fake.base_url) as api:
            fake.hold()
            run = asyncio.create_task(api.release_many(ids, concurrency=32))
            await fake.wait_for_in_flight(int(INITIAL_WINDOW))
            await _until(lambda: len(api._flow._waiters) == 32 - INITIAL_WINDOW)

            async def guarded() -> None:
                async with api.guard(mine):
                    pass

            guard = asyncio.create_task(guarded())
            await _until(lambda: len(api._flow._waiters) == 32 - INITIAL_WINDOW + 1)
            fake.let_go()
            await asyncio.gather(run, guard)
        order = [exchange.path.rsplit("/", 1)[1] for exchange in fake.received.exchanges]
    # One fair queue: the guard's release goes out with the workers already waiting (the
    # 33rd request, give or take the order connections open in), before the run's later ones.
    assert order.index(mine) < 40
    assert len(order) == 201


async def test_closing_the_client_ends_every_call_without_a_stray_cancellation(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ids = fake_browserbase.add_sessions(300)
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url)
    fake_browserbase.hold()
    calls = [asyncio.create_task(api.release(session_id)) for session_id in ids]
    await fake_browserbase.wait_for_in_flight(int(INITIAL_WINDOW))
    await api.aclose()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    on_the_wire = [o for o in outcomes if isinstance(o, APIConnectionError)]
    refused = [o for o in outcomes if isinstance(o, RuntimeError) and "closed" in str(o)]
    assert len(on_the_wire) == INITIAL_WINDOW
    assert len(refused) == len(ids) - INITIAL_WINDOW
    assert api.flow_stats().in_flight == 0
    # A closed client opens nothing: no new pool for a call that woke after the close.
    assert api._transport.session is None
    with pytest.raises(RuntimeError, match="closed"):
        await api.retrieve(ids[0])
    assert api._transport.session is None


async def test_closing_the_client_with_a_wait_pending_wakes_no_one(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ids = fake_browserbase.add_sessions(5)
    fake_browserbase.inject(Fault.status(503, headers={"Retry-After": "30"}))
    api = SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url)
    first = asyncio.create_task(api.release(ids[0]))
    await fake_browserbase.wait_for_requests(1)
    await _until(lambda: api.flow_stats().pauses == 1)
    others = [asyncio.create_task(api.release(session_id)) for session_id in ids[1:]]
    await _until(lambda: len(api._flow._waiters) == 5)  # the first one's retry, too
    await api.aclose()
    outcomes = await asyncio.gather(first, *others, return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes), outcomes
    assert fake_browserbase.received.total == 1


async def test_a_long_lived_client_holds_no_state_per_call(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(max_in_flight=5, latency=0.005)
    (sid,) = fake_browserbase.add_sessions(1)
    ours = tracemalloc.Filter(True, f"{Path(browserbase_async.__file__).parent}{os.sep}*")

    async def calls(count: int) -> None:
        for _ in range(count // 50):  # waves of 50 at once: waiters, 429s and all
            await asyncio.gather(*(api.retrieve(sid) for _ in range(50)))

    tracemalloc.start()
    try:
        async with make_api() as api:
            await calls(150)
            gc.collect()  # refused attempts' exceptions live in cycles until collected
            before = tracemalloc.take_snapshot().filter_traces([ours])
            await calls(600)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces([ours])
            stats = api.flow_stats()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert stats.rate_limited > 0
    assert stats.requests == fake_browserbase.received.total
    assert grown < 4096, [str(stat) for stat in after.compare_to(before, "lineno")[:6]]


# -- the window, without a server ----------------------------------------------------------


def answer(status: int, **headers: str) -> Response:
    return Response(status, headers, b"")


OK, REFUSED = answer(200), answer(429)


def new_flow(max_window: int = 100, max_gap: float = 8.0) -> FlowControl:
    return FlowControl(max_window, 60.0, max_gap)


def run_against_limit(
    flow: FlowControl, limit: int, answers: int, in_flight: list[tuple[int, int]] | None = None
) -> list[float]:
    """Drive *flow* like a closed loop against a server of *limit* in flight; the windows seen.

    As the fake does, the server refuses at once what it cannot take, and answers the rest
    in the order they came. Pass *in_flight* to go on with the requests of an earlier run.
    """
    in_flight = [] if in_flight is None else in_flight
    windows = []
    while len(windows) < answers:
        while (permit := flow.try_acquire()) is not None:
            if len(in_flight) >= limit:
                flow.release(permit, REFUSED)
                windows.append(flow.window)
            else:
                in_flight.append(permit)
        flow.release(in_flight.pop(0), OK)
        windows.append(flow.window)
    return windows


async def test_the_window_starts_small_and_doubles_until_refused() -> None:
    flow = new_flow()
    assert flow.window == INITIAL_WINDOW
    windows = run_against_limit(flow, limit=1000, answers=300)
    assert windows[-1] == 100  # never past max_window
    assert flow.stats() == FlowStats(100.0, flow.in_flight, flow.requests, 0, 0, 0.0)


async def test_one_round_of_refusals_cuts_once_to_what_the_server_took() -> None:
    flow = new_flow()
    permits = [flow.try_acquire() for _ in range(10)]
    assert None not in permits
    for permit in permits[:6]:
        assert permit is not None
        flow.release(permit, OK)
    window = flow.window
    assert window > 10
    for permit in permits[6:]:
        assert permit is not None
        flow.release(permit, REFUSED)
    # Refused at a load of 7: at most 6 fit; the round's cut applies once, not four times.
    assert flow.window == pytest.approx(6 * DECREASE)
    assert flow.rate_limited == 4


async def test_a_steady_limit_is_learned_and_probed_rarely() -> None:
    flow = new_flow()
    windows = run_against_limit(flow, limit=25, answers=5000)
    settled = windows[500:]
    assert min(settled) >= 25 * DECREASE - 1
    assert max(settled) < 27
    refusals = flow.rate_limited
    # After learning, about one probe every PROBE_ROUNDS round trips of 25 answers.
    assert refusals <= 5000 / (25 * PROBE_ROUNDS) + 10


async def test_the_window_follows_a_limit_that_rises() -> None:
    flow, in_flight = new_flow(), []
    run_against_limit(flow, limit=25, answers=2000, in_flight=in_flight)
    assert flow.window < 27
    windows = run_against_limit(flow, limit=50, answers=2000, in_flight=in_flight)
    reached = next(n for n, window in enumerate(windows) if window >= 45)
    assert reached < 50 * 10  # within ten round trips of the new limit
    assert max(windows[reached:]) < 53


async def test_a_quiet_client_does_not_inflate_its_window() -> None:
    flow = new_flow()
    for _ in range(1000):
        permit = flow.try_acquire()
        assert permit is not None
        flow.release(permit, OK)
    assert flow.window == INITIAL_WINDOW


async def test_errors_and_lost_answers_leave_the_window_alone() -> None:
    flow = new_flow()
    for outcome in (answer(503), answer(500), answer(304), None):
        permit = flow.try_acquire()
        assert permit is not None
        flow.release(permit, outcome)
    assert flow.window == INITIAL_WINDOW
    assert flow.in_flight == 0


def cut_to_one(flow: FlowControl) -> None:
    """Refuse one request after another (each of a new round trip) until the window is one."""
    while flow.window > 1:
        permit = flow.try_acquire()
        assert permit is not None
        flow.release(permit, REFUSED)


async def test_a_refusal_at_a_low_load_cuts_by_a_factor_of_the_window_not_to_the_load() -> None:
    flow, in_flight = new_flow(), []
    run_against_limit(flow, limit=40, answers=400, in_flight=in_flight)  # past slow start
    for permit in in_flight:
        flow.release(permit, None)  # no answer: the window is left alone
    before = flow.window
    permit = flow.try_acquire()
    assert permit == (flow._tickets, 1)  # one request in flight: the others' load refused it
    flow.release(permit, REFUSED)
    # A factor of the window, not the load: a client with few requests in flight when the
    # others' load refuses it keeps most of its share.
    assert flow.window == pytest.approx(before * DECREASE)


async def test_a_refusal_of_a_full_window_drops_it_below_that_load() -> None:
    flow, in_flight = new_flow(), []
    run_against_limit(flow, limit=40, answers=400, in_flight=in_flight)
    for permit in in_flight:
        flow.release(permit, None)
    permits = [flow.try_acquire() for _ in range(int(flow.window))]
    assert None not in permits
    load = len(permits)
    first, second = permits[-1], permits[-2]
    assert first is not None
    assert second is not None
    flow.release(first, REFUSED)
    assert flow.window == pytest.approx((load - 1) * DECREASE)
    flow.release(second, REFUSED)  # the same round: no second cut, but below its load
    assert flow.window == pytest.approx((load - 1) * DECREASE)


async def test_at_a_window_of_one_a_second_429_running_paces_the_client() -> None:
    flow = new_flow()
    cut_to_one(flow)
    permit = flow.try_acquire()
    assert permit is not None
    flow.release(permit, OK)
    permit = flow.try_acquire()  # a lone refusal is no sign of pace: no gap yet
    assert permit is not None
    flow.release(permit, REFUSED)
    assert flow._gap == 0
    while not flow._gap:  # refused running at the floor: a gap, within two
        permit = flow.try_acquire()
        assert permit is not None
        flow.release(permit, REFUSED)
    assert flow.window == 1
    assert flow.stats().pauses == 0  # pacing is not a server-asked pause
    assert flow.try_acquire() is None  # held at the gate for a gap
    waiting = asyncio.create_task(flow.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    flow.close()
    with pytest.raises(RuntimeError, match="closed"):
        await waiting


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "0"}, {"retry-after-ms": "0"}, {"retry-after": PAST_DATE}],
    ids=["zero", "zero-ms", "past-date"],
)
async def test_a_wait_of_zero_or_in_the_past_is_a_bare_refusal(headers: dict[str, str]) -> None:
    flow = new_flow()
    cut_to_one(flow)
    for _ in range(2):
        permit = flow.try_acquire() or await flow.acquire()
        flow.release(permit, answer(429, **headers))
    assert flow.stats().pauses == 0  # nothing asked to wait for
    assert flow._gap > 0  # but paced, as after bare 429s running
    assert flow.try_acquire() is None


async def test_a_404_is_room_at_the_server_and_grows_the_window() -> None:
    flow = new_flow()
    for _ in range(300):
        permits = [flow.try_acquire() for _ in range(int(flow.window))]
        for permit in permits:
            assert permit is not None
            flow.release(permit, answer(404))
    assert flow.window == 100


async def test_a_hinted_429_pauses_as_asked_not_by_pacing() -> None:
    flow = new_flow()
    cut_to_one(flow)
    for _ in range(2):
        permit = flow.try_acquire() or await flow.acquire()
        flow.release(permit, answer(429, **{"retry-after-ms": "5"}))
    assert flow.stats().pauses >= 1
    assert flow._gap == 0  # the server's wait is the pace: no gap of the client's own


async def test_a_wait_over_the_cap_does_not_close_the_gate() -> None:
    flow = FlowControl(4, 1.0, 0.0)
    permit = flow.try_acquire()
    assert permit is not None
    flow.release(permit, answer(503, **{"retry-after": "30"}))
    assert flow.try_acquire() is not None
    assert flow.stats().pauses == 0


async def test_a_pause_counts_the_seconds_asked_on_a_loaded_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gate read the clock twice, and counted 0.049 s.
    load_the_clock(monkeypatch)
    flow = new_flow()
    flow.pause(0.05)
    flow.close()
    assert flow.stats().paused_seconds == pytest.approx(0.05)


async def test_a_longer_pause_extends_the_gate_a_shorter_one_does_not() -> None:
    flow = new_flow()
    loop = asyncio.get_running_loop()
    before = loop.time()
    flow.pause(10.0)
    flow.pause(30.0)
    between = loop.time() - before  # what the clock moved between the two pauses, at most
    flow.pause(5.0)
    stats = flow.stats()
    assert stats.pauses == 2
    assert 30.0 - 1e-9 <= stats.paused_seconds <= 30.0 + between + 1e-9  # floats
    flow.close()
    flow.pause(60.0)
    assert flow.stats().pauses == 2


async def test_the_gate_reopens_on_its_timer_and_spreads_the_waiters() -> None:
    flow = new_flow()
    loop = asyncio.get_running_loop()
    # The clock read before the pause, not after: the pause's own reading comes between,
    # and a machine busy elsewhere between two lines could put this one past the reopening.
    reopened = loop.time() + 0.01
    flow.pause(0.01)
    waiting = [asyncio.create_task(flow.acquire()) for _ in range(3)]
    permits = await asyncio.gather(*waiting)
    assert loop.time() >= reopened
    assert len({ticket for ticket, _ in permits}) == 3
    assert flow.in_flight == 3


async def test_a_granted_permit_cancelled_before_use_is_passed_on() -> None:
    flow = new_flow(max_window=1)
    held = flow.try_acquire()
    assert held is not None
    first = asyncio.create_task(flow.acquire())
    second = asyncio.create_task(flow.acquire())
    await asyncio.sleep(0)
    flow.release(held, OK)  # hands the place to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    permit = await second
    assert flow.in_flight == 1
    flow.release(permit, OK)
    assert flow.in_flight == 0
    assert flow.requests == 2


async def granted_after_a_hold(flow: FlowControl) -> asyncio.Task[Permit]:
    """A waiter held by the client's own hold, granted as the gate reopens: it then sleeps its
    resume jitter (up to 1 s) before it returns."""
    flow._hold(8.0)
    waiting = asyncio.create_task(flow.acquire())
    await asyncio.sleep(0)
    assert flow._reopen is not None
    flow._reopen.cancel()
    flow._open()  # as the timer does
    assert flow.in_flight == 1
    return waiting


async def test_cancelled_in_the_resume_jitter_gives_the_place_back() -> None:
    flow = new_flow()
    waiting = await granted_after_a_hold(flow)
    await asyncio.sleep(0)  # the waiter is in its resume jitter now
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert flow.in_flight == 0
    assert flow.requests == 0


async def test_closed_while_in_the_resume_jitter() -> None:
    flow = new_flow()
    waiting = await granted_after_a_hold(flow)
    flow.close()  # before the waiter even starts its jitter
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    assert flow.in_flight == 0


async def test_closing_ends_a_resume_jitter_under_way() -> None:
    flow = new_flow()
    waiting = await granted_after_a_hold(flow)
    await asyncio.sleep(0)  # the waiter is in its resume jitter now
    assert not waiting.done()
    flow.close()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert waiting.done()  # at once, not after its jitter
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    assert flow.in_flight == 0


async def test_a_closed_flow_refuses_at_once() -> None:
    flow = new_flow()
    permit = await flow.acquire()  # a free place: at once
    flow.close()
    flow.release(permit, OK)  # the answer of a call that was on the wire
    assert flow.try_acquire() is None
    with pytest.raises(RuntimeError, match="closed"):
        await flow.acquire()


async def test_closing_just_after_a_waiter_was_cancelled() -> None:
    flow = new_flow(max_window=1)
    held = flow.try_acquire()
    assert held is not None
    waiting = asyncio.create_task(flow.acquire())
    await asyncio.sleep(0)
    waiting.cancel()  # its future is cancelled now; the task has not run yet
    flow.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    flow.release(held, None)
    assert flow.in_flight == 0


async def _until(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let the loop run until *condition()* holds: a bounded number of turns, never a clock."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_below_one_request_per_round_trip_the_client_paces() -> None:
    flow = new_flow()
    loop = asyncio.get_running_loop()
    permit = flow.try_acquire()
    assert permit is not None
    flow.release(permit, OK)  # (the first success ever would end pacing at once: see below)
    cut_to_one(flow)  # the last refusal cut to one: the next one running paces
    for gap in (FIRST_GAP, FIRST_GAP * GAP_GROWTH, FIRST_GAP * GAP_GROWTH**2):
        # Each refusal at the floor after another lengthens the gap. The gate's own reading
        # of the clock is bracketed, not guessed within a tolerance: a loaded machine may
        # take any time between two lines.
        permit = flow.try_acquire() or await flow.acquire()
        before = loop.time()
        refuse_as_another_calls(flow, permit)
        after = loop.time()
        assert before + gap - 1e-9 <= flow._paused_until <= after + gap + 1e-9
    # Each success shortens it, and holds the gate for it; then pacing ends, and the window
    # may grow again. A lone refusal between successes does not lengthen it.
    successes = 0
    while flow.try_acquire() is None:
        permit = await flow.acquire()
        flow.release(permit, OK)
        successes += 1
    # At most ln(8 * 1.5**2) / -ln(0.98) ≈ 143 of them; fewer as time passes too.
    assert 0 < successes < 150
    assert flow.window == 1
    assert flow.stats() == FlowStats(1.0, 1, flow.requests, flow.rate_limited, 0, 0.0)


def refuse_as_another_calls(flow: FlowControl, permit: Permit) -> None:
    """Refuse *permit* as if it were a different call's, in a client of many calls.

    None then carries enough refusals for pacing to turn cautious (see test_fleet_sim for
    calls that do).
    """
    flow._carried = 0.0
    flow.release(permit, REFUSED)


async def test_the_first_success_ever_ends_a_pace_shorter_than_its_round_trip() -> None:
    # As a client that a fleet's first burst refused a few times within a millisecond: paced
    # before any round trip. Its first success, whose round trip outlasted the gap, ends
    # that, where a later one would shorten the gap by `GAP_DECAY` only.
    flow = new_flow()
    cut_to_one(flow)
    for _ in range(3):
        refuse_as_another_calls(flow, flow.try_acquire() or await flow.acquire())
    assert 0 < flow._gap < 0.05
    permit = await flow.acquire()
    flow._sent_at -= 0.02  # as if it had taken 20 ms: longer than the gap, not four times
    flow.release(permit, OK)
    assert flow._gap == 0
    permit = flow.try_acquire()  # the gate is open: no gap to wait for
    assert permit is not None
    refuse_as_another_calls(flow, permit)
    refuse_as_another_calls(flow, await flow.acquire())  # two running at the floor: paced
    assert flow._gap > 0
    permit = await flow.acquire()
    flow._sent_at -= 0.01  # a round trip longer than the gap, but not four times longer
    flow.release(permit, OK)
    assert flow._gap > 0  # a later success only shortens the gap


async def test_the_gap_never_grows_past_max_gap() -> None:
    flow = new_flow(max_gap=0.02)
    for _ in range(10):
        permit = flow.try_acquire() or await flow.acquire()
        flow.release(permit, REFUSED)
        assert flow._paused_until - asyncio.get_running_loop().time() <= 0.02


@pytest.mark.parametrize("way", ["many", "gather"])
async def test_a_rate_below_one_per_round_trip_closes_every_session(way: str) -> None:
    plan = FaultPlan(max_per_second=400.0, rate_burst=1.0)
    async with FakeBrowserbase(faults=plan) as fake:
        ids = fake.add_sessions(60)
        async with SessionsAPI(fake.api_key, base_url=fake.base_url) as api:
            if way == "many":
                assert (await api.release_many(ids)).ok
            else:
                await asyncio.gather(*(api.release(i) for i in ids))
            assert api.flow_stats().pauses == 0  # paced, never a server-asked pause
        assert all(fake.status(i) == "COMPLETED" for i in ids)


async def test_a_lone_refusal_between_successes_does_not_lengthen_the_gap() -> None:
    flow = new_flow()
    loop = asyncio.get_running_loop()
    for _ in range(2):  # two running: pacing starts
        flow.release(flow.try_acquire() or await flow.acquire(), REFUSED)
    flow.release(await flow.acquire(), OK)
    shortened = flow._paused_until - loop.time()
    flow.release(await flow.acquire(), REFUSED)  # alone: anyone's, perhaps
    assert flow._paused_until - loop.time() <= shortened


async def test_twenty_thousand_waiters_cancelled_together_leave_in_linear_time() -> None:
    flow = new_flow(max_window=1)
    held = flow.try_acquire()
    assert held is not None

    class NoRemove(collections.deque[Any]):
        def remove(self, value: Any) -> None:
            raise AssertionError("a scan of the queue per waiter that leaves")

    flow._waiters = NoRemove()
    waiters = [asyncio.create_task(flow.acquire()) for _ in range(20_000)]
    await asyncio.sleep(0)
    last = asyncio.create_task(flow.acquire())  # in the queue behind them all
    await asyncio.sleep(0)
    for waiter in waiters:
        waiter.cancel()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    # The cancelled ones were swept out as they went: the queue holds about the one left.
    assert len(flow._waiters) <= 1 + SWEEP_SLACK * 2
    flow.release(held, OK)
    permit = await last  # the place goes to the one still waiting, none lost
    assert flow.in_flight == 1
    flow.release(permit, OK)
    assert flow.in_flight == 0
    assert flow.try_acquire() is not None


async def test_a_waiter_cancelled_then_closed_leaves_no_count_behind() -> None:
    flow = new_flow(max_window=1)
    held = flow.try_acquire()
    assert held is not None
    waiter = asyncio.create_task(flow.acquire())
    await asyncio.sleep(0)
    waiter.cancel()  # its place is cancelled at once; it leaves the queue on its next step
    flow.close()  # which comes after the close
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert flow._waiting == 0
