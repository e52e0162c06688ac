"""The command line and the shell fake as an operator uses them (issue 23): a reader that goes
away, SIGTERM, resumable runs, server text on a terminal, odd id files, the fake's plan options.

Pipes, signals and terminals run the command in a real subprocess; the rest runs in process.
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from browserbase_async import ReleaseResult, RetryPolicy, SessionsAPI
from browserbase_async._flow import FlowStats
from browserbase_async._release import Releaser
from browserbase_async.cli import _app
from browserbase_async.cli._output import Stdout, Tally
from browserbase_async.testing import FakeBrowserbase, FaultPlan
from browserbase_async.testing.__main__ import Serving, main, parse_options

from .test_cli import one_line, run_cli, run_on_a_terminal, start_cli, start_piped

FAKE_FROM_A_SHELL = (sys.executable, "-m", "browserbase_async.testing")


async def _read_line(fd: int) -> bytes:
    """One line from a pipe's read end, byte by byte (in a thread: the fake serves here)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = await asyncio.to_thread(os.read, fd, 1)
        assert chunk, line
        line += chunk
    return line


# -- 1. a closed standard output stops nothing ------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("merged", [False, True], ids=["stdout", "2>&1"])
async def test_a_reader_that_goes_away_stops_no_release(
    fake_browserbase: FakeBrowserbase, tmp_path: Path, merged: bool
) -> None:
    ids = fake_browserbase.add_sessions(20)
    # With 2>&1 the summary has no reader either: exit 0 then tells that it did not crash.
    unknown = [] if merged else ["no-such-session"]
    failed = tmp_path / "failed.txt"
    fake_browserbase.hold()
    args = ("--json", "--concurrency", "1", "--failed-out", str(failed), *ids, *unknown)
    process, read_end = await start_piped(fake_browserbase, "release", *args, merged=merged)
    # One release goes through, the others wait: the reader leaves after one row,
    # with 20 still to be written, by construction.
    await fake_browserbase.wait_for_in_flight(1)
    fake_browserbase.let_go()
    fake_browserbase.hold()
    assert b'"ok": true' in await _read_line(read_end)
    os.close(read_end)  # `| head -1`
    fake_browserbase.let_go()
    _, err = await process.communicate()
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)
    assert failed.read_text() == "".join(f"{sid}\n" for sid in unknown)
    if merged:
        assert process.returncode == 0
        return
    text = err.decode()
    assert process.returncode == 1, text  # the releases' code: one id was not found
    summary = one_line(text)
    assert summary.startswith("released 20 of 21 sessions, 1 failed (1 not found)")


@pytest.mark.asyncio
async def test_json_rows_reach_stdout_while_the_bar_is_drawn(
    fake_browserbase: FakeBrowserbase,
) -> None:
    ids = fake_browserbase.add_sessions(30)
    code, drawn, out = await run_on_a_terminal(
        fake_browserbase, "release", "--json", *ids, terminal="stderr"
    )
    assert code == 0
    assert len(out.splitlines()) == 30
    assert b'"session_id"' not in drawn
    assert b"released 30 of 30 sessions" in drawn


@pytest.mark.asyncio
async def test_list_json_into_head_exits_0_quietly(fake_browserbase: FakeBrowserbase) -> None:
    # Far more than a pipe holds: the command is still writing when the reader leaves.
    fake_browserbase.add_sessions(1000, user_metadata={"pad": "x" * 200})
    process, read_end = await start_piped(fake_browserbase, "list", "--json")
    assert (await _read_line(read_end)).startswith(b'{"id": ')
    os.close(read_end)
    _, err = await process.communicate()
    assert process.returncode == 0
    assert err == b""


def test_a_closed_stdout_is_no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    out = Stdout()
    assert out.isatty() is False
    out.write("row\n")
    assert out.reader_gone


def test_no_stdout_at_all_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of `>&-`
    out = Stdout()
    assert out.write("row\n") == 4
    assert out.isatty() is False


