"""What a new user tripped on: a base URL ending in /v1, a wrong key in a bulk run, a report
that said failed for a session that ended, the fake from a shell, and the smaller things."""

from __future__ import annotations

import io
import signal
import socket
import sys
from collections.abc import Iterator

import pytest
from aiohttp import web
from click.testing import CliRunner
from rich.console import Console

from browserbase_async import (
    APIConnectionError,
    AuthenticationError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    SessionsAPI,
)
from browserbase_async._converter import structure_session
from browserbase_async.cli import _app
from browserbase_async.cli._output import print_sessions
from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

from .conftest import FAST, ApiFactory
from .helpers import session_json
from .test_answers import serve
from .test_cli import run_cli, start_cli

# -- 1. a base URL ending in /v1; a 404 that is not the API's ---------------------


@pytest.mark.parametrize(
    "url", ["https://api.browserbase.com/v1", "https://api.browserbase.com/v1/", "http://[::1]/v1"]
)
def test_a_base_url_ending_in_v1_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="without /v1") as caught:
        SessionsAPI("k", base_url=url)
    assert "'https://api.browserbase.com'" in str(caught.value) or "[::1]" in str(caught.value)


def test_a_base_url_ending_in_v1_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROWSERBASE_BASE_URL", "https://api.browserbase.com/v1")
    with pytest.raises(ValueError, match="without /v1"):
        SessionsAPI("k")


def test_a_path_that_merely_starts_like_v1_is_kept() -> None:
    assert SessionsAPI("k", base_url="https://proxy.example/v10").base_url.endswith("/v10")


