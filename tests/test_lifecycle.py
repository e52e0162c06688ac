"""The session's whole life: create(), session(), waiting for a free browser, no lost create."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import signal
import sys
import textwrap
from typing import Any

import pytest

from browserbase_async import (
    APIConnectionError,
    APIResponseValidationError,
    BadRequestError,
    CreatedSession,
    InternalServerError,
    RateLimitError,
    RetryPolicy,
    SessionsAPI,
    SessionStatus,
)
from browserbase_async._lifecycle import CREATE_TAG_KEY, created_session
from browserbase_async._slots import SlotQueue, slot_hint
from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

from .conftest import FAST, ApiFactory
from .helpers import session_json, until

pytestmark = pytest.mark.asyncio

TAG_QUERY = "user_metadata['" + CREATE_TAG_KEY + "']:'{}'"


def running(fake: FakeBrowserbase) -> list[str]:
    return [sid for sid, s in fake.sessions.items() if s["status"] == "RUNNING"]


def creates(fake: FakeBrowserbase) -> int:
    return fake.received.requests["create"]


# -- create ---------------------------------------------------------------------------------


async def test_create_sends_the_body_as_the_api_spells_it(make_api: ApiFactory) -> None:
    async with (
        FakeBrowserbase(record_exchanges=True) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, project_id="proj", retry=FAST) as api,
    ):
        session = await api.create(
            keep_alive=True,
            timeout=600,
            region="eu-central-1",
            user_metadata={"job": "crawl"},
            browser_settings={"blockAds": True},
            proxies=[{"type": "browserbase", "geolocation": {"country": "US"}}],
            extension_id="ext-1",
            extra_body={"proxySettings": {"caCertificates": []}},
        )
    assert isinstance(session, CreatedSession)
    (exchange,) = fake.received.exchanges
    body = json.loads(exchange.request_body)
    tag = body["userMetadata"].pop(CREATE_TAG_KEY)
    assert len(tag) == 32
    assert body == {
        "projectId": "proj",
        "keepAlive": True,
        "timeout": 600,
        "region": "eu-central-1",
        "userMetadata": {"job": "crawl"},
        "browserSettings": {"blockAds": True},
        "proxies": [{"type": "browserbase", "geolocation": {"country": "US"}}],
        "extensionId": "ext-1",
        "proxySettings": {"caCertificates": []},
    }
    assert session.user_metadata == {"job": "crawl", CREATE_TAG_KEY: tag}
    assert session.keep_alive is True
    assert session.project_id == "proj"
    assert session.status == "RUNNING"


async def test_the_signing_key_is_never_shown(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_api() as api:
        session = await api.create()
    assert session.signing_key
    assert session.signing_key in session.connect_url
    assert session.selenium_remote_url.startswith("http://")
    for text in (repr(session), str(session), caplog.text):
        assert session.signing_key not in text
        assert session.connect_url not in text


async def test_an_unreadable_create_answer_never_shows_its_key(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    answer = {"id": "x", "status": "RUNNING", "signingKey": "SECRET-KEY", "connectUrl": "wss://a"}
    fake_browserbase.inject(Fault.json(answer, 201), route="create")
    async with make_api() as api:
        with pytest.raises(APIResponseValidationError) as caught:
            await api.create()
    shown = repr(caught.value) + str(caught.value) + repr(getattr(caught.value, "__notes__", ""))
    assert "SECRET-KEY" not in shown
    assert "wss://a" not in shown
    # The answer could not be read: the client looked its tag up, and found nothing made.
    assert fake_browserbase.received.requests["list"] == 1


SECRET_ANSWER = {
    "id": "x",
    "status": "RUNNING",
    "signingKey": "SECRET-KEY",
    "connectUrl": "wss://a/?signingKey=SECRET-KEY",
    "seleniumRemoteUrl": "http://a/?signingKey=SECRET-KEY",
}


@pytest.mark.parametrize(
    "content",
    [
        json.dumps([SECRET_ANSWER]).encode(),  # in a list
        json.dumps({"data": SECRET_ANSWER}).encode(),  # in an envelope
        json.dumps(SECRET_ANSWER).encode()[:-1],  # not JSON: broken off
    ],
    ids=["list", "envelope", "not-json"],
)
@pytest.mark.parametrize("made", [True, False], ids=["made", "not-made"])
async def test_a_create_answer_of_another_shape_never_shows_its_key(
    fake_browserbase: FakeBrowserbase,
    make_api: ApiFactory,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    made: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger="browserbase_async")
    # "html" does the create (the session is made) and answers its content; "body" does not.
    kind = "html" if made else "body"
    fault = Fault(kind, 201, {"Content-Type": "application/json"}, content)
    fake_browserbase.inject(fault, route="create")
    shown = ""
    async with make_api(retry=RetryPolicy(max_attempts=1)) as api:
        try:
            async with api.session():
                pass  # found by its tag, when made: released on the way out
        except APIResponseValidationError as exc:
            shown = repr(exc) + str(exc) + repr(getattr(exc, "__notes__", ""))
    assert "SECRET" in content.decode()
    assert "the answer" in shown + caplog.text or "Session" in shown + caplog.text
    for text in (shown, caplog.text):
        assert "SECRET-KEY" not in text
    assert running(fake_browserbase) == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"timeout": 59}, "timeout"),
        ({"timeout": 21601}, "timeout"),
        ({"timeout": 60.0}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"keep_alive": "no"}, "keep_alive"),
        ({"region": "mars-1"}, "region"),
        ({"project_id": 42}, "project_id"),
        ({"extension_id": ""}, "extension_id"),
        ({"user_metadata": ["a"]}, "user_metadata"),
        ({"user_metadata": {1: "a"}}, "user_metadata"),
        ({"user_metadata": {CREATE_TAG_KEY: "mine"}}, CREATE_TAG_KEY),
        ({"user_metadata": {"big": "x" * 500}}, "too long"),
        ({"user_metadata": {"n": math.nan}}, "not JSON"),
        ({"browser_settings": "fast"}, "browser_settings"),
        ({"proxies": "yes"}, "proxies"),
        ({"proxies": [{"type": "mine"}]}, "proxy"),
        ({"proxies": [{"type": "external"}]}, "server"),
        ({"extra_body": {"timeout": 60}, "timeout": 60}, "timeout"),
        ({"extra_body": {"userMetadata": {}}}, "userMetadata"),
        ({"extra_body": []}, "extra_body"),
        ({"extra_body": {"x": object()}}, "not JSON"),
        ({"wait_for_slot": -1}, "wait_for_slot"),
        ({"wait_for_slot": math.inf}, "wait_for_slot"),
        ({"wait_for_slot": True}, "wait_for_slot"),
        ({"request_timeout": 0}, "timeout"),
    ],
)
async def test_bad_arguments_are_refused_before_any_request(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, kwargs: dict[str, Any], named: str
) -> None:
    async with make_api() as api:
        with pytest.raises(ValueError, match=named):
            await api.create(**kwargs)
        with pytest.raises(ValueError, match=named):
            api.session(**kwargs)
    assert fake_browserbase.received.total == 0


async def test_a_refusal_of_the_create_is_raised_and_nothing_is_looked_up(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.status(400, message="no such extension"), route="create")
    async with make_api() as api:
        with pytest.raises(BadRequestError, match="no such extension"):
            await api.create(extension_id="nope")
    assert fake_browserbase.received.requests["list"] == 0


# -- no lost create --------------------------------------------------------------------------


async def test_a_lost_create_answer_is_found_by_its_tag(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.lose(), route="create")
    async with make_api() as api:
        session = await api.create(user_metadata={"job": "a"})
    assert creates(fake_browserbase) == 1  # never sent again blindly
    assert list(fake_browserbase.sessions) == [session.id]
    assert session.signing_key  # retrieved in full
    assert fake_browserbase.received.answers["lost"] == 1
    assert api._lifecycle.counts.recovered == 1


async def test_a_5xx_that_made_nothing_is_looked_up_then_sent_again(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.status(503), Fault.drop(), route="create")
    async with make_api() as api:
        session = await api.create()
    assert creates(fake_browserbase) == 3
    # A lookup after each failure, and one after the retried create served: none made twice.
    assert fake_browserbase.received.requests["list"] == 3
    assert list(fake_browserbase.sessions) == [session.id]


async def test_creates_that_keep_failing_end_after_max_attempts(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(*[Fault.drop()] * 5, route="create")
    async with make_api(retry=RetryPolicy(max_attempts=2, initial_delay=0)) as api:
        with pytest.raises(APIConnectionError):
            await api.create()
    assert creates(fake_browserbase) == 2
    assert fake_browserbase.sessions == {}


async def test_a_failed_lookup_says_which_tag_to_look_for(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.lose(), route="create")
    fake_browserbase.inject(Fault.status(400, message="no"), route="list")
    async with make_api() as api:
        with pytest.raises(APIConnectionError) as caught:
            await api.create()
    (session,) = fake_browserbase.sessions.values()
    tag = session["userMetadata"][CREATE_TAG_KEY]
    assert any(tag in note for note in caught.value.__notes__)
    assert isinstance(caught.value.__cause__, BadRequestError)


async def test_a_found_session_that_cannot_be_read_is_released(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.lose(), route="create")
    fake_browserbase.inject(Fault.json({"id": "?", "status": "RUNNING"}), route="retrieve")
    async with make_api() as api:
        with pytest.raises(APIResponseValidationError):
            await api.create()
    assert running(fake_browserbase) == []


async def cancel_while_on_the_wire(api: SessionsAPI, fake: FakeBrowserbase) -> None:
    """Start a create whose session the fake makes without answering; cancel it then."""
    fake.inject(Fault.stall(), route="create")
    made = len(fake.sessions) + 1
    task = asyncio.create_task(api.create())
    await fake.wait_until(lambda: len(fake.sessions) == made)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_create_on_the_wire_releases_what_it_made(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    async with make_api() as api:
        await cancel_while_on_the_wire(api, fake_browserbase)
        assert api._lifecycle.counts.released_after_giving_up == 1
    assert running(fake_browserbase) == []


async def test_a_cancelled_create_whose_lookup_fails_warns_with_the_tag(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake_browserbase.inject(Fault.status(400), route="list")
    async with make_api() as api:
        await cancel_while_on_the_wire(api, fake_browserbase)
    (session,) = fake_browserbase.sessions.values()
    assert session["userMetadata"][CREATE_TAG_KEY] in caplog.text


async def test_a_cancelled_session_block_releases_during_create_and_during_the_block(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    entered = asyncio.Event()

    async def work() -> None:
        async with api.session() as session:
            assert session.status == "RUNNING"
            entered.set()
            await asyncio.Event().wait()

    async with make_api() as api:
        task = asyncio.create_task(work())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert running(fake_browserbase) == []
        fake_browserbase.inject(Fault.stall(), route="create")
        task = asyncio.create_task(work())
        await fake_browserbase.wait_until(lambda: len(fake_browserbase.sessions) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert running(fake_browserbase) == []
    assert len(fake_browserbase.sessions) == 2


async def test_a_session_block_error_is_kept_and_the_session_released(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    async with make_api() as api:
        with pytest.raises(KeyError, match="mine"):
            async with api.session(user_metadata={"job": "x"}) as session:
                raise KeyError("mine")
        assert fake_browserbase.status(session.id) == "COMPLETED"
        async with api.session(wait=True) as session:
            pass
    assert fake_browserbase.status(session.id) == "COMPLETED"


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from browserbase_async import SessionsAPI

    async def main():
        async with SessionsAPI(sys.argv[1], base_url=sys.argv[2]) as api:
            async def worker():
                async with api.session():
                    await asyncio.Event().wait()
            tasks = [asyncio.create_task(worker()) for _ in range(3)]
            while api._lifecycle.counts.created < 3:
                await asyncio.sleep(0.01)
            print("ready", flush=True)
            await asyncio.gather(*tasks)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


async def test_a_session_block_whose_release_fails_names_the_session_left_running(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(*[Fault.status(503)] * 3, route="update")
    async with make_api(retry=RetryPolicy(max_attempts=1)) as api:
        with pytest.raises(InternalServerError) as caught:
            async with api.session() as session:
                pass
    assert running(fake_browserbase) == [session.id]
    notes = getattr(caught.value, "__notes__", [])
    assert any(session.id in note and "still be running" in note for note in notes)


async def test_ctrl_c_with_open_sessions_leaves_none_running(
    fake_browserbase: FakeBrowserbase,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CTRL_C_SCRIPT,
        fake_browserbase.api_key,
        fake_browserbase.base_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert await process.stdout.readline() == b"ready\n"
    assert len(running(fake_browserbase)) == 3
    process.send_signal(signal.SIGINT)
    errors = (await process.stderr.read()).decode()
    assert await process.wait() == 130, errors
    assert running(fake_browserbase) == []
    assert len(fake_browserbase.sessions) == 3


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys
    from browserbase_async import SessionsAPI

    async def main():
        # As docs/lifecycle.md shows: SIGTERM cancels the main task, as Ctrl-C does.
        main_task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        async with SessionsAPI(sys.argv[1], base_url=sys.argv[2]) as api:
            async def worker():
                async with api.session():
                    await asyncio.Event().wait()
            tasks = [asyncio.create_task(worker()) for _ in range(50)]
            while api._lifecycle.counts.created < 10:
                await asyncio.sleep(0.01)
            print("ready", flush=True)
            await asyncio.gather(*tasks)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        sys.exit(143)
    """
)


