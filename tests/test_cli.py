"""The command line end to end: a real subprocess against the loopback fake."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import sys
from pathlib import Path
from typing import Literal

import attrs
import pytest

from browserbase_async.testing import FakeBrowserbase, FaultPlan

pytestmark = pytest.mark.asyncio


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str


CLI = (sys.executable, "-m", "browserbase_async")


def cli_environ(fake: FakeBrowserbase | None, **extra: str) -> dict[str, str]:
    """This process's environment, minus any ambient Browserbase settings, plus the fake's."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BROWSERBASE_")}
    if fake is not None:
        environ |= {"BROWSERBASE_API_KEY": fake.api_key, "BROWSERBASE_BASE_URL": fake.base_url}
    return environ | extra


async def run_cli(
    fake: FakeBrowserbase | None,
    *args: str,
    stdin: str = "",
    env: dict[str, str] | None = None,
    program: tuple[str, ...] = CLI,
) -> Ran:
    environ = cli_environ(fake, **(env or {}))
    process = await asyncio.create_subprocess_exec(
        *program,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    out, err = await process.communicate(stdin.encode())
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def start_cli(
    fake: FakeBrowserbase | None, *args: str, program: tuple[str, ...] = CLI
) -> asyncio.subprocess.Process:
    """Start the command, its output piped, for a test that acts while it runs."""
    return await asyncio.create_subprocess_exec(
        *program,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_environ(fake),
    )


async def start_piped(
    fake: FakeBrowserbase, *args: str, merged: bool = False
) -> tuple[asyncio.subprocess.Process, int]:
    """Start the command with its standard output (and with *merged*, its standard error:
    ``2>&1``) on a pipe that the test reads when it chooses.

    Returns:
        The process, and the pipe's read end, for the test to close.
    """
    read_end, write_end = os.pipe()
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=write_end,
        stderr=write_end if merged else asyncio.subprocess.PIPE,
        env=cli_environ(fake),
    )
    os.close(write_end)
    return process, read_end


async def run_on_a_terminal(
    fake: FakeBrowserbase,
    *args: str,
    terminal: Literal["stdout", "stderr"],
    term: str = "xterm",
) -> tuple[int, bytes, bytes]:
    """Run the command with one stream on a pseudo-terminal (100 columns), the other piped.

    Returns:
        The exit code, what the terminal was sent, and what the pipe was.
    """
    main, child_end = pty.openpty()
    piped = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=child_end if terminal == "stdout" else piped,
        stderr=child_end if terminal == "stderr" else piped,
        env=cli_environ(fake, TERM=term, COLUMNS="100"),
    )
    os.close(child_end)
    out, err = await process.communicate()
    drawn = b""
    with contextlib.suppress(OSError):  # EIO once the child's end is closed
        while chunk := os.read(main, 65536):
            drawn += chunk
    os.close(main)
    assert process.returncode is not None
    return process.returncode, drawn, err if terminal == "stdout" else out


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


async def test_release_by_ids(fake_browserbase: FakeBrowserbase) -> None:
    ids = fake_browserbase.add_sessions(3)
    ran = await run_cli(fake_browserbase, "release", *ids)
    assert ran.code == 0, ran.err
    assert ran.out == ""
    assert one_line(ran.err).startswith("released 3 of 3 sessions, 0 failed in ")
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


async def test_json_rows(fake_browserbase: FakeBrowserbase) -> None:
    ids = fake_browserbase.add_sessions(2)
    ran = await run_cli(fake_browserbase, "release", "--json", *ids, "no-such")
    assert ran.code == 1
    rows = {row["session_id"]: row for row in map(json.loads, ran.out.splitlines())}
    assert rows[ids[0]] == {
        "session_id": ids[0],
        "ok": True,
        "status": "COMPLETED",
        "error": None,
        "attempts": 1,
    }
    assert rows["no-such"]["ok"] is False
    assert rows["no-such"]["status"] is None
    assert "Session not found" in rows["no-such"]["error"]
    assert "(1 not found)" in one_line(ran.err)


