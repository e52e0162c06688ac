"""What the command line shows: the progress bar, JSON rows, the summary line."""

from __future__ import annotations

import collections
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import IO, Final

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .._bulk import ReleaseResult, session_age
from .._errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from .._flow import FlowStats
from .._models import Session

KEY_REFUSED: Final = frozenset({"unauthorized", "forbidden"})
"""Failure kinds that mean the key is wrong: the summary names where it came from."""
_KINDS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (ValueError, "invalid id"),
    (NotFoundError, "not found"),
    (AuthenticationError, "unauthorized"),
    (PermissionDeniedError, "forbidden"),
    (RateLimitError, "rate limited"),
    (APITimeoutError, "timed out"),
    (APIConnectionError, "connection failed"),
    (APIResponseValidationError, "bad answer"),
)


def failure_kind(error: BaseException) -> str:
    """A short name for why a release failed, for the summary."""
    for kind, name in _KINDS:
        if isinstance(error, kind):
            return name
    if isinstance(error, APIStatusError):
        return "server error" if error.status_code >= 500 else f"refused ({error.status_code})"
    return type(error).__name__


def result_row(result: ReleaseResult) -> str:
    """One ``--json`` line for *result*."""
    status = None if result.session is None else str(result.session.status)
    error = None if result.error is None else str(result.error)
    return json.dumps(
        {
            "session_id": result.session_id,
            "ok": result.ok,
            "status": status,
            "error": error,
            "attempts": result.attempts,
        }
    )


def flow_summary(stats: FlowStats) -> str:
    """What the flow control did, in a few words: why a run took as long as it did."""
    parts = [f"{stats.requests} requests"]
    if stats.rate_limited:
        parts.append(f"{stats.rate_limited} answered 429, window now {stats.window:.0f}")
    if stats.pauses:
        times = "once" if stats.pauses == 1 else f"{stats.pauses} times"
        parts.append(f"paused {times} for {stats.paused_seconds:.1f} s")
    return ", ".join(parts)


class Tally:
    """Counts a run's results, draws the progress bar, and says the summary line.

    The bar is drawn on standard error, only when that is a terminal and not quiet.
    """

    def __init__(
        self, total: int | None, *, quiet: bool, json_rows: bool, stdout: IO[str] | None = None
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.retries = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.failed_ids: list[str] = []
        self.started = time.monotonic()
        self._json = json_rows
        self._stdout = stdout or sys.stdout
        self._stderr = Console(stderr=True, highlight=False)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if not quiet and self._stderr.is_terminal:
            self._progress = Progress(
                TextColumn("releasing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>7.1f}/s"),
                TextColumn("[red]{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=self._stderr,
                transient=True,
            )

    def __enter__(self) -> Tally:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("release", total=self.total, failed=0, rate=0.0)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, result: ReleaseResult) -> None:
        """Count *result*, print its JSON row if asked, and move the bar."""
        self.done += 1
        self.retries += max(result.attempts - 1, 0)
        if result.error is not None:
            self.failed += 1
            self.kinds[failure_kind(result.error)] += 1
            self.failed_ids.append(result.session_id)
        if self._json:
            self._stdout.write(result_row(result) + "\n")
        if self._progress is not None and self._task is not None:
            rate = self.done / max(time.monotonic() - self.started, 1e-9)
            self._progress.update(self._task, advance=1, failed=self.failed, rate=rate)

    def summary(self, *, interrupted: bool = False, stats: FlowStats | None = None) -> str:
        """The one human line said at the end; with the run's flow figures, if given."""
        seconds = time.monotonic() - self.started
        total = self.total if self.total is not None else self.done
        released = self.done - self.failed
        line = f"released {released} of {total} sessions, {self.failed} failed"
        if self.kinds:
            line += " (" + ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common()) + ")"
        line += f" in {seconds:.1f} s"
        if self.retries:
            line += f", {self.retries} retries"
        if stats is not None:
            line += "; " + flow_summary(stats)
        if KEY_REFUSED & self.kinds.keys():
            line += "; the API key was refused: check --api-key or BROWSERBASE_API_KEY"
        if interrupted:
            line += f"; interrupted, {total - self.done} not attempted or not confirmed"
        return line

    def say(self, line: str) -> None:
        """Print *line* on standard error."""
        self._stderr.print(line, markup=False, soft_wrap=True)


def session_cells(session: Session) -> tuple[str, str, str, str, str]:
    """A session's id, status, region, start time and user metadata, as text."""
    return (
        session.id,
        str(session.status),
        "" if session.region is None else str(session.region),
        "" if session.started_at is None else session.started_at.isoformat(timespec="seconds"),
        json.dumps(session.user_metadata) if session.user_metadata else "",
    )


def _print_rows(
    console: Console, headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]
) -> None:
    """Rows whose first cell is an id: a table where the id is never cut and the other
    columns give way; tab-separated where even that cannot fit, or where it is not a terminal."""
    widest = max((len(row[0]) for row in rows), default=len(headers[0]))
    narrowest = [min(len(header), 7) for header in headers[1:]]
    if not console.is_terminal or console.width < widest + sum(narrowest) + 2 * len(headers):
        console.file.writelines("\t".join(row) + "\n" for row in rows)
        return
    table = Table(box=None)
    table.add_column(headers[0], no_wrap=True, min_width=widest, overflow="ignore")
    for header, width in zip(headers[1:], narrowest, strict=True):
        table.add_column(header, overflow="fold", min_width=width)
    for row in rows:
        table.add_row(*row)
    console.print(table, crop=False)


def print_sessions(sessions: list[Session], console: Console) -> None:
    """Print *sessions*: a table on a terminal, else one tab-separated row each."""
    headers = ("id", "status", "region", "started", "user metadata")
    _print_rows(console, headers, [session_cells(session) for session in sessions])


_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_SECONDS_PER: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Parse an option's duration: a number with a unit ``s``, ``m``, ``h`` or ``d``.

    A click callback (click's own ``ParamType`` is generic in some versions and not others).

    Returns:
        Seconds, or ``None`` when the option was not given.

    Raises:
        click.BadParameter: *value* is not a duration (exit code 2).
    """
    if value is None:
        return None
    match = _DURATION.fullmatch(value.strip().lower())
    seconds = float(match[1]) * _SECONDS_PER[match[2]] if match else math.nan
    if not math.isfinite(seconds):
        raise click.BadParameter(
            f"{value!r} is not a duration: a number with a unit s, m, h or d "
            "(90s, 30m, 1.5h, 2d); a bare number is seconds",
            param=param,
        )
    return seconds


def age_text(seconds: float) -> str:
    """A session's age, short: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def print_candidates(
    sessions: list[Session], now: datetime, console: Console, *, json_rows: bool
) -> None:
    """What a dry run would release: JSON rows; a table (id, status, age) on a terminal;
    else the ids alone, one a line, ready for ``--from-file``."""
    if json_rows:
        for session in sessions:
            row = {
                "session_id": session.id,
                "status": str(session.status),
                "age_seconds": None
                if (age := session_age(session, now)) is None
                else round(age, 3),
            }
            console.file.write(json.dumps(row) + "\n")
        return
    if not console.is_terminal:
        console.file.writelines(session.id + "\n" for session in sessions)
        return
    rows = [
        (
            session.id,
            str(session.status),
            "?" if (age := session_age(session, now)) is None else age_text(age),
        )
        for session in sessions
    ]
    _print_rows(console, ("id", "status", "age"), rows)