class _FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_said_once_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    out = Stdout()
    out.write("row 1\n")
    out.write("row 2\n")
    assert out.reader_gone
    err = capsys.readouterr().err
    assert one_line(err) == (
        "browserbase-async: standard output failed (No space left on device):"
        " nothing more is written there; the run goes on"
    )


# -- 2. SIGTERM stops as Ctrl-C does; 3. --failed-out resumes ---------------------


@pytest.mark.asyncio
async def test_sigterm_says_the_summary_exits_143_and_the_run_resumes(
    fake_browserbase: FakeBrowserbase, tmp_path: Path
) -> None:
    fake_browserbase.faults = FaultPlan(latency=0.05)
    ids = fake_browserbase.add_sessions(500)
    failed = tmp_path / "failed.txt"
    process = await start_cli(
        fake_browserbase, "release", "--concurrency", "8", "--failed-out", str(failed), *ids
    )
    await fake_browserbase.wait_for_requests(40)
    fake_browserbase.hold()  # the rest wait: the signal comes mid-run, by construction
    process.send_signal(signal.SIGTERM)
    _, err = await process.communicate()
    fake_browserbase.let_go()
    assert process.returncode == 143, err
    summary = one_line(err.decode())
    assert "interrupted" in summary
    # Every id not released for sure is in the file: failed, never tried, or cut short.
    to_resume = failed.read_text().splitlines()
    unreleased = {sid for sid in ids if fake_browserbase.status(sid) != "COMPLETED"}
    assert unreleased <= set(to_resume)
    assert 0 < len(unreleased) < 500
    assert f"{len(to_resume)} not attempted or not confirmed" in summary
    fake_browserbase.faults = FaultPlan()
    resumed = await run_cli(fake_browserbase, "release", "--from-file", str(failed))
    assert resumed.code == 0, resumed.err
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


def quiet_run(
    api: SessionsAPI, ids: list[str], failed: Path, *, concurrency: int
) -> Coroutine[Any, Any, int]:
    """The CLI's release of *ids*, quiet, its ``--failed-out`` at *failed*."""
    return _app.release_ids(
        api,
        ids,
        concurrency=concurrency,
        json_rows=False,
        failed_out=str(failed),
        dry_run=False,
        quiet=True,
        wait=False,
    )


