"""The session reaper: release_all(older_than=..., where=...), and release --all --older-than,
--skip-keep-alive, --dry-run and --watch on the command line."""

from __future__ import annotations

import io
import json
import math
import re
import signal
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from rich.console import Console

from browserbase_async import Session
from browserbase_async.cli import _app
from browserbase_async.cli._output import print_candidates
from browserbase_async.testing import FakeBrowserbase, Fault

from .conftest import ApiFactory
from .test_cli import run_cli, start_cli


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def seed_ages(fake: FakeBrowserbase) -> dict[str, str]:
    """Sessions of several ages, by name."""
    return {
        "old": fake.add_session(started_at=ago(hours=3)),
        "mid": fake.add_session(started_at=ago(minutes=40)),
        "young": fake.add_session(started_at=ago(minutes=1)),
        "kept": fake.add_session(started_at=ago(hours=3), keep_alive=True),
        "ended": fake.add_session(started_at=ago(hours=3), status="COMPLETED"),
    }


def running(fake: FakeBrowserbase, names: dict[str, str]) -> set[str]:
    return {name for name, sid in names.items() if fake.status(sid) == "RUNNING"}


# -- the library ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("older_than", "skip_keep_alive", "released"),
    [
        (1800.0, False, {"old", "mid", "kept"}),
        (timedelta(hours=1), False, {"old", "kept"}),
        (1800, True, {"old", "mid"}),
        (0.0, False, {"old", "mid", "young", "kept"}),
        (None, True, {"old", "mid", "young"}),
    ],
)
async def test_the_filters_pick_exactly_the_right_sessions(
    older_than: float | timedelta | None,
    skip_keep_alive: bool,
    released: set[str],
    fake_browserbase: FakeBrowserbase,
    make_api: ApiFactory,
) -> None:
    names = seed_ages(fake_browserbase)

    def live(session: Session) -> bool:
        return not session.keep_alive

    async with make_api() as api:
        report = await api.release_all(
            older_than=older_than, where=live if skip_keep_alive else None
        )
    assert report.ok
    assert {result.session_id for result in report.results} == {names[n] for n in released}
    assert running(fake_browserbase, names) == {"old", "mid", "young", "kept"} - released
    assert fake_browserbase.received.requests["update"] == len(released)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"older_than": -1.0}, "older_than must be 0 seconds or more, got -1.0"),
        ({"older_than": math.nan}, "older_than must be 0 seconds or more, got nan"),
        ({"older_than": timedelta(seconds=-5)}, "older_than must be 0 seconds or more"),
        ({"older_than": "30m"}, "older_than must be seconds or a timedelta, got str"),
        ({"older_than": True}, "older_than must be seconds or a timedelta, got bool"),
        ({"where": "not keep_alive"}, "where must be a callable taking a Session"),
        ({"concurrency": 0}, "concurrency must be >= 1"),
    ],
)
async def test_bad_filters_are_refused_before_any_request(
    kwargs: dict[str, object],
    message: str,
    fake_browserbase: FakeBrowserbase,
    make_api: ApiFactory,
) -> None:
    seed_ages(fake_browserbase)
    async with make_api() as api:
        with pytest.raises(ValueError, match=re.escape(message)):
            await api.release_all(**kwargs)  # type: ignore[arg-type]
    assert fake_browserbase.received.total == 0