async def test_sigterm_made_a_cancellation_leaves_no_session_of_fifty_workers_running() -> None:
    async with FakeBrowserbase(faults=FaultPlan(max_browsers=10)) as fake:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SIGTERM_SCRIPT,
            fake.api_key,
            fake.base_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        assert await process.stdout.readline() == b"ready\n"
        assert len(running(fake)) == 10  # the other 40 wait in line for a browser
        process.send_signal(signal.SIGTERM)
        errors = (await process.stderr.read()).decode()
        assert await process.wait() == 143, errors
        assert running(fake) == []
        # The 10 made, released (a create on the wire at the signal may have made one more, as
        # a release freed a browser: it was found by its tag and released too).
        assert len(fake.sessions) >= 10


SHARED_ACCOUNT_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from browserbase_async import SessionsAPI

    async def main():
        print("started", flush=True)  # within asyncio.run: Ctrl-C cancels from now on
        async with SessionsAPI(sys.argv[1], base_url=sys.argv[2]) as api:
            async def worker():
                async with api.session():
                    print("in", flush=True)
                    await asyncio.Event().wait()
            await asyncio.gather(*(worker() for _ in range(6)))

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


async def test_processes_sharing_a_full_plan_leave_nothing_running_at_ctrl_c() -> None:
    # One fake in a process of its own, as one account; three processes of 6 workers each on
    # a plan of 4 browsers: 4 blocks entered, the other creates refused or on their way, then
    # Ctrl-C in each.
    fake = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "browserbase_async.testing",
        "--sessions",
        "0",
        "--max-browsers",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert fake.stdout is not None
    base_url = (await fake.stdout.readline()).decode().strip().partition("=")[2]
    api_key = (await fake.stdout.readline()).decode().strip().partition("=")[2]
    workers: list[asyncio.subprocess.Process] = []
    try:
        workers += [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                SHARED_ACCOUNT_WORKER,
                api_key,
                base_url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3)
        ]
        lines: asyncio.Queue[bytes] = asyncio.Queue()

        async def read(process: asyncio.subprocess.Process) -> None:
            assert process.stdout is not None
            async for line in process.stdout:
                lines.put_nowait(line)

        reading = [asyncio.create_task(read(process)) for process in workers]
        seen = collections.Counter[bytes]()
        while seen[b"started\n"] < 3 or seen[b"in\n"] < 4:
            seen[await lines.get()] += 1
        async with SessionsAPI(api_key, base_url=base_url) as api:
            assert len(await api.list(status="RUNNING")) == 4
            for process in workers:
                process.send_signal(signal.SIGINT)
            for process in workers:
                assert process.stderr is not None
                errors = (await process.stderr.read()).decode()
                assert await process.wait() == 130, errors
            await asyncio.gather(*reading)
            assert await api.list(status="RUNNING") == []
            # Every session made was released (a create not yet refused when another process
            # freed a browser may have made one more: how many is the machine's timing).
            ended = await api.list()
        assert len(ended) >= 4
        assert {session.status for session in ended} == {SessionStatus.COMPLETED}
    finally:
        for process in (*workers, fake):
            if process.returncode is None:
                process.kill()
            await process.wait()