@pytest.mark.asyncio
async def test_an_interrupted_run_reports_every_release_the_client_finished(
    fake_browserbase: FakeBrowserbase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Results finished but not yet taken from release_iter's queue were dropped at Ctrl-C or
    # SIGTERM: released, yet said "not attempted or not confirmed" (some 40 of 2,000 at a
    # concurrency of 100).
    finished: list[str] = []
    release_result = Releaser.release_result

    async def counted(self: Releaser, session_id: str, **kwargs: Any) -> ReleaseResult:
        result = await release_result(self, session_id, **kwargs)
        finished.append(session_id)  # no await after: the worker takes it at once
        return result

    monkeypatch.setattr(Releaser, "release_result", counted)
    ids = fake_browserbase.add_sessions(3000)
    failed = tmp_path / "failed.txt"
    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        run = asyncio.create_task(quiet_run(api, ids, failed, concurrency=100))
        await fake_browserbase.wait_for_requests(1500)
        run.cancel()  # what Ctrl-C and SIGTERM do
        assert await run == 130
    summary = one_line(capsys.readouterr().err)
    assert summary.startswith(f"released {len(finished)} of 3000 sessions, 0 failed"), summary
    assert not set(finished) & set(failed.read_text().splitlines())


@pytest.mark.asyncio
async def test_a_run_killed_outright_leaves_every_id_to_resume(
    fake_browserbase: FakeBrowserbase, tmp_path: Path
) -> None:
    ids = fake_browserbase.add_sessions(10)
    failed = tmp_path / "failed.txt"
    fake_browserbase.hold()
    process = await start_cli(
        fake_browserbase, "release", "--concurrency", "2", "--failed-out", str(failed), *ids
    )
    await fake_browserbase.wait_for_in_flight(2)
    process.kill()  # SIGKILL: no summary, no last word
    await process.communicate()
    fake_browserbase.let_go()
    assert failed.read_text().splitlines() == ids
    resumed = await run_cli(fake_browserbase, "release", "--from-file", str(failed))
    assert resumed.code == 0, resumed.err
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_failed_out_on_a_full_disk_is_said_before_anything_is_released() -> None:
    offline = ["--api-key", "k", "--base-url", "http://127.0.0.1:9"]
    ran = CliRunner().invoke(_app.cli, ["release", *offline, "--failed-out", "/dev/full", "s-1"])
    assert ran.exit_code == 2
    # (seek and truncate on /dev/full fail too: EINVAL, before ENOSPC could.)
    assert one_line(ran.output).startswith("browserbase-async: error: cannot write '/dev/full': ")


@pytest.mark.asyncio
async def test_sigterm_ends_a_watch_after_its_sweep(fake_browserbase: FakeBrowserbase) -> None:
    ids = fake_browserbase.add_sessions(3)
    process = await start_cli(fake_browserbase, "release", "--all", "--watch", "1h", "--quiet")
    assert process.stderr is not None
    first = (await process.stderr.readline()).decode()
    assert "sweep 1: listed 3; released 3 of 3 sessions" in first
    process.send_signal(signal.SIGTERM)
    _, rest = await process.communicate()
    assert process.returncode == 143
    assert rest == b""
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


def test_sigterm_outside_a_release_is_exit_143(monkeypatch: pytest.MonkeyPatch) -> None:
    async def terminated_while_listing(**_: object) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.Event().wait()  # the listing, never answered
        raise AssertionError("not cancelled")

    monkeypatch.setattr(_app, "_client", lambda *_: _Listing(terminated_while_listing))
    ran = CliRunner().invoke(_app.cli, ["list", "--api-key", "k"])
    assert ran.exit_code == 143
    assert ran.output == ""


class _Listing:
    """A client whose listing runs *listing* instead."""

    def __init__(self, listing: object) -> None:
        self.list = listing

    async def __aenter__(self) -> _Listing:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


# Ctrl-C once the releases began, and again as the run stops (a user who presses it twice):
# each sent by the command to itself, at its moment, through the real signal machinery.
_TWO_CTRL_CS = """
import asyncio, signal
from browserbase_async import SessionsAPI
from browserbase_async.cli import _app

real_release_many = SessionsAPI.release_many


async def release_many(self, *args, **kwargs):
    asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
    try:
        return await real_release_many(self, *args, **kwargs)
    except asyncio.CancelledError:
        signal.raise_signal(signal.SIGINT)
        raise


SessionsAPI.release_many = release_many
_app.cli()
"""


@pytest.mark.asyncio
async def test_a_second_ctrl_c_as_the_run_stops_still_says_the_summary(
    fake_browserbase: FakeBrowserbase, tmp_path: Path
) -> None:
    # asyncio.run's own handler raised KeyboardInterrupt wherever the second one found the
    # code: here the summary was never said; inside a loop callback, a lost wake-up left
    # the loop's close waiting for ever.
    ids = fake_browserbase.add_sessions(3)
    failed = tmp_path / "failed.txt"
    fake_browserbase.hold()
    program = (sys.executable, "-c", _TWO_CTRL_CS)
    args = ("release", "--quiet", "--failed-out", str(failed), *ids)
    ran = await run_cli(fake_browserbase, *args, program=program)
    fake_browserbase.let_go()
    assert ran.code == 130, ran.err
    summary = one_line(ran.err)
    assert summary.startswith("released 0 of 3 sessions, 0 failed")
    assert summary.endswith("; interrupted, 3 not attempted or not confirmed")
    assert sorted(failed.read_text().splitlines()) == sorted(ids)


# -- 4. server text on a terminal is text, without control characters -------------


@pytest.mark.asyncio
@pytest.mark.off_spec  # a region no server would send: what a terminal must survive
async def test_the_terminal_table_prints_markup_as_text(
    fake_browserbase: FakeBrowserbase,
) -> None:
    fake_browserbase.add_session(
        "s-markup",
        user_metadata={"note": "[/]", "tag": "[red]urgent"},
        region="eu\x1b[2J\u202e",  # clear the screen, then read right to left
    )
    code, drawn, err = await run_on_a_terminal(fake_browserbase, "list", terminal="stdout")
    assert code == 0, err
    assert b"s-markup" in drawn
    assert b'"[/]"' in drawn
    assert b"[red]urgent" in drawn
    assert b"\x1b[2J" not in drawn
    assert "\u202e".encode() not in drawn
    assert b"eu\\x1b[2J\\u202e" in drawn


# -- 5. files of ids with a byte order mark, CRLF ---------------------------------


@pytest.mark.parametrize("from_stdin", [False, True])
def test_a_bom_and_crlf_are_not_part_of_an_id(from_stdin: bool, tmp_path: Path) -> None:
    with FakeBrowserbase.in_thread() as fake:
        ids = fake.add_sessions(2)
        data = ("\ufeff" + "\r\n".join(ids) + "\r\n").encode()
        source = tmp_path / "ids.txt"
        source.write_bytes(data)
        args = ["release", "--api-key", fake.api_key, "--base-url", fake.base_url, "--from-file"]
        args.append("-" if from_stdin else str(source))
        ran = CliRunner().invoke(_app.cli, args, input=data if from_stdin else None)
        assert ran.exit_code == 0, ran.output
        assert [fake.status(sid) for sid in ids] == ["COMPLETED", "COMPLETED"]


def test_a_closed_stdin_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of `<&-`
    with pytest.raises(_app.ConfigError, match="standard input: it is closed"):
        _app._read_ids("-")


# -- 6. a bad AGE is one line ------------------------------------------------------


@pytest.mark.parametrize("option", ["--older-than", "--watch"])
def test_a_bad_age_is_one_line(option: str) -> None:
    args = ["release", "--api-key", "k", "--base-url", "http://127.0.0.1:9", "--all"]
    ran = CliRunner().invoke(_app.cli, [*args, option, "30x"])
    assert ran.exit_code == 2
    assert one_line(ran.output) == (
        f"browserbase-async: error: {option}: '30x' is not a duration: a number with a unit"
        " s, m, h or d (90s, 30m, 1.5h, 2d); a bare number is seconds"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "--nope"], "No such option '--nope'; see 'browserbase-async release --help'"),
        (["--nope"], "No such option '--nope'; see 'browserbase-async --help'"),
        (["nope"], "No such command 'nope'; see 'browserbase-async --help'"),
        (["release", "--all", "--status", "bogus"], "Invalid value for '--status'"),
    ],
)
def test_every_usage_error_is_one_line(args: list[str], message: str) -> None:
    ran = CliRunner().invoke(_app.cli, args, prog_name="browserbase-async")
    assert ran.exit_code == 2
    assert one_line(ran.output).startswith(f"browserbase-async: error: {message}")