@pytest.mark.asyncio
async def test_a_session_its_worker_closed_after_the_listing_counts_as_released(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    names = seed_ages(fake_browserbase)

    def worker_closes_it_meanwhile(session: Session) -> bool:
        if session.id == names["old"]:
            fake_browserbase.sessions[session.id]["status"] = "COMPLETED"
        return True

    async with make_api() as api:
        report = await api.release_all(older_than=3600, where=worker_closes_it_meanwhile)
    assert report.ok  # the reaper lost the race and reports no failure
    [old] = [result for result in report.results if result.session_id == names["old"]]
    assert old.session is not None
    assert old.session.status == "COMPLETED"
    assert fake_browserbase.received.answers[400] == 1  # "not running", then checked


# -- the command line -------------------------------------------------------------


@pytest.mark.asyncio
async def test_release_all_older_than_skip_keep_alive(fake_browserbase: FakeBrowserbase) -> None:
    names = seed_ages(fake_browserbase)
    ran = await run_cli(
        fake_browserbase, "release", "--all", "--older-than", "30m", "--skip-keep-alive", "--json"
    )
    assert ran.code == 0, ran.err
    rows = [json.loads(line) for line in ran.out.splitlines()]
    assert {row["session_id"] for row in rows} == {names["old"], names["mid"]}
    assert running(fake_browserbase, names) == {"young", "kept"}
    assert ran.err.startswith("released 2 of 2 sessions, 0 failed")


@pytest.mark.asyncio
@pytest.mark.parametrize("json_rows", [False, True])
async def test_the_summary_counts_the_sessions_that_had_already_ended(
    fake_browserbase: FakeBrowserbase, json_rows: bool
) -> None:
    ended = fake_browserbase.add_sessions(3, status="COMPLETED")
    fake_browserbase.add_sessions(2)
    args = ("release", "--all", "--status", "COMPLETED", *(("--json",) if json_rows else ()))
    ran = await run_cli(fake_browserbase, *args)
    dry = await run_cli(fake_browserbase, *args, "--dry-run")
    assert ran.code == dry.code == 0, ran.err
    assert ran.err.startswith(
        "released 0 of 0 sessions, 0 failed, 3 already ended (nothing to release) in "
    )
    assert ran.out == ""  # no row: nothing was released, nothing sent
    assert "would release 0 sessions of 3 listed, 3 already ended (nothing to release)" in dry.err
    assert fake_browserbase.received.requests == {"list": 2}
    assert all(fake_browserbase.status(sid) == "COMPLETED" for sid in ended)


@pytest.mark.asyncio
async def test_a_dry_run_shows_what_would_be_closed(fake_browserbase: FakeBrowserbase) -> None:
    names = seed_ages(fake_browserbase)
    as_json = await run_cli(
        fake_browserbase, "release", "--all", "--older-than", "0.5h", "--dry-run", "--json"
    )
    in_a_pipe = await run_cli(
        fake_browserbase, "release", "--all", "--older-than", "1800", "--dry-run"
    )
    assert as_json.code == in_a_pipe.code == 0
    rows = {row["session_id"]: row for row in map(json.loads, as_json.out.splitlines())}
    assert set(rows) == {names["old"], names["mid"], names["kept"]}
    assert rows[names["old"]]["status"] == "RUNNING"
    assert 3 * 3600 - 60 < rows[names["old"]]["age_seconds"] < 3 * 3600 + 600
    assert 40 * 60 - 60 < rows[names["mid"]]["age_seconds"] < 40 * 60 + 600
    # In a pipe: the ids alone, ready for --from-file.
    assert sorted(in_a_pipe.out.splitlines()) == sorted(rows)
    assert "dry run: would release 3 sessions of 4 listed" in in_a_pipe.err
    assert fake_browserbase.received.requests == {"list": 2}


def test_a_dry_run_on_a_terminal_is_a_table_of_ids_statuses_and_ages() -> None:
    from browserbase_async._converter import structure_session

    from .helpers import session_json

    now = datetime(2026, 11, 28, 12, 5, 30, tzinfo=UTC)
    sessions = [
        structure_session(session_json(id="a-long-session-id-0123456789abcdef", startedAt=start))
        for start in ("2026-11-28T12:05:00Z", "2026-11-28T11:50:00Z", "2026-11-28T09:00:00Z")
    ]
    sessions.append(structure_session(session_json(id="b", startedAt="2026-11-25T09:00:00Z")))
    out = io.StringIO()
    print_candidates(
        sessions, now, Console(file=out, width=40, force_terminal=True), json_rows=False
    )
    text = out.getvalue()
    assert "a-long-session-id-0123456789abcdef" in text
    for age in ("30s", "15m", "3h05m", "3d03h"):
        assert age in text


# Refused before any request: run in this process, with nothing listening at the URL.
OFFLINE = ("--api-key", "k", "--base-url", "http://127.0.0.1:9")


@pytest.mark.parametrize("age", ["30x", "-5m", "m", "abc", "", "1e999"])
def test_a_bad_duration_exits_2(age: str) -> None:
    ran = CliRunner().invoke(_app.cli, ["release", *OFFLINE, "--all", "--older-than", age])
    assert ran.exit_code == 2
    assert "is not a duration: a number with a unit s, m, h or d" in ran.output
    assert "Traceback" not in ran.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["s-1", "--older-than", "5m"], "go with --all"),
        (["s-1", "--skip-keep-alive"], "go with --all"),
        (["--all", "--watch", "0"], "--watch needs an interval above 0"),
    ],
)
def test_reaper_options_misused_exit_2(args: list[str], message: str) -> None:
    ran = CliRunner().invoke(_app.cli, ["release", *OFFLINE, *args])
    assert ran.exit_code == 2
    assert message in ran.output


