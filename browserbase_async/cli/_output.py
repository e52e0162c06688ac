"""What the command line shows: the progress bar, JSON rows, the summary line."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import IO, Final, cast

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
from rich.text import Text

from .._bulk import ReleaseResult, session_age
from .._duration import parse_duration
from .._errors import (
    APICertificateError,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    ProxyAuthenticationError,
    RateLimitError,
)
from .._flow import FlowStats
from .._models import Session
from ._writer import BACKGROUND, silence

ALREADY_ENDED: Final = "already ended (nothing to release)"
"""How the summary names the listed sessions that had ended: sent nothing, counted apart."""
KEY_REFUSED: Final = frozenset({"unauthorized", "forbidden"})
"""Failure kinds that mean the key is wrong: the summary names where it came from."""
_KINDS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (ValueError, "invalid id"),
    (NotFoundError, "not found"),
    (AuthenticationError, "unauthorized"),
    (PermissionDeniedError, "forbidden"),
    (ProxyAuthenticationError, "proxy refused"),
    (RateLimitError, "rate limited"),
    (APITimeoutError, "timed out"),
    (APICertificateError, "certificate rejected"),
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


class Stdout(io.TextIOBase):
    """Standard output for rows that a reader may stop reading (``--json | less``) or leave
    (``--json | head -1``).

    While a command runs, the rows go to a writer thread (`BACKGROUND`): a reader who
    stops reading holds up nothing but that thread. A reader that went away does not stop
    the job: from then on what is written here goes nowhere, quietly, and the run goes on
    to its end. So with no standard output at all (``>&-``); any other failure to write (a
    full disk) is said once on standard error, and the run goes on. Each row is written as
    it comes, so that a reader in a pipe sees each row as it is made.

    The stream is the one in ``sys.stdout`` when this is made: a rich progress bar
    that stands in for it meanwhile gets none of the rows.
    """

    _STREAM: str = "stdout"

    def __init__(self) -> None:
        super().__init__()
        self._stream: IO[str] | None = getattr(sys, self._STREAM)
        self.reader_gone = self._stream is None
        self._writer = None if self._stream is None else BACKGROUND.writer(self._stream)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            return bool(self._stream.isatty())  # type: ignore[union-attr]
        return False

    def write(self, text: str) -> int:
        if self.reader_gone or self._stream is None:
            return len(text)
        if self._writer is not None:
            writer, fd = self._writer
            if writer.gone(fd):
                self.reader_gone = True
                return len(text)
            errors = getattr(self._stream, "errors", None) or "strict"
            writer.put(fd, text.encode(self.encoding, errors), self._failed)
            return len(text)
        try:
            self._stream.write(text)
            self._stream.flush()
        except OSError as exc:
            self.reader_gone = True
            self._failed(exc)
            with contextlib.suppress(ValueError, OSError):  # no descriptor: click's runner
                silence(self._stream.fileno())
        except ValueError:  # the stream object itself was closed: nowhere to write
            self.reader_gone = True
        return len(text)

    def _failed(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError):
            say(
                f"browserbase-async: standard output failed ({exc.strerror or exc}):"
                " nothing more is written there; the run goes on"
            )

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        self.write("".join(lines))

    def flush(self) -> None:
        """Nothing to do: each write is flushed (and a finalizer's flush must not fail)."""


class Stderr(Stdout):
    """Standard error, as `Stdout` is standard output: a reader that went away
    (``2>&1 | head -1``) stops nothing, and there is nowhere left to say so."""

    _STREAM = "stderr"

    def _failed(self, exc: OSError) -> None:
        pass


def say(line: str) -> None:
    """Print *line* on standard error, which a reader may have closed."""
    Stderr().write(line + "\n")


class SaidRecords(logging.Handler):
    """The library's log records, each a line said on standard error (`say`)."""

    def emit(self, record: logging.LogRecord) -> None:
        say(self.format(record))


@contextlib.contextmanager
def records_said() -> Iterator[None]:
    """Meanwhile, the library's warnings (and worse) are said as the command's other lines
    are, through the writer, unless logging was set up: then they are its own.

    They are what logging's last resort printed, as it printed them; but it wrote them from
    the event loop itself, where a reader who did not read held up every release.
    """
    logger = logging.getLogger("browserbase_async")
    if logger.hasHandlers():
        yield
        return
    handler = SaidRecords(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def stdout_console() -> Console:
    """A rich console on a `Stdout`: tables and rows that a closed pipe cannot stop."""
    # Stdout has every method of a text file that rich calls; typeshed types it apart.
    return Console(file=cast(IO[str], Stdout()))


def flow_summary(stats: FlowStats, retried: int = 0) -> str:
    """What the flow control did, in a few words: why a run took as long as it did.

    Args:
        stats: The run's flow figures.
        retried: Requests of the releases sent again, 429s included.
    """
    parts = [f"{stats.requests} requests"]
    # A 429 does not use up an attempt: the retries are the requests sent again after
    # an error (5xx, a lost answer), and the 429s are said apart.
    if again := max(retried - stats.rate_limited, 0):
        parts.append(f"{again} retried after an error")
    if stats.rate_limited:
        parts.append(f"{stats.rate_limited} answered 429, window now {stats.window:.0f}")
    if stats.pauses:
        times = "once" if stats.pauses == 1 else f"{stats.pauses} times"
        parts.append(f"paused {times} for {stats.paused_seconds:.1f} s")
    return ", ".join(parts)


class Tally:
    """Counts a run's results, draws the progress bar, and says the summary line.

    The bar is drawn on standard error, only when that is a terminal that can draw one
    (not ``TERM=dumb``, where rich draws nothing but a blank line) and not quiet.
    """

    def __init__(
        self, total: int | None, *, quiet: bool, json_rows: bool, stdout: Stdout | None = None
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.retried = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.failed_ids: list[str] = []
        self.answered: set[str] = set()
        self.started = time.monotonic()
        self._json = json_rows
        self._stdout = stdout or Stdout()
        self._stderr = Console(file=cast(IO[str], Stderr()), highlight=False)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if not quiet and self._stderr.is_terminal and not self._stderr.is_dumb_terminal:
            self._progress = Progress(
                TextColumn("releasing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>7.1f}/s"),
                TextColumn("[red]{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=self._stderr,
                transient=True,
                # The rows go to standard output, not through the bar.
                redirect_stdout=False,
                redirect_stderr=False,
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
        self.retried += max(result.attempts - 1, 0)
        self.answered.add(result.session_id)
        if result.error is not None:
            self.failed += 1
            self.kinds[failure_kind(result.error)] += 1
            self.failed_ids.append(result.session_id)
        if self._json:
            self._stdout.write(result_row(result) + "\n")
        if self._progress is not None and self._task is not None:
            rate = self.done / max(time.monotonic() - self.started, 1e-9)
            self._progress.update(self._task, advance=1, failed=self.failed, rate=rate)

    def summary(
        self, *, interrupted: bool = False, stats: FlowStats | None = None, already_ended: int = 0
    ) -> str:
        """The one human line said at the end; with the run's flow figures, if given.

        Args:
            interrupted: Ctrl-C or SIGTERM cut the run short.
            stats: The run's flow figures.
            already_ended: Sessions listed by ``--all`` that had ended: sent nothing, and
                counted apart (neither released nor failed).
        """
        seconds = time.monotonic() - self.started
        total = self.total if self.total is not None else self.done
        released = self.done - self.failed
        line = f"released {released} of {total} sessions, {self.failed} failed"
        if self.kinds:
            line += " (" + ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common()) + ")"
        if already_ended:
            line += f", {already_ended} {ALREADY_ENDED}"
        line += f" in {seconds:.1f} s"
        if stats is not None:
            line += "; " + flow_summary(stats, self.retried)
        if KEY_REFUSED & self.kinds.keys():
            line += "; the API key was refused: check --api-key or BROWSERBASE_API_KEY"
        if "proxy refused" in self.kinds:
            line += "; the proxy refused its credentials: check --proxy or HTTPS_PROXY"
        if interrupted:
            line += f"; interrupted, {total - self.done} not attempted or not confirmed"
        return line

    def to_resume(self, ids: Iterable[str]) -> list[str]:
        """What ``--failed-out`` holds: the ids that failed, then those of *ids* that got no
        answer (never attempted, or cut short by an interruption), each once, in order."""
        failed = dict.fromkeys(self.failed_ids)
        return list(failed) + [
            session_id
            for session_id in dict.fromkeys(ids)
            if session_id not in self.answered and session_id not in failed
        ]

    def say(self, line: str) -> None:
        """Print *line* on standard error."""
        self._stderr.print(line, markup=False, soft_wrap=True)


_UNPRINTABLE: Final = frozenset({"Cc", "Cf"})


def printable(text: str) -> str:
    """*text* with its control and format characters escaped (``\\x1b``, ``\\u202e``): server
    text on a terminal moves no cursor, colours nothing and reorders nothing."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _UNPRINTABLE
        else char
        for char in text
    )


COMMENT: Final = "#"
"""A line of ``--from-file`` that starts with this is a comment."""
QUOTED_IDS: Final = (
    "browserbase-async: {count} printed as JSON strings: written as they are"
    " (a line break, a tab, a control character, a space at an end, a leading '#'),"
    " --from-file would not read each back as one id"
)


def reads_back(session_id: str) -> bool:
    """Whether *session_id*, written alone on a line (or as a tab-separated field), is read
    back by ``--from-file`` (and ``cut``) as itself: no line break, tab or other control or
    format character, no space at either end, not empty, no leading ``#``."""
    return (
        session_id.isprintable()
        and session_id == session_id.strip()
        and bool(session_id)
        and not session_id.startswith(COMMENT)
    )


def id_field(session_id: str) -> str:
    """*session_id* as a line (or a field) of machine-readable output: itself when it
    `reads_back`; else a JSON string, one line with no tab, which ``--from-file`` takes as
    one invalid id (no id this client sends holds a quote), never as other ids."""
    return session_id if reads_back(session_id) else json.dumps(session_id)


def _cell_field(text: str) -> str:
    """Server text as a tab-separated field: itself, or a JSON string if it has a tab, a
    line break or another control character (which would also reach a terminal raw)."""
    return text if text.isprintable() else json.dumps(text)


def write_id_rows(file: IO[str] | io.TextIOBase, rows: Iterable[Sequence[str]]) -> None:
    """Write *rows*, whose first cell is an id, one a line, tab-separated, for other programs
    (``cut -f1``, ``--from-file``); a cell that would break its row is a JSON string, and
    standard error says how many ids were so written."""
    quoted = 0
    lines = []
    for session_id, *cells in rows:
        quoted += not reads_back(session_id)
        lines.append("\t".join([id_field(session_id), *map(_cell_field, cells)]) + "\n")
    file.writelines(lines)
    if quoted:
        say(QUOTED_IDS.format(count="1 session id" if quoted == 1 else f"{quoted} session ids"))


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
        write_id_rows(console.file, rows)
        return
    table = Table(box=None)
    table.add_column(headers[0], no_wrap=True, min_width=widest, overflow="ignore")
    for header, width in zip(headers[1:], narrowest, strict=True):
        table.add_column(header, overflow="fold", min_width=width)
    for row in rows:
        # Server text as text: a "[/]" in metadata is not rich markup, an ESC moves nothing.
        table.add_row(*(Text(printable(cell)) for cell in row))
    console.print(table, crop=False)


def print_sessions(sessions: list[Session], console: Console) -> None:
    """Print *sessions*: a table on a terminal, else one tab-separated row each."""
    headers = ("id", "status", "region", "started", "user metadata")
    _print_rows(console, headers, [session_cells(session) for session in sessions])


class OneLineUsageError(click.UsageError):
    """A usage error said in one line, as ``cli.md`` promises: no usage block (exit code 2)."""

    def show(self, file: object = None) -> None:
        say(f"browserbase-async: error: {printable(self.format_message())}")


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """Turn click's usage errors (a usage block, a hint, then the error: four lines) into
    one line that names the help to read. Errors that show something else (the help when
    no command is given) pass as they are."""
    try:
        yield
    except click.UsageError as exc:
        if type(exc).show is not click.UsageError.show:
            raise
        hint = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
        raise OneLineUsageError(exc.format_message().rstrip(".") + hint, exc.ctx) from None


def duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Parse an option's duration: a number with a unit ``s``, ``m``, ``h`` or ``d``.

    A click callback (click's own ``ParamType`` is generic in some versions and not others).

    Returns:
        Seconds, or ``None`` when the option was not given.

    Raises:
        OneLineUsageError: *value* is not a duration (exit code 2).
    """
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise OneLineUsageError(f"{param.opts[0]}: {exc}") from None


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
        write_id_rows(console.file, [(session.id,) for session in sessions])
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
