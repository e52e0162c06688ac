"""Bulk release against the loopback fake: the promises of the "Bulk outcomes" contract."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from browserbase_async import (
    APITimeoutError,
    BulkReleaseAborted,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ReleaseResult,
    RetryPolicy,
    Session,
    SessionsAPI,
    SessionStatus,
)
from browserbase_async._bulk import drive
from browserbase_async._errors import ClientClosedError
from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

from .conftest import ApiFactory
from .helpers import until

pytestmark = pytest.mark.asyncio

WORKER = "browserbase_async-worker-"


def our_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith(WORKER)]


async def test_chaos_run_ends_every_session_and_reports_the_truth(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(
        error_rate=0.10, rate_limit_rate=0.05, lost_response_rate=0.03, drop_rate=0.02, seed=7
    )
    ids = fake_browserbase.add_sessions(2000)
    # A fault on 20 % of requests: give retries the room to get every session through.
    policy = RetryPolicy(max_attempts=10, initial_delay=0.001, max_delay=0.005, budget_ratio=1.0)
    async with make_api(retry=policy) as api:
        report = await api.release_many(ids, concurrency=64)
    assert [result.session_id for result in report.results] == ids
    assert report.ok, [str(result.error) for result in report.failed][:5]
    for result in report.results:
        assert result.session is not None
        assert result.session.id == result.session_id
        assert result.session.is_terminal
        assert fake_browserbase.status(result.session_id) == result.session.status
    assert fake_browserbase.received.peak_in_flight <= 64
    received = fake_browserbase.received
    print(f"chaos: {received.total / len(ids):.3f} requests per session, {dict(received.answers)}")


async def test_an_outage_is_not_amplified(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(error_rate=1.0)
    ids = fake_browserbase.add_sessions(1000)
    started = time.monotonic()
    async with make_api() as api:
        report = await api.release_many(ids, concurrency=64)
    elapsed = time.monotonic() - started
    assert len(report.failed) == len(ids)
    assert all(isinstance(result.error, InternalServerError) for result in report.failed)
    sent = fake_browserbase.received.requests["update"]
    print(f"outage: {sent / len(ids):.3f} requests per session in {elapsed:.1f} s")
    # The budget's own arithmetic: 0.2 retries per first attempt, plus the 10 a second
    # it starts with and earns with time (the bound, not a timing target).
    assert sent <= 1.2 * len(ids) + 10 * (1 + elapsed) + 1


async def test_a_concurrency_limit_below_ours_costs_few_429s(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(max_in_flight=8, latency=0.002)
    ids = fake_browserbase.add_sessions(1000)
    # The default policy's shape (3 attempts): in a bulk run, 429s do not use them up.
    async with make_api() as api:
        report = await api.release_many(ids, concurrency=64)
    assert report.ok
    refused = fake_browserbase.received.answers[429]
    print(f"limited server: {refused} 429s for {len(ids)} sessions")
    # The window learns the limit from the first refusals and then probes it rarely: a
    # handful of 429s to start with, then about one every 8 round trips of 8 requests
    # (16 to 36 here). How many round trips a run takes depends on the machine's load, so
    # the bound is the promise, "few", not the figure: one 429 per 10 sessions at most.
    assert refused <= len(ids) // 10


async def test_3000_ids_from_an_async_generator_keep_tasks_bounded(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # Tasks and reads ahead are bounded by the concurrency, whatever the input's length:
    # 3,000 ids at 32 show it as well as a million (bench/bench.py streams 100,000).
    count, concurrency = 3_000, 32
    fake_browserbase.add_sessions(count)
    ids = list(fake_browserbase.sessions)
    pulled = 0

    async def generate() -> AsyncIterator[str]:
        nonlocal pulled
        for session_id in ids:
            pulled += 1
            yield session_id

    peak_tasks = peak_ahead = done = 0
    async with make_api() as api:
        iterator = api.release_iter(generate(), concurrency=concurrency)
        async with contextlib.aclosing(iterator):
            async for result in iterator:
                assert result.ok
                done += 1
                peak_tasks = max(peak_tasks, len(our_tasks()))
                peak_ahead = max(peak_ahead, pulled - done)
    assert done == count
    assert peak_tasks == concurrency
    # Lazily read: never more than the workers plus the finished-queue ahead of us.
    assert peak_ahead <= 2 * concurrency + 1
    assert fake_browserbase.received.peak_in_flight <= concurrency
    assert not our_tasks()


async def test_cancelling_a_run_leaves_nothing_behind(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(latency=0.01)
    ids = fake_browserbase.add_sessions(500)
    some_done = asyncio.Event()
    seen: list[ReleaseResult] = []

    def on_result(result: ReleaseResult) -> None:
        seen.append(result)
        if len(seen) == 40:
            some_done.set()

    async with make_api() as api:
        run = asyncio.create_task(api.release_many(ids, concurrency=16, on_result=on_result))
        await some_done.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert not our_tasks()
        # Still usable afterwards.
        assert (await api.retrieve(ids[-1])).status == SessionStatus.RUNNING
    assert 40 <= len(seen) < 500
    released = sum(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)
    assert released >= len(seen)


async def test_closing_the_stream_early_cancels_the_rest(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(300)
    async with make_api() as api:
        iterator = api.release_iter(ids, concurrency=8)
        async with contextlib.aclosing(iterator):
            async for _ in iterator:
                break
        assert not our_tasks()
    assert fake_browserbase.received.requests["update"] < 300


async def test_already_ended_not_found_and_invalid(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (ended,) = fake_browserbase.add_sessions(1, status="TIMED_OUT")
    (running,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        report = await api.release_many([ended, "missing", "bad/id", running, 42])  # type: ignore[list-item]
    by_id = {result.session_id: result for result in report.results}
    assert by_id[ended].ok
    assert by_id[ended].session is not None
    assert by_id[ended].session.status is SessionStatus.TIMED_OUT
    assert isinstance(by_id["missing"].error, NotFoundError)
    assert isinstance(by_id["bad/id"].error, ValueError)
    assert by_id["bad/id"].attempts == 0
    assert isinstance(by_id["42"].error, ValueError)
    assert by_id[running].ok
    assert [r.session_id for r in report.released] == [ended, running]
    assert [r.session_id for r in report.failed] == ["missing", "bad/id", "42"]
    assert not report.ok
    assert fake_browserbase.received.updates.keys() == {ended, "missing", running}
    # What the report says is what the server holds.
    assert fake_browserbase.status(ended) == "TIMED_OUT"
    assert fake_browserbase.status(running) == "COMPLETED"
    assert by_id[running].session is not None
    assert by_id[running].session.status is SessionStatus.COMPLETED
    assert "missing" not in fake_browserbase.sessions


async def test_duplicates_are_released_once_and_reported_at_each_position(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    a, b = fake_browserbase.add_sessions(2)
    async with make_api() as api:
        report = await api.release_many([a, b, a, a])
    assert [r.session_id for r in report.results] == [a, b, a, a]
    assert report.results[0] is report.results[2] is report.results[3]
    assert fake_browserbase.received.updates == {a: 1, b: 1}


async def test_release_iter_yields_every_result(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(50)
    async with make_api() as api:
        seen = [result async for result in api.release_iter(iter(ids), concurrency=4)]
    assert sorted(result.session_id for result in seen) == sorted(ids)
    assert all(result.ok and result.attempts == 1 for result in seen)
    assert all(fake_browserbase.status(session_id) == "COMPLETED" for session_id in ids)


async def test_release_all_with_filters(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    mine = fake_browserbase.add_sessions(5, user_metadata={"job": "crawl"})
    others = fake_browserbase.add_sessions(3, user_metadata={"job": "other"})
    fake_browserbase.add_sessions(2, status="COMPLETED", user_metadata={"job": "crawl"})
    async with make_api() as api:
        report = await api.release_all(q="user_metadata['job']:'crawl'")
    assert sorted(r.session_id for r in report.results) == sorted(mine)
    assert all(fake_browserbase.status(sid) == "RUNNING" for sid in others)
    assert report.ok


async def test_wait_in_bulk(fake_browserbase: FakeBrowserbase, make_api: ApiFactory) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=0.01)
    ids = fake_browserbase.add_sessions(20)
    async with make_api() as api:
        report = await api.release_many(ids, wait=True, concurrency=8)
    assert report.ok
    assert all(r.session is not None and r.session.is_terminal for r in report.results)


async def test_bad_arguments(fake_browserbase: FakeBrowserbase, make_api: ApiFactory) -> None:
    async with make_api() as api:
        with pytest.raises(ValueError, match="concurrency"):
            await api.release_many(["a"], concurrency=0)
        with pytest.raises(TypeError, match="single str"):
            await api.release_many("abc")
    assert fake_browserbase.received.total == 0


async def test_a_failing_input_aborts_with_the_report_of_what_was_started(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(3)

    def broken() -> object:
        yield from ids
        raise OSError("disk on fire")

    async with make_api() as api:
        with pytest.raises(BulkReleaseAborted, match="OSError") as caught:
            await api.release_many(broken())  # type: ignore[arg-type]
        assert not our_tasks()
    assert isinstance(caught.value.__cause__, OSError)
    assert [result.session_id for result in caught.value.report.results] == ids
    assert caught.value.report.ok
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


async def test_a_cancelled_error_from_on_result_aborts_instead_of_a_report_that_looks_whole(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # A CancelledError that the callback raises (it awaited nothing: no one cancelled the
    # run) once ended its worker quietly: the run returned ok with 4 results of 20.
    ids = fake_browserbase.add_sessions(20)

    def on_result(result: ReleaseResult) -> None:
        raise asyncio.CancelledError

    async with make_api() as api:
        with pytest.raises(BulkReleaseAborted, match="CancelledError") as caught:
            await api.release_many(ids, concurrency=4, on_result=on_result)
        assert not our_tasks()
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    tried = [result.session_id for result in caught.value.report.results]
    released = [sid for sid in ids if fake_browserbase.status(sid) == "COMPLETED"]
    assert tried == released  # every release sent is reported, and no other


async def test_a_cancelled_error_from_the_input_aborts_release_many_and_release_iter(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(6)

    async def broken(these: list[str]) -> AsyncIterator[str]:
        # An input that awaits a future someone else cancelled: its CancelledError is not a
        # cancellation of the run.
        for session_id in these:
            yield session_id
        gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        gone.cancel()
        yield await gone

    async with make_api() as api:
        with pytest.raises(BulkReleaseAborted) as caught:
            await api.release_many(broken(ids[:3]), concurrency=2)
        assert [result.session_id for result in caught.value.report.results] == ids[:3]
        seen: list[str] = []

        async def consume() -> None:
            async for result in api.release_iter(broken(ids[3:]), concurrency=2):
                seen.append(result.session_id)

        with pytest.raises(BulkReleaseAborted) as streamed:
            await consume()
        assert not our_tasks()
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert isinstance(streamed.value.__cause__, asyncio.CancelledError)
    assert sorted(seen) == sorted(ids[3:])
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


async def test_a_slow_server_is_kept_full(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # The timing target (2,000 ids at 50 ms near 1 s) is the benchmark's; here, its cause:
    # once the window is open, every one of the `concurrency` slots is in use at once.
    async with make_api() as api:
        await api.release_many(fake_browserbase.add_sessions(400), concurrency=100)
        assert api.flow_stats().window == 100  # slow start, never refused: fully open
        ids = fake_browserbase.add_sessions(1000)
        fake_browserbase.hold()
        run = asyncio.create_task(api.release_many(ids, concurrency=100))
        await fake_browserbase.wait_for_in_flight(100)
        fake_browserbase.let_go()
        report = await run
    assert report.ok
    assert all(fake_browserbase.status(session_id) == "COMPLETED" for session_id in ids)
    assert fake_browserbase.received.peak_in_flight == 100


async def test_a_server_that_always_refuses_ends_the_run_anyway(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(rate_limit_rate=1.0)
    ids = fake_browserbase.add_sessions(5)
    async with make_api() as api:
        report = await api.release_many(ids, concurrency=2)
    assert all(isinstance(result.error, RateLimitError) for result in report.results)
    # 429s use up no attempt, but only so many are retried.
    retried = RetryPolicy().max_rate_limited
    assert {result.attempts for result in report.results} == {retried + 1}
    assert fake_browserbase.received.requests["update"] == 5 * (retried + 1)


async def test_a_bug_in_one_release_is_its_result_and_the_run_goes_on() -> None:
    started = asyncio.Event()

    async def release_one(session_id: object) -> ReleaseResult:
        if session_id == "boom" or not isinstance(session_id, str):
            await started.wait()
            raise RecursionError("a bug")
        started.set()
        return ReleaseResult(str(session_id), None, None, 1)

    seen: dict[int, ReleaseResult] = {}

    async def emit(position: int, result: ReleaseResult) -> None:
        seen[position] = result

    await drive(
        release_one,
        ["boom", "ok", "boom", "ok-2", 42],
        emit,
        concurrency=4,
        memo_size=None,
    )
    assert not our_tasks()
    assert [result.ok for _, result in sorted(seen.items())] == [False, True, False, True, False]
    assert isinstance(seen[0].error, RecursionError)
    assert seen[2] is seen[0]  # a repeat, answered from the memo
    assert (seen[4].session_id, type(seen[4].error)) == ("42", RecursionError)


async def test_release_iter_aborts_as_its_input_raises_after_the_started_releases(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(3)

    async def broken() -> AsyncIterator[str]:
        for session_id in ids:
            yield session_id
        raise OSError("the queue went away")

    seen: list[ReleaseResult] = []

    async def consume(api: SessionsAPI) -> None:
        async for result in api.release_iter(broken(), concurrency=2):
            seen.append(result)

    async with make_api() as api:
        with pytest.raises(BulkReleaseAborted, match="the queue went away") as caught:
            await consume(api)
        assert not our_tasks()
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.report.results == []  # every result was yielded already
    # And its message says so: it said "the 0 sessions tried are in .report", and named an
    # on_result callback that release_iter does not take.
    message = str(caught.value)
    assert "all 3 results of the run were yielded before it" in message
    assert "on_result" not in message
    assert sorted(result.session_id for result in seen) == sorted(ids)
    assert all(fake_browserbase.status(session_id) == "COMPLETED" for session_id in ids)


async def test_release_iter_never_has_more_in_flight_than_its_memo_holds(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The contract bounds the memo of ids in flight at all times: a concurrency past its size
    # (4,096) put more ids in flight than it may hold.
    monkeypatch.setattr("browserbase_async._bulk.STREAM_MEMO_SIZE", 2)
    fake_browserbase.faults = FaultPlan(latency=0.01)
    ids = fake_browserbase.add_sessions(12)
    async with make_api() as api:
        results = [result async for result in api.release_iter(ids, concurrency=10)]
    assert sorted(result.session_id for result in results if result.ok) == sorted(ids)
    assert fake_browserbase.received.peak_in_flight <= 2


async def test_release_iter_repeats_from_its_memo_until_they_leave_it(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("browserbase_async._bulk.STREAM_MEMO_SIZE", 2)
    a, b, c = fake_browserbase.add_sessions(3)
    async with make_api() as api:
        # One worker: in order. `a` again while remembered, then again after b and c pushed
        # it out of the memo: sent again, and refused as ended, which counts as released.
        results = [r async for r in api.release_iter([a, a, b, c, a], concurrency=1)]
    assert [r.session_id for r in results] == [a, a, b, c, a]
    assert results[1] is results[0]
    assert results[4] is not results[0]
    assert all(r.ok for r in results)
    assert fake_browserbase.received.updates == {a: 2, b: 1, c: 1}
    assert fake_browserbase.received.requests["retrieve"] == 1  # the check of a's repeat


async def test_cancelled_while_a_repeat_waits_for_its_first(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        fake_browserbase.hold()
        run = asyncio.create_task(api.release_many([sid, sid], concurrency=2))
        await fake_browserbase.wait_for_in_flight(1)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert not our_tasks()
        assert api.flow_stats().in_flight == 0
        fake_browserbase.let_go()
    assert fake_browserbase.received.updates == {sid: 1}


async def test_workers_cancelled_while_waiting_for_a_place_give_it_back(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(100)
    async with make_api() as api:
        fake_browserbase.hold()
        run = asyncio.create_task(api.release_many(ids, concurrency=32))
        await fake_browserbase.wait_for_in_flight(10)  # the window's first ten; 22 wait
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert not our_tasks()
        stats = api.flow_stats()
        assert (stats.in_flight, stats.requests) == (0, 10)
        fake_browserbase.let_go()
        # Still usable, with its whole window.
        report = await api.release_many(ids[10:20])
    assert report.ok


async def test_a_server_asked_pause_holds_the_run_without_a_backoff_on_top(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(20)
    fake_browserbase.inject(Fault.status(503, headers={"retry-after-ms": "20"}))
    # A backoff of its own would be 30 s: far past the bound below.
    slow = RetryPolicy(initial_delay=30.0, max_delay=30.0)
    async with make_api(retry=slow) as api:
        async with asyncio.timeout(10):
            report = await api.release_many(ids, concurrency=4)
        stats = report.stats
    assert report.ok
    assert stats is not None
    assert (stats.pauses, stats.requests) == (1, 21)


async def test_wait_timeout_expiring_in_a_bulk_run_is_a_failed_result(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=math.inf)
    ids = fake_browserbase.add_sessions(3)
    async with make_api() as api:
        report = await api.release_many(ids, wait=True, wait_timeout=0.05)
    assert [type(result.error) for result in report.results] == [APITimeoutError] * 3
    assert all(fake_browserbase.status(session_id) == "RUNNING" for session_id in ids)


async def test_release_all_of_every_status_with_progress(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    running = fake_browserbase.add_sessions(2)
    pending = fake_browserbase.add_sessions(1, status="PENDING")
    ended = fake_browserbase.add_sessions(1, status="ERROR")
    seen: list[str] = []
    async with make_api() as api:
        report = await api.release_all(status=None, on_result=lambda r: seen.append(r.session_id))
    # The ended session is sent nothing: the report counts it apart.
    assert sorted(seen) == sorted(running + pending)
    assert [session.id for session in report.already_ended] == ended
    assert report.ok
    assert [fake_browserbase.status(i) for i in running + pending + ended] == [
        "COMPLETED",
        "COMPLETED",
        "COMPLETED",
        "ERROR",
    ]
    assert fake_browserbase.received.requests["list"] == 1


async def test_release_all_whose_listing_fails_releases_nothing(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(3)
    fake_browserbase.inject(Fault.status(500), Fault.status(500), Fault.status(500))
    async with make_api() as api:
        with pytest.raises(InternalServerError):
            await api.release_all()
    assert fake_browserbase.received.requests == {"list": 3}
    assert all(fake_browserbase.status(session_id) == "RUNNING" for session_id in ids)


async def test_attempts_count_the_retries(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    a, b = fake_browserbase.add_sessions(2)
    fake_browserbase.inject(Fault.status(503), Fault.status(503))
    async with make_api() as api:
        report = await api.release_many([a, b], concurrency=1)
    assert [(r.session_id, r.attempts) for r in report.results] == [(a, 3), (b, 1)]
    assert report.ok


async def test_a_close_in_the_turn_before_the_stream_starts_its_run_still_ends_it(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # release_iter's run is a task of its own, made by the first anext and started a loop
    # turn later. A close in that turn found no run to stop: the run, started on a closed
    # client, then waited for ever on an input that hangs.
    never: asyncio.Queue[str] = asyncio.Queue()

    async def hanging() -> AsyncIterator[str]:
        while True:
            yield await never.get()

    async with make_api() as api:
        results = api.release_iter(hanging())
        first = asyncio.create_task(anext(results))
        await asyncio.sleep(0)  # its first step: the run's task is made, and has not run yet
        await api.aclose()
        await until(first.done)
        assert not our_tasks()
    with pytest.raises(BulkReleaseAborted) as caught:
        first.result()
    assert isinstance(caught.value.__cause__, ClientClosedError)
    assert fake_browserbase.received.total == 0


async def test_release_all_counts_a_session_listed_twice_once(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # A listing taken while sessions change may repeat one. release_many's rule (a result at
    # each position of a repeated id) made the report of one release say "2 released".
    (running,) = fake_browserbase.add_sessions(1)
    (ended,) = fake_browserbase.add_sessions(1, status="COMPLETED")
    twice = [fake_browserbase.sessions[running], fake_browserbase.sessions[ended]] * 2
    fake_browserbase.inject(Fault.json(twice), route="list")
    seen: list[ReleaseResult] = []
    async with make_api() as api:
        report = await api.release_all(status=None, on_result=seen.append)
    assert [result.session_id for result in report.results] == [running]
    assert [result.session_id for result in seen] == [running]
    assert [session.id for session in report.already_ended] == [ended]
    assert fake_browserbase.received.updates == {running: 1}


async def test_results_made_without_a_request_still_let_a_cancellation_in(
    fake_browserbase: FakeBrowserbase,
) -> None:
    # After the run's first 401 every id left fails at once, without a request; so does an
    # invalid id, and a repeat is answered from the memo. Those results took no turn of the
    # loop: a run over a long input held the loop until it had been through all of it, and
    # a cancellation (Ctrl-C, a timeout, a close) came only after.
    count = 100_000
    taken = {"fresh": 0, "repeats": 0}

    def ids(kind: str) -> Iterator[str]:
        for number in range(count):
            taken[kind] += 1
            yield f"s-{number}" if kind == "fresh" else "s-0"

    first = asyncio.Event()
    async with SessionsAPI("a-revoked-key", base_url=fake_browserbase.base_url) as api:
        for kind in taken:
            first.clear()
            run = asyncio.create_task(api.release_many(ids(kind), on_result=lambda _: first.set()))
            await first.wait()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            assert not our_tasks()
    assert taken["fresh"] < count
    assert taken["repeats"] < count
    assert fake_browserbase.received.answers.keys() == {401}


async def test_release_all_aborted_still_reports_what_it_left_alone(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # The abort's report came from release_many, which never saw the listing: it said that
    # none had ended, where two had.
    fake_browserbase.add_sessions(3)
    ended = fake_browserbase.add_sessions(2, status="COMPLETED")

    def on_result(result: ReleaseResult) -> None:
        raise OSError("the progress bar broke")

    async with make_api() as api:
        with pytest.raises(BulkReleaseAborted) as caught:
            await api.release_all(status=None, on_result=on_result)
    report = caught.value.report
    assert sorted(session.id for session in report.already_ended) == sorted(ended)
    assert report.age_unknown == []
    assert [fake_browserbase.status(result.session_id) for result in report.results] == [
        "COMPLETED"
    ] * len(report.results)


@pytest.mark.parametrize("fed_after_the_stop", [False, True])
async def test_a_callback_that_raises_stops_a_run_waiting_on_its_input(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, fed_after_the_stop: bool
) -> None:
    # A worker waiting on an async input when on_result raised went on waiting: the run
    # hung until the input gave an id, and then released that id, taken after the stop.
    first, second, late = fake_browserbase.add_sessions(3)
    feed: asyncio.Queue[str] = asyncio.Queue()

    async def ids() -> AsyncIterator[str]:
        yield first
        yield second
        while True:
            yield await feed.get()

    def on_result(result: ReleaseResult) -> None:
        if fed_after_the_stop:
            feed.put_nowait(late)
        raise OSError("the progress bar broke")

    async with make_api() as api:
        run = asyncio.create_task(api.release_many(ids(), concurrency=4, on_result=on_result))
        await until(run.done)
        assert not our_tasks()
    with pytest.raises(BulkReleaseAborted) as caught:
        run.result()
    assert isinstance(caught.value.__cause__, OSError)
    assert sorted(result.session_id for result in caught.value.report.results) == sorted(
        [first, second]
    )
    assert fake_browserbase.received.updates.keys() == {first, second}


async def test_release_all_refuses_a_where_that_answers_with_an_awaitable(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # An async predicate's answer is a coroutine, which is true: a reaper given one released
    # every listed session, the live ones it meant to keep too (and warned "never awaited").
    fake_browserbase.add_sessions(2, user_metadata={"keep": "yes"})
    fake_browserbase.add_sessions(1)

    async def stale(session: Session) -> bool:
        return not session.user_metadata

    async with make_api() as api:
        with pytest.raises(ValueError, match="where must be a plain function"):
            await api.release_all(where=stale)
        assert fake_browserbase.received.total == 0  # refused before any request
        with pytest.raises(ValueError, match="where must answer true or false"):
            await api.release_all(where=lambda session: stale(session))
        future = asyncio.get_running_loop().create_future()
        with pytest.raises(ValueError, match="where must answer true or false"):
            await api.release_all(where=lambda session: future)
    assert fake_browserbase.received.requests == {"list": 2}  # and before any release


async def test_an_async_on_result_is_refused_instead_of_never_called(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # An async callback's coroutine was dropped: it never ran (a progress count stayed at
    # 0, a "never awaited" warning per session), and the run looked fine.
    ids = fake_browserbase.add_sessions(3)
    counted: list[ReleaseResult] = []

    async def count(result: ReleaseResult) -> None:
        counted.append(result)

    async with make_api() as api:
        with pytest.raises(ValueError, match="on_result must be a plain function"):
            await api.release_many(ids, on_result=count)
        with pytest.raises(ValueError, match="on_result must be a plain function"):
            await api.release_all(on_result=count)
        assert fake_browserbase.received.total == 0  # refused before any request
        with pytest.raises(BulkReleaseAborted, match="on_result must not answer") as caught:
            await api.release_many(ids, concurrency=1, on_result=lambda result: count(result))
        future = asyncio.get_running_loop().create_future()
        with pytest.raises(BulkReleaseAborted, match="on_result must not answer"):
            await api.release_many(ids, on_result=lambda result: future)
    assert isinstance(caught.value.__cause__, TypeError)
    assert [result.session_id for result in caught.value.report.results] == ids[:1]
    assert counted == []


async def test_an_async_input_is_never_read_past_its_end(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # Workers waiting their turn at the input, when one of them met its end, read it once
    # more each: an iterator over a queue that ends on a sentinel then waited on the queue
    # for ever, and so did the run.
    ids = fake_browserbase.add_sessions(3)
    feed: asyncio.Queue[str | None] = asyncio.Queue()
    reads_past_the_end = 0

    class QueueIds:
        ended = False

        def __aiter__(self) -> QueueIds:
            return self

        async def __anext__(self) -> str:
            nonlocal reads_past_the_end
            reads_past_the_end += self.ended
            item = await feed.get()
            if item is None:
                self.ended = True
                raise StopAsyncIteration
            return item

    async with make_api() as api:
        run = asyncio.create_task(api.release_many(QueueIds(), concurrency=4))
        for count, session_id in enumerate(ids, 1):
            feed.put_nowait(session_id)
            await fake_browserbase.wait_for_requests(count)  # the workers wait at the input
        feed.put_nowait(None)
        await until(run.done)
    assert [result.session_id for result in run.result().results] == ids
    assert reads_past_the_end == 0


async def test_an_id_that_cannot_be_shown_is_its_own_failure_and_the_run_goes_on(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # Naming the failed result of an odd id took its str(), which raised again: the run
    # stopped (BulkReleaseAborted, blaming the input or the callback) and the ids after it
    # were never tried.
    class Unshowable:
        def __str__(self) -> str:
            raise RuntimeError("no text for this one")

    first, last = fake_browserbase.add_sessions(2)
    async with make_api() as api:
        report = await api.release_many([first, Unshowable(), last], concurrency=1)  # type: ignore[list-item]
    odd = report.results[1]
    assert (odd.session_id, odd.attempts) == ("<Unshowable>", 0)
    assert isinstance(odd.error, RuntimeError)
    assert [result.ok for result in report.results] == [True, False, True]
    assert fake_browserbase.received.updates.keys() == {first, last}


ABANDONED_AT_THE_END = """
import asyncio

from browserbase_async import SessionsAPI
from browserbase_async.testing import FakeBrowserbase

kept = []


async def main():
    async with FakeBrowserbase() as fake:
        ids = fake.add_sessions(20)
        async with SessionsAPI(fake.api_key, base_url=fake.base_url) as api:
            results = api.release_iter(ids, concurrency=2)
            async for _ in results:
                break
            kept.append(results)  # neither closed nor dropped: open as the loop ends


asyncio.run(main())
print("ended")
"""


async def test_a_stream_left_open_as_the_loop_ends_closes_without_an_error() -> None:
    # The loop's shutdown closes every async generator still open, all at once: release_iter
    # and the stream inside it, which release_iter was closing too. One of the two closes
    # failed ("aclose(): asynchronous generator is already running"), and the loop logged
    # it with its traceback as the program ended.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ABANDONED_AT_THE_END,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert (process.returncode, out.decode(), err.decode()) == (0, "ended\n", "")
