"""What the command line writes for other programs: ids one a line that ``--from-file`` reads
back as they were, rows that a reader who stops reading cannot hold up, and ``--from-file -``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import select
import signal
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from browserbase_async.cli import _app
from browserbase_async.cli._writer import BACKGROUND, Background, Writer
from browserbase_async.testing import FakeBrowserbase

from .test_cli import CLI, cli_environ, one_line, run_cli, start_piped

HANG: float = 60
"""A bound against a hang, not a timing target: a test that passes takes a small part of it."""
MANY: int = 1500
"""Sessions whose --json rows (some 120 bytes each) fill a pipe (64 kB) some three times over."""

# Ids a server could send that would not survive a line of their own: each would become two
# lines, a shorter id, a comment or a blank line in a file fed back to --from-file.
ODD_IDS = ("s-nl\ninjected", "s-tab\there", " s-space", "#s-hash", "s-ls\u2028x", "s-cr\r", "")


def _read_back(text: str, tmp_path: Path) -> list[str]:
    """The ids that ``release --from-file`` reads from *text*."""
    source = tmp_path / "ids.txt"
    source.write_text(text, encoding="utf-8", newline="")
    return _app._read_ids(str(source))


@pytest.mark.off_spec  # ids no server should send: what a file of ids must survive
@pytest.mark.parametrize(
    "command",
    [("list",), ("release", "--all", "--dry-run"), ("release", "--dry-run", "s-plain", *ODD_IDS)],
    ids=["list", "--all --dry-run", "--dry-run IDS"],
)
def test_an_id_that_would_not_read_back_is_never_printed_raw(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    listed = command[-1] != ODD_IDS[-1]
    odd = [session_id for session_id in ODD_IDS if session_id or not listed]  # no empty id listed
    with FakeBrowserbase.in_thread() as fake:
        fake.add_session("s-plain")
        for session_id in odd if listed else ():
            fake.add_session(session_id, region="us\twest")
        connection = ["--api-key", fake.api_key, "--base-url", fake.base_url]
        ran = CliRunner().invoke(_app.cli, [*command, *connection])
    assert ran.exit_code == 0, ran.output
    lines = ran.stdout.splitlines()
    if command[0] == "list":
        assert all(len(line.split("\t")) == 5 for line in lines), lines  # one row a session
        lines = [line.split("\t")[0] for line in lines]
    # One line a session: the plain id as it is, the others as JSON strings.
    assert sorted(lines) == sorted(["s-plain", *map(json.dumps, odd)])
    # Fed back, no line becomes another id: each odd one is one invalid id, never released.
    read_back = _read_back("".join(f"{line}\n" for line in lines), tmp_path)
    assert sorted(read_back) == sorted(lines)
    warning = ran.stderr.splitlines()[0]
    assert warning.startswith(f"browserbase-async: {len(odd)} session ids printed as JSON strings")
    assert "--from-file would not read each back as one id" in warning


def test_the_failed_out_file_holds_each_failed_id_on_one_line(tmp_path: Path) -> None:
    # `release $'a\nb'`: an invalid id; written raw, the file would release "a" and "b".
    failed = tmp_path / "failed.txt"
    offline = ["--api-key", "k", "--base-url", "http://127.0.0.1:9", "--quiet"]
    args = ["release", *offline, "--failed-out", str(failed), "s-a\ns-b", "#s-c"]
    ran = CliRunner().invoke(_app.cli, args)
    assert ran.exit_code == 1, ran.output
    assert failed.read_text().splitlines() == [json.dumps("s-a\ns-b"), json.dumps("#s-c")]
    assert _read_back(failed.read_text(), tmp_path) == [json.dumps("s-a\ns-b"), '"#s-c"']


def test_from_file_reads_every_id_before_it_releases_one(tmp_path: Path) -> None:
    # docs/cli.md: the ids are read to the end first (cli.md's total, its progress bar and
    # --failed-out need them all), so one file can be read, and then rewritten, by one run.
    ids = tmp_path / "ids.txt"
    with FakeBrowserbase.in_thread() as fake:
        ids.write_text("".join(f"{sid}\n" for sid in [*fake.add_sessions(3), "s-gone"]))
        connection = ["--api-key", fake.api_key, "--base-url", fake.base_url]
        args = ["release", *connection, "--from-file", str(ids), "--failed-out", str(ids)]
        ran = CliRunner().invoke(_app.cli, args)
    assert ran.exit_code == 1, ran.output
    assert ran.stderr.startswith("released 3 of 4 sessions, 1 failed (1 not found)")
    assert ids.read_text() == "s-gone\n"


# -- a reader that stops reading (`--json | less`) holds up nothing ----------------


@contextlib.asynccontextmanager
async def stalled_reader(
    fake: FakeBrowserbase, tmp_path: Path, *args: str, merged: bool = False
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``release --json --from-file IDS *args`` whose standard output (and with *merged*, its
    standard error: ``2>&1 | less``) is a pipe that nobody reads until the test says so.

    Yields:
        The process, and the pipe's read end (closed on the way out).
    """
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{sid}\n" for sid in fake.sessions))
    command = ("release", "--json", "--quiet", "--from-file", str(source), *args)
    process, read_end = await start_piped(fake, *command, merged=merged)
    try:
        yield process, read_end
    finally:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _read_to_the_end(fd: int) -> bytes:
    """What is in the pipe, up to its end (in a thread: the fake serves here)."""
    chunks = []
    while chunk := await asyncio.to_thread(os.read, fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _true_rows(data: bytes, fake: FakeBrowserbase) -> list[dict[str, object]]:
    """The JSON rows in *data*, each whole, each saying what happened on the server."""
    assert not data or data.endswith(b"\n"), data[-200:]
    rows = [json.loads(line) for line in data.splitlines()]
    for row in rows:
        assert row["ok"] is True, row
        assert fake.status(str(row["session_id"])) == "COMPLETED"
    assert len({row["session_id"] for row in rows}) == len(rows)
    return rows


@pytest.mark.asyncio
@pytest.mark.parametrize("merged", [False, True], ids=["stdout", "2>&1"])
async def test_a_reader_that_stops_reading_holds_up_no_release(
    fake_browserbase: FakeBrowserbase, tmp_path: Path, merged: bool
) -> None:
    # `release --json | less`: the rows' writes blocked the event loop once the pipe was full
    # (some 550 of 3,000 released), until the reader read again.
    ids = fake_browserbase.add_sessions(MANY)
    async with stalled_reader(fake_browserbase, tmp_path, merged=merged) as (process, read_end):
        async with asyncio.timeout(HANG):
            await fake_browserbase.wait_until(lambda: fake_browserbase.received.total >= MANY)
            await fake_browserbase.wait_until(
                lambda: all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)
            )
            # The reader reads again: every row, whole, in the order made, then the summary.
            data = await _read_to_the_end(read_end)
            _, err = await process.communicate()
    assert process.returncode == 0, err
    summary = data.splitlines()[-1].decode() if merged else one_line(err.decode())
    assert summary.startswith(f"released {MANY} of {MANY} sessions, 0 failed")
    rows = _true_rows(
        data.removesuffix(summary.encode() + b"\n") if merged else data, fake_browserbase
    )
    assert len(rows) == MANY