def test_no_command_still_shows_the_help() -> None:
    ran = CliRunner().invoke(_app.cli, [])
    assert ran.exit_code == 2
    assert "Commands:" in ran.output


# -- 7. 429s are not called retries -------------------------------------------------


def test_the_summary_names_429s_apart_from_retries() -> None:
    tally = Tally(3, quiet=True, json_rows=False)
    tally.retried = 7  # requests of the releases sent again: 5 after a 429, 2 after an error
    stats = FlowStats(
        window=12, in_flight=0, requests=10, rate_limited=5, pauses=0, paused_seconds=0.0
    )
    line = tally.summary(stats=stats)
    assert "; 10 requests, 2 retried after an error, 5 answered 429, window now 12" in line
    assert "retries" not in line


@pytest.mark.asyncio
async def test_a_run_refused_with_429s_says_no_retries(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.faults = FaultPlan(max_in_flight=1)
    ids = fake_browserbase.add_sessions(4)
    fake_browserbase.hold()  # the first is held, and the three beside it are refused
    process = await start_cli(fake_browserbase, "release", "--concurrency", "4", *ids)
    # A refusal is answered as its request arrives, before the fake yields: once four
    # have arrived, three were refused.
    await fake_browserbase.wait_for_requests(4)
    fake_browserbase.let_go()
    _, err = await process.communicate()
    assert process.returncode == 0, err
    summary = one_line(err.decode())
    refused = fake_browserbase.received.answers[429]
    assert refused >= 3
    assert f"; {4 + refused} requests, {refused} answered 429, window now" in summary
    assert "retr" not in summary


@pytest.mark.asyncio
async def test_three_processes_under_a_plans_in_flight_limit(
    fake_browserbase: FakeBrowserbase, tmp_path: Path
) -> None:
    # docs/cli.md's rehearsal, smaller: three processes, one limit none of them is told.
    fake_browserbase.faults = FaultPlan(max_in_flight=5, latency=0.01)
    ids = fake_browserbase.add_sessions(150)
    parts = [ids[0::3], ids[1::3], ids[2::3]]
    for number, part in enumerate(parts):
        (tmp_path / f"part-{number}").write_text("\n".join(part) + "\n")
    processes = [
        await start_cli(
            fake_browserbase,
            "release",
            "--from-file",
            str(tmp_path / f"part-{number}"),
            "--failed-out",
            str(tmp_path / f"part-{number}.failed"),
        )
        for number in range(3)
    ]
    for process in processes:
        _, err = await process.communicate()
        assert process.returncode == 0, err
        assert one_line(err.decode()).startswith("released 50 of 50 sessions, 0 failed")
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)
    assert all((tmp_path / f"part-{n}.failed").read_text() == "" for n in range(3))
    assert fake_browserbase.received.answers[200] == 150