async def test_from_file_and_failed_out(fake_browserbase: FakeBrowserbase, tmp_path: Path) -> None:
    ids = fake_browserbase.add_sessions(2)
    source = tmp_path / "ids.txt"
    source.write_text(f"# to close\n{ids[0]}\n\n  {ids[1]}  \nmissing-1\nbad/id\n")
    failed = tmp_path / "failed.txt"
    ran = await run_cli(
        fake_browserbase, "release", "--from-file", str(source), "--failed-out", str(failed)
    )
    assert ran.code == 1
    assert sorted(failed.read_text().splitlines()) == ["bad/id", "missing-1"]
    summary = one_line(ran.err)
    assert summary.startswith("released 2 of 4 sessions, 2 failed (")
    assert "1 not found" in summary
    assert "1 invalid id" in summary
    # The file is ready to be fed back.
    again = await run_cli(fake_browserbase, "release", "--from-file", str(failed))
    assert again.code == 1


async def test_ids_from_standard_input(fake_browserbase: FakeBrowserbase) -> None:
    ids = fake_browserbase.add_sessions(3)
    ran = await run_cli(fake_browserbase, "release", "--from-file", "-", stdin="\n".join(ids))
    assert ran.code == 0, ran.err
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)


async def test_release_all_with_filters(fake_browserbase: FakeBrowserbase) -> None:
    mine = fake_browserbase.add_sessions(3, user_metadata={"job": "a"})
    other = fake_browserbase.add_sessions(2, user_metadata={"job": "b"})
    ran = await run_cli(
        fake_browserbase,
        "release",
        "--all",
        "--status",
        "running",
        "--query",
        "user_metadata['job']:'a'",
    )
    assert ran.code == 0, ran.err
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in mine)
    assert all(fake_browserbase.status(sid) == "RUNNING" for sid in other)


@pytest.mark.off_spec
async def test_release_all_releases_a_listed_id_that_needs_encoding(
    fake_browserbase: FakeBrowserbase,
) -> None:
    # The sweep's ids are the server's: it exited 1 ("1 invalid id"), the session running.
    odd = fake_browserbase.add_session("s with space/1")
    ran = await run_cli(fake_browserbase, "release", "--all")
    assert ran.code == 0, ran.err
    assert fake_browserbase.status(odd) == "COMPLETED"
    typed = await run_cli(fake_browserbase, "release", odd)  # a caller's id: refused
    assert typed.code != 0
    assert fake_browserbase.received.updates == {odd: 1}


async def test_dry_run_sends_no_update(fake_browserbase: FakeBrowserbase) -> None:
    ids = fake_browserbase.add_sessions(3)
    ran = await run_cli(fake_browserbase, "release", "--all", "--dry-run")
    assert ran.code == 0
    assert sorted(ran.out.splitlines()) == sorted(ids)
    assert fake_browserbase.received.requests == {"list": 1}