@pytest.mark.asyncio
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_acts_at_once_whatever_the_reader_does(
    fake_browserbase: FakeBrowserbase, tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    ids = fake_browserbase.add_sessions(MANY)
    failed = tmp_path / "failed.txt"
    args = ("--failed-out", str(failed), "--concurrency", "8")
    async with stalled_reader(fake_browserbase, tmp_path, *args) as (process, read_end):
        async with asyncio.timeout(HANG):
            # Far past what the pipe holds, then the rest wait: the signal comes mid-run.
            await fake_browserbase.wait_for_requests(MANY // 2)
            fake_browserbase.hold()
            process.send_signal(stop)
            _, err = await process.communicate()
            fake_browserbase.let_go()
            data = await _read_to_the_end(read_end)
    assert process.returncode == code, err
    summary = one_line(err.decode())
    assert "; interrupted, " in summary
    # What the reader got is whole rows, each true; --failed-out resumes everything else.
    rows = _true_rows(data, fake_browserbase)
    unreleased = {sid for sid in ids if fake_browserbase.status(sid) != "COMPLETED"}
    assert unreleased <= set(failed.read_text().splitlines())
    assert not unreleased & {row["session_id"] for row in rows}


@pytest.mark.asyncio
async def test_sigterm_acts_while_the_last_rows_wait_for_the_reader(
    fake_browserbase: FakeBrowserbase, tmp_path: Path
) -> None:
    # Every release done, the rows still waiting for a reader who does not read: SIGTERM
    # ends the wait (143), and what was read is whole rows.
    ids = fake_browserbase.add_sessions(MANY)
    async with stalled_reader(fake_browserbase, tmp_path) as (process, read_end):
        assert process.stderr is not None
        async with asyncio.timeout(HANG):
            summary = (await process.stderr.readline()).decode()
            assert summary.startswith(f"released {MANY} of {MANY} sessions, 0 failed")
            process.send_signal(signal.SIGTERM)
            _, err = await process.communicate()
            data = await _read_to_the_end(read_end)
    assert process.returncode == 143, err
    assert err == b""
    assert 0 < len(_true_rows(data, fake_browserbase)) < MANY
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


def _full_pipe() -> tuple[int, int]:
    """A pipe already full: a reader who has not read yet. Returns its read and write ends."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"\n" * select.PIPE_BUF)
    os.set_blocking(write_end, True)
    return read_end, write_end


@pytest.mark.asyncio
@pytest.mark.off_spec  # a session with no startedAt: the reaper warns of it
async def test_a_warning_of_the_library_holds_up_no_release(
    fake_browserbase: FakeBrowserbase,
) -> None:
    # The library's records went to standard error from the event loop itself: with a reader
    # who did not read, the warning's write held up every release, and the signals.
    old = fake_browserbase.add_sessions(3, started_at=datetime.now(UTC) - timedelta(hours=2))
    unknown = fake_browserbase.add_session()
    del fake_browserbase.sessions[unknown]["startedAt"]
    read_end, write_end = _full_pipe()
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *("release", "--all", "--older-than", "1h"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=write_end,
        env=cli_environ(fake_browserbase),
    )
    os.close(write_end)
    try:
        async with asyncio.timeout(HANG):
            await fake_browserbase.wait_until(
                lambda: all(fake_browserbase.status(sid) == "COMPLETED" for sid in old)
            )
            err = (await _read_to_the_end(read_end)).lstrip(b"\n").decode()
            assert await process.wait() == 0, err
    finally:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    warning, summary = err.splitlines()
    assert warning.startswith("skipped 1 session(s) whose age cannot be told")
    assert summary.startswith("released 3 of 3 sessions, 0 failed")
    assert fake_browserbase.status(unknown) == "RUNNING"


# SIGTERM sent to itself at one moment of the command's end, the command a dry run.
_SIGTERM_AT = """
import asyncio, os, signal, sys
from browserbase_async.cli import _app

moment = sys.argv.pop()
real_run, real_delivered = asyncio.run, _app._delivered


def terminate(at):
    if moment == at:
        os.kill(os.getpid(), signal.SIGTERM)


def run(main):
    async def command():
        code = await main
        terminate("after the command's last await")
        return code

    terminate("before its loop started")
    code = real_run(command())
    terminate("after its loop closed")
    return code


def delivered(*args):
    terminate("before the wait for its readers")
    return real_delivered(*args)


asyncio.run, _app._delivered = run, delivered
_app.cli()
"""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "moment",
    ["after the command's last await", "after its loop closed", "before the wait for its readers"],
)
async def test_sigterm_as_the_command_ends_is_143(moment: str) -> None:
    # Once lost in the event loop's handler, which the command's end removed (the wait for a
    # reader who does not read then lasted for ever), or taken by the default handler
    # between the loop's and the wait's (no exit code, the summary's promise unkept).
    program = (sys.executable, "-c", _SIGTERM_AT)
    args = ("release", "--api-key", "k", "--dry-run", "s-1", moment)
    ran = await run_cli(None, *args, program=program)
    assert ran.code == 143, ran.err
    assert ran.out == "s-1\n"
    assert ran.err == "dry run: would release 1 session\n"


@pytest.mark.asyncio
async def test_sigterm_before_the_command_began_does_nothing_and_is_143() -> None:
    # Taken, but with no task yet to cancel: the command ran to its end (every session
    # released), and only then exited 143.
    program = (sys.executable, "-c", _SIGTERM_AT)
    args = ("release", "--api-key", "k", "--dry-run", "s-1", "before its loop started")
    ran = await run_cli(None, *args, program=program)
    assert ran.code == 143, ran.err
    assert ran.out == ""
    assert ran.err == ""


def test_output_without_a_descriptor_or_poll_is_written_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert BACKGROUND.writer(sys.__stderr__) is None  # no command running
    with BACKGROUND.on():
        assert BACKGROUND.writer(io.StringIO()) is None  # no descriptor: click's runner
        monkeypatch.delattr(select, "poll")  # not POSIX
        assert BACKGROUND.writer(sys.__stderr__) is None


def test_an_abandoned_writer_takes_nothing_more() -> None:
    read_end, write_end = os.pipe()
    failures: list[OSError] = []
    writer = Writer()
    writer.put(write_end, b"row\n", failures.append)
    writer.wait()
    writer.abandon()
    writer.abandon()
    writer.put(write_end, b"late\n", failures.append)
    os.close(write_end)
    assert os.read(read_end, 100) == b"row\n"
    os.close(read_end)
    assert failures == []


def test_sigterm_ends_the_wait_for_a_reader_who_does_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def a_reader_who_does_not_read(_: Background) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait()  # for ever, but for the signal

    monkeypatch.setattr(Background, "drain", a_reader_who_does_not_read)
    assert _app._delivered(_app.EXIT_OK) == _app.EXIT_TERMINATED
    assert _app._delivered(_app.EXIT_INTERRUPTED) == _app.EXIT_INTERRUPTED  # no wait at all