@pytest.mark.asyncio
async def test_a_404_that_is_not_the_apis_asks_about_base_url(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    async def not_the_api(request: web.Request) -> web.Response:
        return web.Response(status=404, text="404: Not Found")

    async with serve(not_the_api) as (url, _), SessionsAPI("k", base_url=url) as api:
        with pytest.raises(NotFoundError, match=r"is base_url the API's root\?"):
            await api.release("s-1")
    async with make_api() as api:
        with pytest.raises(NotFoundError) as caught:
            await api.release("no-such-session")
    assert "base_url" not in str(caught.value)  # the API's own 404 says what it says


# -- 2. a wrong key stops a bulk run ----------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("way", ["release_many", "release_iter"])
async def test_a_wrong_key_ends_the_run_at_its_first_401(
    way: str, fake_browserbase: FakeBrowserbase
) -> None:
    ids = fake_browserbase.add_sessions(1000)
    async with SessionsAPI("wrong", base_url=fake_browserbase.base_url, retry=FAST) as api:
        if way == "release_many":
            results = (await api.release_many(ids, concurrency=32)).results
        else:
            results = [result async for result in api.release_iter(ids, concurrency=32)]
    sent = fake_browserbase.received.total
    # Only what was already on the wire when the first 401 came back: at most the window.
    assert 1 <= sent <= 32
    assert len(results) == 1000
    assert all(isinstance(result.error, AuthenticationError) for result in results)
    assert sum(result.attempts for result in results) == sent
    untried = [result for result in results if result.attempts == 0]
    assert len(untried) == 1000 - sent
    assert len({id(result.error) for result in untried}) == 1  # that same error
    assert all(status == "RUNNING" for status in map(fake_browserbase.status, ids))


@pytest.mark.asyncio
async def test_a_403_ends_the_run_too(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    ids = fake_browserbase.add_sessions(5)
    fake_browserbase.inject(Fault.status(403, message="not your project"), route="update")
    async with make_api() as api:
        report = await api.release_many(ids, concurrency=1)
    assert fake_browserbase.received.total == 1
    assert [result.attempts for result in report.results] == [1, 0, 0, 0, 0]
    assert all(isinstance(result.error, PermissionDeniedError) for result in report.results)
    assert "not your project" in str(report.results[4].error)


@pytest.mark.asyncio
async def test_the_next_run_of_the_same_client_starts_afresh(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    first, second = fake_browserbase.add_sessions(2)
    fake_browserbase.inject(Fault.status(401), route="update")
    async with make_api() as api:
        assert not (await api.release_many([first])).ok
        assert (await api.release_many([second])).ok


async def _release_with_the_fatal_set_while_waiting(fake: FakeBrowserbase) -> None:
    """A worker that got its place only after the 401 came back sends nothing."""
    ids = fake.add_sessions(3)
    fake.inject(Fault.status(401), route="update")
    async with SessionsAPI(fake.api_key, base_url=fake.base_url, max_connections=1) as api:
        report = await api.release_many(ids, concurrency=3)
    assert fake.received.total == 1
    assert [result.attempts for result in report.results] == [1, 0, 0]


@pytest.mark.asyncio
async def test_workers_waiting_for_a_place_send_nothing_after_a_401(
    fake_browserbase: FakeBrowserbase,
) -> None:
    await _release_with_the_fatal_set_while_waiting(fake_browserbase)


@pytest.mark.asyncio
async def test_the_cli_stops_at_a_wrong_key_and_names_the_setting(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ids = fake_browserbase.add_sessions(200)
    ran = await run_cli(
        fake_browserbase,
        "release",
        "--from-file",
        "-",
        stdin="\n".join(ids),
        env={"BROWSERBASE_API_KEY": "wrong"},
    )
    assert ran.code == 1
    assert "200 failed (200 unauthorized)" in ran.err
    assert "check --api-key or BROWSERBASE_API_KEY" in ran.err
    assert fake_browserbase.received.total <= 32


# -- 3. a report true in both directions ------------------------------------------


@pytest.mark.asyncio
async def test_a_lost_answer_then_503s_is_released_after_a_check(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    sid, single = fake_browserbase.add_sessions(2)
    fake_browserbase.inject(Fault.lose(), Fault.status(503), Fault.status(503), route="update")
    async with make_api() as api:
        [result] = (await api.release_many([sid])).results
        fake_browserbase.inject(Fault.lose(), Fault.status(503), Fault.status(503), route="update")
        session = await api.release(single)
    assert result.ok
    assert result.session is not None
    assert result.session.status == "COMPLETED"
    assert result.attempts == 3
    assert session.status == "COMPLETED"
    assert fake_browserbase.received.requests["retrieve"] == 2


@pytest.mark.asyncio
async def test_a_failure_the_server_did_not_act_on_stays_failed(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(503), Fault.status(503), Fault.status(503), route="update")
    async with make_api() as api:
        [result] = (await api.release_many([sid])).results
    assert isinstance(result.error, InternalServerError)  # the release's own error
    assert result.error.__cause__ is None  # the check worked, and said RUNNING
    assert fake_browserbase.received.requests["retrieve"] == 1
    assert fake_browserbase.status(sid) == "RUNNING"


@pytest.mark.asyncio
async def test_no_check_when_the_retry_budget_is_spent(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.lose(), route="update")
    spent = RetryPolicy(max_attempts=1, budget_ratio=0.0, budget_min_per_second=0.0)
    async with make_api(retry=spent) as api:
        [result] = (await api.release_many([sid])).results
    assert isinstance(result.error, APIConnectionError)
    assert fake_browserbase.received.requests["retrieve"] == 0


# -- 4. the fake from a shell -----------------------------------------------------


@pytest.mark.asyncio
async def test_the_fake_serves_from_a_shell_until_ctrl_c() -> None:
    fake_from_a_shell = (sys.executable, "-m", "browserbase_async.testing")
    process = await start_cli(None, "--sessions", "3", "--faults", program=fake_from_a_shell)
    assert process.stdout is not None
    assert process.stderr is not None
    url_line = (await process.stdout.readline()).decode().strip()
    key_line = (await process.stdout.readline()).decode().strip()
    await process.stderr.readline()  # "serving ...": it listens
    name, _, url = url_line.partition("=")
    assert name == "BROWSERBASE_BASE_URL"
    assert key_line == "BROWSERBASE_API_KEY=bb_fake_key"
    async with SessionsAPI("bb_fake_key", base_url=url, retry=RetryPolicy(max_attempts=10)) as api:
        assert len(await api.list(status="running")) == 3
    process.send_signal(signal.SIGINT)
    _, err = await process.communicate()
    assert process.returncode == 0
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize("args", [["--port", "70000"], ["--sessions", "-1"], ["--nope"]])
def test_the_fakes_bad_options_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from browserbase_async.testing.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "python -m browserbase_async.testing" in capsys.readouterr().err


def test_a_taken_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from browserbase_async.testing.__main__ import main

    with FakeBrowserbase.in_thread() as fake:
        port = fake.base_url.rsplit(":", 1)[1]
        assert main(["--port", port]) == 1
    assert f"cannot listen on port {port}" in capsys.readouterr().err


# -- 5. list never cuts an id -----------------------------------------------------

LONG_ID = "ab45338e-82d4-4064-9f0e-1234567890ab"


@pytest.mark.parametrize("width", [30, 80])
def test_the_table_never_cuts_an_id(width: int) -> None:
    session = structure_session(session_json(id=LONG_ID, userMetadata={"job": "a" * 60}))
    out = io.StringIO()
    print_sessions([session], Console(file=out, width=width, force_terminal=True))
    assert LONG_ID in out.getvalue()


def test_list_in_a_pipe_is_tab_separated(fake_browserbase_in_thread: FakeBrowserbase) -> None:
    fake = fake_browserbase_in_thread
    ran = CliRunner().invoke(
        _app.cli, ["list", "--api-key", fake.api_key, "--base-url", fake.base_url]
    )
    assert ran.exit_code == 0, ran.output
    rows = [line.split("\t") for line in ran.stdout.splitlines()]
    assert [row[:3] for row in rows] == [[LONG_ID, "RUNNING", "us-west-2"]]
    assert len(rows[0]) == 5


@pytest.fixture
def fake_browserbase_in_thread() -> Iterator[FakeBrowserbase]:
    with FakeBrowserbase.in_thread() as fake:
        fake.add_session(LONG_ID)
        yield fake


def test_list_offers_no_project_id() -> None:
    ran = CliRunner().invoke(_app.cli, ["list", "--help"])
    assert "--project-id" not in ran.output
    assert "--project-id" in CliRunner().invoke(_app.cli, ["release", "--help"]).output


# -- the smaller things -----------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("status", ["running", "Running", "RUNNING"])
async def test_a_status_in_any_case(
    status: str, fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    running = fake_browserbase.add_sessions(2)
    fake_browserbase.add_sessions(1, status="COMPLETED")
    async with make_api() as api:
        assert {session.id for session in await api.list(status=status)} == set(running)
        report = await api.release_all(status=status)
    assert sorted(result.session_id for result in report.results) == sorted(running)


def test_add_session_and_add_sessions_both_give_ids() -> None:
    fake = FakeBrowserbase()
    one = fake.add_session()
    many = fake.add_sessions(2)
    assert isinstance(one, str)
    assert all(isinstance(session_id, str) for session_id in many)
    assert set(fake.sessions) == {one, *many}


@pytest.mark.asyncio
async def test_the_realistic_plan_is_repeatable_by_default() -> None:
    assert FaultPlan.realistic() == FaultPlan.realistic(seed=0)
    draws = []
    for _ in range(2):
        fake = FakeBrowserbase(faults=FaultPlan.realistic())
        draws.append([fake._draw() for _ in range(200)])
    assert draws[0] == draws[1]
    assert any(draws[0])


@pytest.mark.asyncio
async def test_a_connection_error_names_the_base_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    # The port is free again: nothing listens there.
    async with SessionsAPI("k", base_url=url, retry=RetryPolicy(max_attempts=1)) as api:
        with pytest.raises(APIConnectionError) as caught:
            await api.retrieve("s-1")
    assert f"cannot connect to {url}" in str(caught.value)
    assert "ssl:default" not in str(caught.value)


@pytest.mark.asyncio
@pytest.mark.browserbase_faults(FaultPlan(error_rate=1.0, error_status=502))
async def test_the_fixture_takes_a_fault_plan_from_a_marker(
    fake_browserbase: FakeBrowserbase, browserbase_api: SessionsAPI
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    assert fake_browserbase.faults.error_status == 502
    with pytest.raises(InternalServerError):
        await browserbase_api.retrieve(sid)


@pytest.mark.asyncio
async def test_a_fault_aimed_at_one_route_leaves_the_others_alone(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.status(500), route="list")
    async with make_api() as api:
        assert (await api.retrieve(sid)).id == sid
        assert (await api.release(sid)).status == "COMPLETED"
        assert [session.id for session in await api.list()] == [sid]  # retried past the 500
    assert fake_browserbase.received.answers[500] == 1