# -- 8. the fake from a shell: a plan's limits, latency, old sessions, SIGTERM -----


def test_the_fakes_options_make_its_plan() -> None:
    serving = parse_options(
        [
            "--max-in-flight",
            "25",
            "--per-second",
            "200",
            "--latency",
            "0.05",
            "--latency-jitter",
            "0.2",
            "--aged",
            "3:2h",
            "--aged",
            "2:40m",
            "--faults",
        ]
    )
    assert serving.plan.max_in_flight == 25
    assert serving.plan.max_per_second == 200
    assert serving.plan.latency == 0.05
    assert serving.plan.latency_jitter == 0.2
    assert serving.plan.error_rate > 0  # --faults kept
    assert serving.aged == ((3, 7200.0), (2, 2400.0))
    assert serving.describe() == (
        "serving 10 running sessions, 3 started 7200 s ago, 2 started 2400 s ago,"
        " 429 past 25 in flight and 200 per second, random 5xx, 429s and lost answers,"
        " 0.05 s a request +- 20%; Ctrl-C to stop"
    )
    assert Serving(FaultPlan(), 0, 1, ()).describe() == "serving 1 running sessions; Ctrl-C to stop"


@pytest.mark.parametrize(
    "args",
    [
        ["--aged", "3"],
        ["--aged", "x:2h"],
        ["--aged", "-1:2h"],
        ["--aged", "3:2y"],
        ["--max-in-flight", "0"],
        ["--per-second", "0"],
        ["--per-second", "inf"],
        ["--latency", "soon"],
        ["--latency-jitter", "1.5"],
        ["--latency-jitter", "-0.1"],
        ["--latency-jitter", "nan"],
        ["--latency-jitter", "some"],
    ],
)
def test_the_fakes_bad_plan_options_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "python -m browserbase_async.testing: error: argument" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_the_shell_fake_serves_old_sessions_and_stops_on_sigterm() -> None:
    process = await start_cli(
        None, "--sessions", "2", "--aged", "3:2h", "--latency", "0", program=FAKE_FROM_A_SHELL
    )
    assert process.stdout is not None
    assert process.stderr is not None
    url = (await process.stdout.readline()).decode().strip().partition("=")[2]
    await process.stdout.readline()
    await process.stderr.readline()  # "serving ...": it listens
    async with SessionsAPI("bb_fake_key", base_url=url, retry=RetryPolicy(max_attempts=10)) as api:
        sessions = await api.list(status="running")
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert sorted(session.started_at < hour_ago for session in sessions) == [
        False,
        False,
        True,
        True,
        True,
    ]
    process.send_signal(signal.SIGTERM)
    _, err = await process.communicate()
    assert process.returncode == 0
    assert err.decode() == "stopped\n"