SWEEP = re.compile(r"^\S+ sweep (\d+): (.*)$")


@pytest.mark.asyncio
async def test_watch_sweeps_until_ctrl_c(fake_browserbase: FakeBrowserbase) -> None:
    names = seed_ages(fake_browserbase)
    process = await start_cli(
        fake_browserbase,
        *("release", "--all", "--older-than", "30m", "--skip-keep-alive"),
        *("--watch", "0.05s", "--json"),
    )
    assert process.stderr is not None
    lines: list[str] = []

    async def next_sweep() -> str:
        """The next sweep's line on stderr: events from the pipe, not sleeps."""
        assert process.stderr is not None
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "the watch ended: " + "".join(lines)
            lines.append(line)
            if match := SWEEP.match(line):
                return match[2]

    first = await next_sweep()
    assert first.startswith("listed 4; released 2 of 2 sessions, 0 failed")
    # New old sessions appear between sweeps; a sweep closes them.
    later = [fake_browserbase.add_session(started_at=ago(hours=2)) for _ in range(3)]
    closed = 0
    while closed < 3:
        closed += int(re.search(r"released (\d+) of", await next_sweep())[1])  # type: ignore[index]
    assert closed == 3
    # A sweep whose listing fails is said, and the next one runs.
    fake_browserbase.inject(Fault.status(403, message="listing refused"), route="list")
    while "the listing failed" not in (said := await next_sweep()):
        pass
    assert "403 Forbidden: listing refused" in said
    assert (await next_sweep()).startswith("listed ")
    process.send_signal(signal.SIGINT)
    out, rest = await process.communicate()
    assert process.returncode == 130, "".join(lines) + rest.decode()
    assert "Traceback" not in rest.decode()
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert {row["session_id"] for row in rows} == {names["old"], names["mid"], *later}
    assert all(row["ok"] for row in rows)
    assert running(fake_browserbase, names) == {"young", "kept"}
    sweeps = [int(match[1]) for line in lines if (match := SWEEP.match(line))]
    assert sweeps == list(range(1, len(sweeps) + 1))


@pytest.mark.asyncio
async def test_ctrl_c_inside_a_sweep_says_what_was_done_and_exits_130(
    fake_browserbase: FakeBrowserbase,
) -> None:
    (old,) = fake_browserbase.add_sessions(1, started_at=ago(hours=2))
    fake_browserbase.inject(Fault.hang(), route="update")
    process = await start_cli(
        fake_browserbase, "release", "--all", "--older-than", "1h", "--watch", "1m"
    )
    await fake_browserbase.wait_until(lambda: fake_browserbase.received.requests["update"] >= 1)
    process.send_signal(signal.SIGINT)
    _, err = await process.communicate()
    assert process.returncode == 130
    [line] = err.decode().splitlines()
    assert SWEEP.match(line)
    assert "listed 1; released 0 of 1 sessions, 0 failed" in line
    assert line.endswith("interrupted, 1 not attempted or not confirmed")
    assert fake_browserbase.received.requests == {"list": 1, "update": 1}
    assert fake_browserbase.status(old) == "RUNNING"  # hung, never done: and said so


@pytest.mark.asyncio
async def test_dry_run_of_ids_prints_them(fake_browserbase: FakeBrowserbase) -> None:
    ran = await run_cli(fake_browserbase, "release", "s-1", "s-2", "--dry-run")
    quiet = await run_cli(fake_browserbase, "release", "--all", "--dry-run", "--quiet")
    assert ran.out.splitlines() == ["s-1", "s-2"]
    assert "dry run: would release 2 sessions" in ran.err
    assert quiet.err == ""
    assert fake_browserbase.received.requests == {"list": 1}