async def test_wait(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.faults = FaultPlan(release_delay=0.05)
    ids = fake_browserbase.add_sessions(2)
    ran = await run_cli(fake_browserbase, "release", "--wait", "--json", *ids)
    assert ran.code == 0, ran.err
    assert {json.loads(row)["status"] for row in ran.out.splitlines()} == {"COMPLETED"}
    assert fake_browserbase.received.requests["retrieve"] >= 2


async def test_a_missing_key_is_one_line_and_exit_2() -> None:
    ran = await run_cli(None, "release", "s-1")
    assert ran.code == 2
    assert "BROWSERBASE_API_KEY" in one_line(ran.err)
    assert "Traceback" not in ran.err


async def test_an_unreadable_file(fake_browserbase: FakeBrowserbase, tmp_path: Path) -> None:
    ran = await run_cli(fake_browserbase, "release", "--from-file", str(tmp_path / "nope"))
    assert ran.code == 2
    assert "No such file" in one_line(ran.err)
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    ran = await run_cli(fake_browserbase, "release", "--from-file", str(tmp_path / "binary"))
    assert ran.code == 2
    assert "cannot read ids" in one_line(ran.err)


async def test_an_unwritable_failed_out_is_said_before_anything_is_released(
    fake_browserbase: FakeBrowserbase, tmp_path: Path
) -> None:
    ids = fake_browserbase.add_sessions(1)
    bad = tmp_path / "no-dir" / "failed.txt"
    ran = await run_cli(fake_browserbase, "release", "--failed-out", str(bad), *ids)
    assert ran.code == 2
    assert "cannot write" in one_line(ran.err)
    assert fake_browserbase.received.total == 0


async def test_a_failed_out_that_no_one_reads_is_said_at_once(
    fake_browserbase: FakeBrowserbase, tmp_path: Path
) -> None:
    # A FIFO with no reader: its open waited for one for ever, deaf to Ctrl-C and SIGTERM.
    ids = fake_browserbase.add_sessions(1)
    fifo = tmp_path / "failed"
    os.mkfifo(fifo)
    async with asyncio.timeout(30):  # a bound against a hang, not a timing target
        ran = await run_cli(fake_browserbase, "release", "--failed-out", str(fifo), *ids)
    assert ran.code == 2
    assert "cannot write" in one_line(ran.err)
    assert fake_browserbase.received.total == 0


@pytest.mark.parametrize(
    "args",
    [
        ("release",),
        ("release", "--all", "s-1"),
        ("release", "--status", "RUNNING", "s-1"),
        ("release", "--concurrency", "0", "s-1"),
        ("release", "--bogus"),
    ],
)
async def test_usage_errors_exit_2(
    fake_browserbase: FakeBrowserbase, args: tuple[str, ...]
) -> None:
    ran = await run_cli(fake_browserbase, *args)
    assert ran.code == 2
    assert "Traceback" not in ran.err
    assert fake_browserbase.received.total == 0


async def test_an_api_failure_of_the_listing(fake_browserbase: FakeBrowserbase) -> None:
    ran = await run_cli(fake_browserbase, "list", env={"BROWSERBASE_API_KEY": "wrong"})
    assert ran.code == 1
    assert "401" in one_line(ran.err)
    assert "wrong" not in ran.err


async def test_no_progress_bytes_on_a_pipe(fake_browserbase: FakeBrowserbase) -> None:
    ids = fake_browserbase.add_sessions(50)
    ran = await run_cli(fake_browserbase, "release", *ids)
    assert ran.code == 0, ran.err
    assert "\x1b" not in ran.err
    assert "\r" not in ran.err
    assert one_line(ran.err).startswith("released 50 of 50 sessions, 0 failed in ")
    assert one_line(ran.err).endswith("; 50 requests")
    assert ran.out == ""
    assert all(fake_browserbase.status(session_id) == "COMPLETED" for session_id in ids)


async def test_list_table_and_json(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.add_session("s-a", user_metadata={"job": "x"})
    fake_browserbase.add_session("s-b", status="COMPLETED")
    ran = await run_cli(fake_browserbase, "list")
    assert ran.code == 0
    assert "s-a" in ran.out
    assert "RUNNING" in ran.out
    assert '{"job": "x"}' in ran.out
    ran = await run_cli(fake_browserbase, "list", "--json", "--status", "COMPLETED")
    (row,) = map(json.loads, ran.out.splitlines())
    assert row["id"] == "s-b"
    assert row["status"] == "COMPLETED"


async def test_demo_through_the_console_script() -> None:
    script = Path(sys.executable).with_name("browserbase-async")
    ran = await run_cli(
        None, "demo", "--sessions", "40", "--faults", "--seed", "3", program=(str(script),)
    )
    assert ran.code == 0, ran.err
    assert "released 40 of 40 sessions, 0 failed" in ran.err
    assert "holds 0 running sessions" in ran.err


async def test_demo_json_quiet() -> None:
    ran = await run_cli(None, "demo", "--sessions", "5", "--json", "--quiet")
    assert ran.code == 0
    assert len(ran.out.splitlines()) == 5
    one_line(ran.err)


async def test_ctrl_c_stops_cleanly_and_says_what_was_done(
    fake_browserbase: FakeBrowserbase,
) -> None:
    fake_browserbase.faults = FaultPlan(latency=0.05)
    ids = fake_browserbase.add_sessions(2000)
    process = await start_cli(fake_browserbase, "release", "--concurrency", "8", *ids)
    await fake_browserbase.wait_for_requests(40)
    process.send_signal(signal.SIGINT)
    _, err = await process.communicate()
    assert process.returncode == 130, err
    summary = one_line(err.decode())
    assert "interrupted" in summary
    assert "Traceback" not in err.decode()
    released = sum(fake_browserbase.status(sid) == "COMPLETED" for sid in ids)
    assert 0 < released < 2000


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_stops_a_read_of_standard_input_that_never_ends(
    stop: signal.Signals, code: int
) -> None:
    # `producer | browserbase-async release --from-file -`, a producer that never ends: the
    # read, left blocked in its thread by the signal, must not crash the interpreter's exit.
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "release",
        "--api-key",
        "k",
        "--from-file",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_environ(None),
    )
    assert process.stdin is not None
    # More than the pipe and the transport's buffer hold: once the write is drained, the
    # command has read some of it, so it is reading (a signal any sooner would stop its start).
    process.stdin.write(b"s-1\n" * 100_000)
    await process.stdin.drain()
    try:
        process.send_signal(stop)
        async with asyncio.timeout(30):  # a bound against a hang, not a timing target
            _, err = await process.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    assert process.returncode == code, err
    assert b"Traceback" not in err
    assert b"Fatal Python error" not in err


async def test_the_progress_bar_is_drawn_on_a_terminal(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.faults = FaultPlan(latency=0.01)
    ids = fake_browserbase.add_sessions(200)
    code, drawn, out = await run_on_a_terminal(
        fake_browserbase, "release", "--concurrency", "4", *ids, terminal="stderr"
    )
    assert code == 0
    assert out == b""
    assert b"releasing" in drawn
    assert b"released 200 of 200 sessions" in drawn


async def test_a_dumb_terminal_gets_the_summary_alone(fake_browserbase: FakeBrowserbase) -> None:
    # TERM=dumb (Emacs' shell, some CI) draws no bar: it got a blank line before the summary.
    ids = fake_browserbase.add_sessions(3)
    code, drawn, out = await run_on_a_terminal(
        fake_browserbase, "release", *ids, terminal="stderr", term="dumb"
    )
    assert code == 0
    assert out == b""
    assert drawn.startswith(b"released 3 of 3 sessions, 0 failed in ")
    assert drawn.count(b"\n") == 1


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_stops_a_read_of_ids_that_never_ends(
    stop: signal.Signals, code: int, tmp_path: Path
) -> None:
    # A producer that never closes its end (`tail -f ids | ... --from-file -`, a FIFO): the
    # read blocked the event loop, whose handlers never ran. SIGTERM was ignored, and Ctrl-C
    # had to be pressed twice.
    fifo = tmp_path / "ids"
    os.mkfifo(fifo)
    process = await start_cli(None, "release", "--api-key", "k", "--from-file", str(fifo))
    # The FIFO opens for writing only once the command opened it for reading: it is reading.
    writer = await asyncio.to_thread(open, fifo, "w")
    try:
        process.send_signal(stop)
        async with asyncio.timeout(30):  # a bound against a hang, not a timing target
            _, err = await process.communicate()
    finally:
        writer.close()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    assert process.returncode == code, err
    assert b"Traceback" not in err