# -- 9. a client that goes away is no traceback in the fake ------------------------


@pytest.mark.asyncio
async def test_a_client_that_leaves_mid_request_is_no_traceback(
    fake_browserbase: FakeBrowserbase,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session_id = fake_browserbase.add_session()
    served = asyncio.Event()
    serve = fake_browserbase._serve

    async def watched(*args: object) -> object:
        try:
            return await serve(*args)  # type: ignore[arg-type]
        finally:
            served.set()

    monkeypatch.setattr(fake_browserbase, "_serve", watched)
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    host, port = fake_browserbase.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    # Half a body, then gone: the fake's read of it fails with ConnectionResetError.
    writer.write(
        f"POST /v1/sessions/{session_id} HTTP/1.1\r\nHost: x\r\n"
        f"X-BB-API-Key: {fake_browserbase.api_key}\r\nContent-Type: application/json\r\n"
        'Content-Length: 100\r\n\r\n{"status"'.encode()
    )
    await writer.drain()
    await fake_browserbase.wait_for_requests(1)
    writer.transport.abort()
    await served.wait()
    # aiohttp logs a handler's exception as soon as it comes out, before its next await.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert fake_browserbase.status(session_id) == "RUNNING"
    assert await reader.read() == b""


@pytest.mark.asyncio
@pytest.mark.parametrize("at", [1, 3])
async def test_a_second_ctrl_c_while_failed_out_is_rewritten_leaves_every_id_to_resume(
    fake_browserbase: FakeBrowserbase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    at: int,
) -> None:
    # Under asyncio.run, a second Ctrl-C raises KeyboardInterrupt wherever the code is: here,
    # at one id of the last rewrite of --failed-out (the first Ctrl-C cut the run short). A
    # stand-in is raised: a real KeyboardInterrupt would leave the test's loop too.
    class SecondCtrlC(BaseException):
        pass

    ids = fake_browserbase.add_sessions(6)
    failed = tmp_path / "failed.txt"
    written: list[str] = []
    id_field = _app.id_field

    def interrupted(session_id: str) -> str:
        written.append(session_id)
        if len(written) == len(ids) + at:  # the first rewrite wrote every id
            raise SecondCtrlC
        return id_field(session_id)

    monkeypatch.setattr(_app, "id_field", interrupted)
    fake_browserbase.hold()
    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        run = asyncio.create_task(quiet_run(api, ids, failed, concurrency=2))
        await fake_browserbase.wait_for_in_flight(2)
        run.cancel()  # the first Ctrl-C
        with pytest.raises(SecondCtrlC):
            await run
        fake_browserbase.let_go()
    running = [sid for sid in ids if fake_browserbase.status(sid) == "RUNNING"]
    assert set(running) <= set(failed.read_text().splitlines())