# -- waiting for a free browser ---------------------------------------------------------------


async def test_a_full_plan_makes_creates_wait_then_serves_them_in_order() -> None:
    async with (
        FakeBrowserbase(faults=FaultPlan(max_browsers=2)) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        seeded = fake.add_sessions(2)
        first = asyncio.create_task(api.create(wait_for_slot=60, user_metadata={"n": "1"}))
        await until(lambda: api._lifecycle.counts.refused == 1)
        later = [
            asyncio.create_task(api.create(wait_for_slot=60, user_metadata={"n": str(n)}))
            for n in (2, 3)
        ]
        await until(lambda: api._lifecycle.slots._live == 3)
        assert creates(fake) == 1  # those behind a waiting create line up without asking
        window = api.flow_stats().window
        await api.release(seeded[0])
        one = await first
        assert not any(task.done() for task in later)
        await api.release(seeded[1])
        two = await later[0]
        assert not later[1].done()
        await api.release(one.id)
        three = await later[1]
        stats = api.flow_stats()
    assert [s.user_metadata and s.user_metadata["n"] for s in (one, two, three)] == ["1", "2", "3"]
    # The plan's 429 taught the flow control nothing: no smaller window, no pause.
    assert stats.rate_limited == 0
    assert stats.pauses == 0
    assert stats.window >= window
    assert api._lifecycle.counts.waited == 3
    assert api._lifecycle.counts.refused == 1


async def test_a_create_waiting_for_a_slot_leaves_the_releases_alone() -> None:
    async with (
        FakeBrowserbase(faults=FaultPlan(max_browsers=1)) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        (busy,) = fake.add_sessions(1)
        others = fake.add_sessions(20, status="COMPLETED")
        waiting = asyncio.create_task(api.create(wait_for_slot=60))
        await until(lambda: api._lifecycle.counts.refused == 1)
        report = await api.release_many(others)
        assert len(report.failed) == 0
        assert report.stats.pauses == 0
        assert not waiting.done()
        await api.release(busy)
        created = await waiting
        assert api.flow_stats().rate_limited == 0
    assert running(fake) == [created.id]


async def test_wait_for_slot_running_out_raises_and_creates_nothing() -> None:
    async with (
        FakeBrowserbase(faults=FaultPlan(max_browsers=1)) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        fake.add_sessions(1)
        with pytest.raises(RateLimitError) as caught:
            await api.create()  # create's default: no wait
        assert creates(fake) == 1
        assert caught.value.headers["x-ratelimit-limit"] == "1"
        with pytest.raises(RateLimitError) as caught:
            await api.create(wait_for_slot=0.05)
        assert any("wait_for_slot=0.05" in note for note in caught.value.__notes__)
        # A create that comes while another waits lines up behind it, and may run out there.
        ahead = asyncio.create_task(api.create(wait_for_slot=60))
        await until(lambda: api._lifecycle.slots._live == 1)
        with pytest.raises(RateLimitError, match="in line"):
            await api.create(wait_for_slot=0.01)
        ahead.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ahead
    assert len(fake.sessions) == 1


async def test_a_plan_that_resets_serves_the_next_creates_in_a_chain() -> None:
    # A hint of 0 s: the timer gives the turn at once, and each success hands on the next.
    async with (
        FakeBrowserbase() as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        limited = Fault.status(429, headers={"Retry-After": "0"})
        fake.inject(limited, limited, route="create")
        sessions = await asyncio.gather(*(api.create(wait_for_slot=30) for _ in range(4)))
    assert len({session.id for session in sessions}) == 4
    assert len(fake.sessions) == 4


async def test_the_per_minute_limit_answers_as_the_api_does() -> None:
    async with (
        FakeBrowserbase(faults=FaultPlan(creates_per_minute=2)) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        await api.create()
        await api.create()
        with pytest.raises(RateLimitError) as caught:
            await api.create()
    headers = caught.value.headers
    assert headers["x-ratelimit-limit"] == "2"
    assert headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(headers["x-ratelimit-reset"]) <= 60
    assert headers["Retry-After"] == headers["x-ratelimit-reset"]


async def test_a_session_with_a_timeout_ends_by_itself_and_frees_its_browser() -> None:
    plan = FaultPlan(max_browsers=1, timeout_scale=0.001)
    async with (
        FakeBrowserbase(faults=plan) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        first = await api.create(timeout=60)
        assert first.expires_at is not None
        assert (first.expires_at - first.started_at).total_seconds() == 60
        with pytest.raises(RateLimitError) as caught:
            await api.create()
        assert caught.value.headers["Retry-After"] == "1"
        await fake.wait_for_status(first.id, "TIMED_OUT")
        await api.create()


async def test_slot_hints() -> None:
    assert slot_hint({}) is None
    assert slot_hint({"retry-after": "45"}) == 45
    assert slot_hint({"x-ratelimit-reset": "7"}) == 7
    assert slot_hint({"retry-after": "3", "x-ratelimit-reset": "7"}) == 7
    assert slot_hint({"x-ratelimit-reset": "soon"}) is None
    # A hint that asks for no wait is a bare 429's: no hint (see below).
    assert slot_hint({"x-ratelimit-reset": "-4"}) is None
    assert slot_hint({"retry-after": "0", "x-ratelimit-reset": "0"}) is None
    hint = slot_hint({"x-ratelimit-reset": "4000000000"})
    assert hint is not None
    assert hint > 1e8


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "0", "x-ratelimit-reset": "0"},
        {"Retry-After": "-1"},
        {"retry-after-ms": "0"},
        {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
        {"x-ratelimit-reset": "1000000001"},  # a Unix time long past
    ],
)
async def test_a_full_plans_429_that_asks_for_no_wait_is_not_tried_again_at_once(
    headers: dict[str, str],
) -> None:
    async with (
        FakeBrowserbase() as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        fake.inject(*[Fault.status(429, headers=headers)] * 100, route="create")
        with pytest.raises(RateLimitError):
            await api.create(wait_for_slot=0.2)
    # A bare 429, as for any call: tried again after DEFAULT_SLOT_RETRY (1 s) or a release,
    # not in a loop as fast as the round trip (thousands of creates a second).
    assert creates(fake) == 1


async def test_a_turn_given_but_not_taken_passes_on() -> None:
    slots = SlotQueue()
    loop = asyncio.get_running_loop()
    slots.refused(60.0)
    first = asyncio.create_task(slots.wait_turn(loop.time() + 60))
    second = asyncio.create_task(slots.wait_turn(loop.time() + 60))
    await until(lambda: slots._live == 2)
    slots.freed()
    first.cancel()  # given the turn, then cancelled before it could use it
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is False  # a freed browser's turn, passed on
    slots.served(hinted=False)
    assert not slots.busy


# -- the official SDK against the fake's plan ------------------------------------------------


async def test_the_official_sdk_creates_unchanged_against_the_plan_limits() -> None:
    browserbase = pytest.importorskip("browserbase")
    plan = FaultPlan(max_browsers=2, creates_per_minute=3)
    async with FakeBrowserbase(faults=plan) as fake:
        sdk = browserbase.AsyncBrowserbase(
            api_key=fake.api_key, base_url=fake.base_url, max_retries=0
        )
        async with sdk:
            first = await sdk.sessions.create(
                project_id="p", user_metadata={"job": "sdk"}, api_timeout=600, keep_alive=False
            )
            second = await sdk.sessions.create(region="us-east-1")
            assert first.connect_url
            assert first.signing_key
            assert first.status == "RUNNING"
            with pytest.raises(browserbase.RateLimitError) as full:
                await sdk.sessions.create()
            assert full.value.response.headers["retry-after"]
            await sdk.sessions.update(first.id, status="REQUEST_RELEASE", project_id="p")
            await sdk.sessions.create()  # the browser freed: served
            await sdk.sessions.update(second.id, status="REQUEST_RELEASE")
            with pytest.raises(browserbase.RateLimitError) as per_minute:
                await sdk.sessions.create()
            assert per_minute.value.response.headers["x-ratelimit-limit"] == "3"
            with pytest.raises(browserbase.BadRequestError):
                await sdk.sessions.create(region="mars-1")  # type: ignore[arg-type]
            listed = await sdk.sessions.list(q="user_metadata['job']:'sdk'")
            assert [session.id for session in listed] == [first.id]


async def test_creates_behind_a_plan_others_held_go_as_soon_as_it_has_room() -> None:
    # Releases that free no browser (the plan is held by more sessions than it allows) are
    # doubted: one create probes at a time. Once one is served, the others follow at once,
    # not at the server's hint (60 s here).
    async with (
        FakeBrowserbase(faults=FaultPlan(max_browsers=2)) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        held = fake.add_sessions(8)
        waiting = [asyncio.create_task(api.create(wait_for_slot=60)) for _ in range(2)]
        await until(lambda: api._lifecycle.slots._live == 2)
        for session_id in held:
            await api.release(session_id)
        made = await asyncio.gather(*waiting)
    assert sorted(running(fake)) == sorted(session.id for session in made)
    # One probe per release at most, while the plan was full.
    assert api._lifecycle.counts.refused <= 2 + len(held)


async def test_a_turn_that_ends_in_an_error_goes_to_the_next_in_line() -> None:
    async with (
        FakeBrowserbase(faults=FaultPlan(max_browsers=1)) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        (held,) = fake.add_sessions(1)
        first = asyncio.create_task(api.create(wait_for_slot=60, extension_id="gone"))
        await until(lambda: api._lifecycle.counts.refused == 1)
        second = asyncio.create_task(api.create(wait_for_slot=60))
        await until(lambda: api._lifecycle.slots._live == 2)
        fake.inject(Fault.status(400, message="no such extension"), route="create")
        await api.release(held)
        with pytest.raises(BadRequestError):
            await first
        made = await second  # the free browser's turn, passed on
    assert running(fake) == [made.id]


async def test_an_answer_that_is_not_json_is_found_by_its_tag(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    fake_browserbase.inject(Fault.html(), route="create")
    async with make_api() as api:
        session = await api.create(proxies=True)
    assert list(fake_browserbase.sessions) == [session.id]
    assert creates(fake_browserbase) == 1


async def test_a_created_session_needs_its_connection_fields() -> None:
    with pytest.raises(APIResponseValidationError, match="signingKey"):
        created_session({**session_json(), "connectUrl": "wss://a", "seleniumRemoteUrl": "h"})
    with pytest.raises(APIResponseValidationError):
        created_session(["not", "a", "session"])


async def test_closing_the_client_ends_the_creates_waiting_for_a_slot() -> None:
    async with FakeBrowserbase(faults=FaultPlan(max_browsers=1)) as fake:
        fake.add_sessions(1)
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        waiting = asyncio.create_task(api.create(wait_for_slot=300))
        await until(lambda: api._lifecycle.slots._live == 1)
        await api.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await waiting
        with pytest.raises(RuntimeError, match="closed"):
            await api._lifecycle.slots.wait_turn(0.0)
    assert len(fake.sessions) == 1


async def test_a_create_in_line_cancelled_as_the_client_closes_raises_its_cancellation() -> None:
    async with FakeBrowserbase(faults=FaultPlan(max_browsers=1)) as fake:
        fake.add_sessions(1)
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        waiting = asyncio.create_task(api.create(wait_for_slot=300))
        await until(lambda: api._lifecycle.slots._live == 1)
        # The close's first step ends the line; the cancellation comes in the same loop turn,
        # before the create resumes (a timeout's deadline, a TaskGroup's sibling failing).
        closing = asyncio.create_task(api.aclose())
        asyncio.get_running_loop().call_soon(waiting.cancel)
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await closing
    assert len(fake.sessions) == 1


async def test_creates_waiting_for_a_permit_line_up_behind_a_refusal_unsent() -> None:
    async with (
        FakeBrowserbase(faults=FaultPlan(max_browsers=1)) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        (held,) = fake.add_sessions(1)

        async def worker() -> None:
            async with api.session():
                pass

        workers = [asyncio.create_task(worker()) for _ in range(30)]
        await until(lambda: api._lifecycle.slots._live == 30)
        await api.release(held)
        await asyncio.gather(*workers)
    # Only the creates in the window's first flight were sent and refused; the others,
    # still waiting for a permit then, lined up without a request.
    assert api._lifecycle.counts.refused <= 10
    assert creates(fake) == 30 + api._lifecycle.counts.refused
    assert running(fake) == []


async def test_a_create_cancelled_before_it_was_sent_looks_nothing_up() -> None:
    async with (
        FakeBrowserbase() as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST, max_connections=1) as api,
    ):
        fake.hold()
        first = asyncio.create_task(api.create())
        await fake.wait_for_in_flight(1)
        second = asyncio.create_task(api.create())  # waits for the one permit
        await until(lambda: api.flow_stats().requests == 1 and len(api._flow._waiters) == 1)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        fake.let_go()
        await first
    assert fake.received.requests["list"] == 0
    assert creates(fake) == 1


async def test_a_create_that_times_out_after_the_server_made_it_is_found(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    # The leak of stagehand #2782: the session made, the answer late, the create timed out.
    fake_browserbase.inject(Fault.stall(), route="create")
    async with make_api() as api:
        session = await api.create(request_timeout=1.0)  # the lookup's plain answer meets it
    assert list(fake_browserbase.sessions) == [session.id]
    assert creates(fake_browserbase) == 1
    assert api._lifecycle.counts.recovered == 1


@pytest.mark.parametrize("hint", [{"Retry-After": "1"}, {"x-ratelimit-reset": "1"}])
async def test_a_refused_create_tries_again_no_sooner_than_the_server_asked(
    hint: dict[str, str],
) -> None:
    async with (
        FakeBrowserbase(record_exchanges=True) as fake,
        SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST) as api,
    ):
        fake.inject(Fault.status(429, headers=hint), route="create")
        await api.create(wait_for_slot=30)
    refused, served = (e for e in fake.received.exchanges if e.route == "create")
    assert (refused.status, served.status) == (429, 201)
    # A lower bound only: the client's timer never fires early, however loaded the machine.
    assert served.arrived - refused.arrived >= 1.0


async def test_closing_the_client_releases_what_open_session_blocks_hold() -> None:
    async with FakeBrowserbase() as fake:
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        entered = asyncio.Event()

        async def work() -> None:
            async with api.session():
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(work())
        await entered.wait()
        await api.aclose()  # as a program stopped by Ctrl-C does, its tasks not yet cancelled
        assert running(fake) == []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(fake.sessions) == 1


async def test_closing_gives_no_browser_it_frees_to_a_waiting_create() -> None:
    # aclose() releases what open blocks hold; each release frees a browser, which must not
    # go to a create still in line: it would be made as the client closes, and left running.
    async with FakeBrowserbase(faults=FaultPlan(max_browsers=2)) as fake:
        api = SessionsAPI(fake.api_key, base_url=fake.base_url, retry=FAST)
        forever, entered = asyncio.Event(), []

        async def worker() -> None:
            async with api.session(wait_for_slot=300) as session:
                entered.append(session.id)
                await forever.wait()

        workers = [asyncio.create_task(worker()) for _ in range(5)]
        await until(lambda: len(entered) == 2 and api._lifecycle.slots._live == 3)
        await api.aclose()
        assert running(fake) == []
        assert sorted(fake.sessions) == sorted(entered)  # no create went out while closing
        for task in workers:
            task.cancel()
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
    waiting = [outcome for outcome in outcomes if not isinstance(outcome, asyncio.CancelledError)]
    assert len(waiting) == 3
    assert all(isinstance(outcome, RuntimeError) for outcome in waiting)


async def test_closing_ends_a_create_sleeping_before_it_tries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 60.0)
    async with FakeBrowserbase() as fake:
        fake.inject(Fault.status(503), route="create")
        api = SessionsAPI(fake.api_key, base_url=fake.base_url)
        call = asyncio.create_task(api.create())
        await fake.wait_for_requests(2)  # the create, then its lookup by tag: none made
        await until(lambda: api.flow_stats().in_flight == 0)  # off to its backoff
        await api.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(call, 10)  # not the minute of its backoff
    assert fake.sessions == {}


async def test_twenty_thousand_creates_leaving_the_line_leave_in_linear_time() -> None:
    slots = SlotQueue()
    loop = asyncio.get_running_loop()
    slots.refused(60.0)
    leaving = [asyncio.create_task(slots.wait_turn(loop.time() + 60)) for _ in range(20_000)]
    last = asyncio.create_task(slots.wait_turn(loop.time() + 60))  # behind them all
    await until(lambda: slots._live == 20_001)
    for task in leaving:
        task.cancel()
    outcomes = await asyncio.gather(*leaving, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    # Swept out as they went (no scan of the line per leaver): about the one left.
    assert slots._live == 1
    assert len(slots._waiting) <= 1 + 2 * 16
    slots.freed()
    assert await last is False  # the turn goes to the one still waiting
    slots.served(hinted=False)
    assert not slots.busy
