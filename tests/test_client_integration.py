"""Every retry rule against a real aiohttp.web server on 127.0.0.1 (FakeBrowserbase)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from browserbase_async import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    SessionsAPI,
    SessionStatus,
)
from browserbase_async._transport import Transport
from browserbase_async.testing import FakeBrowserbase, Fault

from .conftest import FAST, ApiFactory
from .helpers import session_json

pytestmark = pytest.mark.asyncio


async def test_503_then_success(fake_browserbase: FakeBrowserbase, make_api: ApiFactory) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(503))
    async with make_api() as api:
        session = await api.release(sid)
    assert session.status is SessionStatus.COMPLETED
    assert fake_browserbase.received.requests["update"] == 2
    assert fake_browserbase.status(sid) == "COMPLETED"


async def test_500_forever_stops_after_max_attempts(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.status(500, message="boom")] * 10)
    async with make_api() as api:
        with pytest.raises(InternalServerError, match="500 Internal Server Error: boom"):
            await api.release(sid)
    assert fake_browserbase.received.requests["update"] == 3


@pytest.mark.parametrize(
    ("status", "header", "value", "asked"),
    [
        pytest.param(429, "retry-after-ms", "30", 0.030, id="429-retry-after-ms"),
        pytest.param(503, "Retry-After", "0.02", 0.020, id="503-retry-after-seconds"),
    ],
)
async def test_retry_after_is_honoured(
    retry_logs: pytest.LogCaptureFixture,
    status: int,
    header: str,
    value: str,
    asked: float,
) -> None:
    async with FakeBrowserbase(record_exchanges=True) as fake:
        (sid,) = fake.add_sessions(1)
        fake.inject(Fault.status(status, headers={header: value}))
        async with SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api:
            await api.release(sid)
            stats = api.flow_stats()
    first, second = fake.received.exchanges
    assert (first.status, second.status) == (status, 200)
    # The server's own clock: the retry came no sooner than asked.
    assert second.arrived - first.arrived >= asked
    assert (stats.pauses, stats.requests) == (1, 2)
    assert stats.paused_seconds == pytest.approx(asked, abs=0.005)
    assert f"the client pauses {asked:.3f} s, as asked" in retry_logs.text


async def test_retry_after_as_an_http_date(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, retry_logs: pytest.LogCaptureFixture
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    past = email.utils.formatdate(time.time() - 5, usegmt=True)
    fake_browserbase.inject(Fault.status(429, headers={"Retry-After": past}))
    async with make_api() as api:
        await api.release(sid)
        assert api.flow_stats().pauses == 0
    assert fake_browserbase.received.requests["update"] == 2
    assert "the client pauses 0.000 s, as asked" in retry_logs.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "120"},
        {"retry-after-ms": "61000"},
        {"Retry-After": email.utils.formatdate(time.time() + 3600, usegmt=True)},
    ],
)
async def test_a_retry_after_over_the_cap_fails_at_once(
    fake_browserbase: FakeBrowserbase,
    make_api: ApiFactory,
    retry_logs: pytest.LogCaptureFixture,
    headers: dict[str, str],
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(429, headers=headers))
    async with make_api(retry=RetryPolicy(max_retry_after=60.0)) as api:
        with pytest.raises(RateLimitError):
            await api.release(sid)
        stats = api.flow_stats()
    assert fake_browserbase.received.requests["update"] == 1
    # It raised at once: no pause was taken, for this call or for the client.
    assert (stats.pauses, stats.paused_seconds) == (0, 0.0)
    assert "over max_retry_after" in retry_logs.text


async def test_x_should_retry_false(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(503, headers={"x-should-retry": "false"}))
    async with make_api() as api:
        with pytest.raises(InternalServerError):
            await api.release(sid)
    assert fake_browserbase.received.requests["update"] == 1


async def test_a_dropped_connection_is_retried(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.drop())
    async with make_api() as api:
        assert (await api.release(sid)).status == "COMPLETED"
    assert fake_browserbase.received.requests["update"] == 2
    assert fake_browserbase.received.answers["dropped"] == 1


async def test_dropped_every_time_is_a_connection_error(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.drop()] * 3)
    async with make_api() as api:
        with pytest.raises(APIConnectionError, match=f"POST http://.*/v1/sessions/{sid}"):
            await api.release(sid)
    # POST is not idempotent, so aiohttp itself never re-sends it: 3 attempts, 3 requests.
    assert fake_browserbase.received.requests["update"] == 3
    assert fake_browserbase.status(sid) == "RUNNING"


async def test_a_lost_answer_is_retried_and_the_session_counts_as_released(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.lose())
    async with make_api() as api:
        session = await api.release(sid)
    assert session.status == "COMPLETED"
    # The retry is refused (already ended), then checked with a retrieve.
    assert fake_browserbase.received.requests == {"update": 2, "retrieve": 1}


async def test_a_hanging_server_times_out(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.hang(), Fault.hang())
    async with make_api(timeout=0.2, retry=RetryPolicy(max_attempts=2, initial_delay=0)) as api:
        with pytest.raises(APITimeoutError, match=r"no answer within 0\.2 s"):
            await api.retrieve("s-1")
    assert fake_browserbase.received.requests["retrieve"] == 2


async def test_a_200_with_html_is_a_validation_error(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.html())
    async with make_api() as api:
        with pytest.raises(APIResponseValidationError, match="not JSON") as caught:
            await api.retrieve(sid)
    assert "<html>" in caught.value.body
    assert fake_browserbase.received.requests["retrieve"] == 1


async def test_a_body_missing_a_field_is_a_validation_error(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    broken = session_json()
    del broken["status"]
    fake_browserbase.inject(Fault.json(broken))
    async with make_api() as api:
        with pytest.raises(APIResponseValidationError, match=r"\$\.status: missing"):
            await api.retrieve("s-1")
    assert fake_browserbase.received.requests["retrieve"] == 1


async def test_not_found_is_not_retried(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    async with make_api() as api:
        with pytest.raises(NotFoundError, match="Session not found"):
            await api.release("no-such-session")
    assert fake_browserbase.received.requests == {"update": 1}


async def test_a_wrong_key(fake_browserbase: FakeBrowserbase) -> None:
    async with SessionsAPI("wrong-key", base_url=fake_browserbase.base_url) as api:
        with pytest.raises(AuthenticationError) as caught:
            await api.list()
    assert "wrong-key" not in str(caught.value)
    assert fake_browserbase.received.requests["list"] == 1


async def test_update_reports_the_refusal_as_it_is(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1, status="COMPLETED")
    async with make_api() as api:
        with pytest.raises(BadRequestError, match="not running"):
            await api.update(sid)
        assert (await api.release(sid)).status == "COMPLETED"


async def test_a_refusal_for_a_running_session_stays_an_error(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(400, message="nope"))
    async with make_api() as api:
        with pytest.raises(BadRequestError, match="nope"):
            await api.release(sid)
    assert fake_browserbase.received.requests == {"update": 1, "retrieve": 1}


async def test_the_retry_budget_caps_an_outage(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, retry_logs: pytest.LogCaptureFixture
) -> None:
    ids = fake_browserbase.add_sessions(100)
    fake_browserbase.inject(*[Fault.status(503)] * 1000)
    policy = RetryPolicy(initial_delay=0.0, budget_ratio=0.2, budget_min_per_second=0.0)
    async with make_api(retry=policy) as api:
        for sid in ids:
            with pytest.raises(InternalServerError):
                await api.release(sid)
    # 100 first attempts earn 20 retries: the server sees 1.2x, not 3x.
    assert fake_browserbase.received.requests["update"] <= 121
    assert "the retry budget is spent" in retry_logs.text


async def test_a_429_costs_the_budget_nothing(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(*[Fault.status(429)] * 4)
    policy = RetryPolicy(
        max_attempts=5, initial_delay=0.0, budget_ratio=0.0, budget_min_per_second=0.0
    )
    async with make_api(retry=policy) as api:
        await api.release(sid)
    assert fake_browserbase.received.requests["update"] == 5


@pytest.mark.parametrize("status", [409, 410, 422])
async def test_an_already_ended_refusal_is_checked_and_counts_as_released(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, status: int
) -> None:
    (sid,) = fake_browserbase.add_sessions(1, status="COMPLETED")
    # 409 is retryable too: the retries come first, and the check after they are spent.
    refusals = 3 if status == 409 else 1
    fake_browserbase.inject(*[Fault.status(status)] * refusals)
    async with make_api() as api:
        session = await api.release(sid)
    assert session.status is SessionStatus.COMPLETED
    assert fake_browserbase.received.requests == {"update": refusals, "retrieve": 1}


async def test_a_hanging_post_times_out_and_the_retry_releases(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.hang())
    # A bound the retry's plain answer meets even on a loaded machine: no timing luck.
    async with make_api(timeout=1.0) as api:
        session = await api.release(sid)
    assert session.status is SessionStatus.COMPLETED
    assert fake_browserbase.received.answers["hung"] == 1
    assert fake_browserbase.received.requests["update"] == 2


async def test_no_timeout_lets_a_slow_answer_through(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.hold()
    async with make_api(timeout=None) as api:
        releasing = asyncio.create_task(api.release(sid))
        await fake_browserbase.wait_for_in_flight(1)
        fake_browserbase.let_go()
        session = await releasing
    assert session.status is SessionStatus.COMPLETED
    assert fake_browserbase.received.total == 1


async def test_max_connections_bounds_every_call_together(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(10)
    fake_browserbase.hold()
    async with make_api(max_connections=3) as api:
        calls = asyncio.gather(*(api.release(sid) for sid in ids))
        await fake_browserbase.wait_for_in_flight(3)
        stats = api.flow_stats()
        assert (stats.window, stats.in_flight, fake_browserbase.received.total) == (3, 3, 3)
        fake_browserbase.let_go()
        await calls
    assert fake_browserbase.received.peak_in_flight == 3
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


async def test_a_per_call_project_id_wins_over_the_clients(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    a, b, c, d, e = fake_browserbase.add_sessions(5)
    async with make_api(project_id="client-project") as api:
        await api.release(a, project_id="call-project")
        await api.release(b)
        await api.release_many([c], project_id="run-project")
        async for _ in api.release_iter([d], project_id="stream-project"):
            pass
        async with api.guard(e, project_id="guard-project"):
            pass
    assert fake_browserbase.received.bodies == [
        {"status": "REQUEST_RELEASE", "projectId": project}
        for project in (
            "call-project",
            "client-project",
            "run-project",
            "stream-project",
            "guard-project",
        )
    ]


async def test_a_closed_transport_opens_nothing() -> None:
    transport = Transport("http://127.0.0.1:9", "k", 1.0, 1)
    await transport.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await transport.request("GET", "/v1/sessions")
    assert transport.session is None


async def test_closing_the_pool_under_a_waiting_request_is_a_connection_error() -> None:
    # Our window never lets a call wait in the pool; the transport alone, with a pool of
    # one, shows what aiohttp does to a waiter when it closes: not a CancelledError.
    async with FakeBrowserbase() as fake:
        fake.hold()
        transport = Transport(fake.base_url, fake.api_key, None, 1)
        first = asyncio.create_task(transport.request("GET", "/v1/sessions"))
        second = asyncio.create_task(transport.request("GET", "/v1/sessions"))
        await fake.wait_for_in_flight(1)
        await asyncio.sleep(0)
        await transport.aclose()
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(outcome, APIConnectionError) for outcome in outcomes), outcomes
