"""The click application: ``release``, ``list`` and ``demo``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, Final, TypeVar

import attrs
import click

from .._bulk import sort_out
from .._client import SessionsAPI
from .._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_CONCURRENCY, PROJECT_ID_ENV
from .._converter import unstructure_session
from .._errors import APIError
from .._models import Session, SessionStatus
from .._retry import RetryPolicy
from .._version import __version__
from ._output import (
    ALREADY_ENDED,
    COMMENT,
    Stdout,
    Tally,
    duration,
    id_field,
    one_line_usage_errors,
    print_candidates,
    print_sessions,
    printable,
    records_said,
    say,
    stdout_console,
    write_id_rows,
)
from ._scrape import DEFAULT_BROWSERS, DEFAULT_USE, DEFAULT_WORKERS, scrape_demo
from ._writer import BACKGROUND

PROG: Final = "browserbase-async"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_TERMINATED: Final = 143
"""128 + SIGTERM: what systemd, Docker and Kubernetes send to stop a service."""
DEFAULT_DEMO_SESSIONS: Final = 1000
DEMO_RETRY: Final = RetryPolicy(max_attempts=5, initial_delay=0.05, max_delay=1.0)
"""The demo's policy: the defaults' shape, quicker, with room for its injected faults."""

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


class ConfigError(Exception):
    """A usage or configuration problem, said in one line, exit code 2."""


class _Stopped(Exception):
    """SIGTERM or Ctrl-C during a read that the event loop could not interrupt."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _fail(message: str) -> None:
    say(f"{PROG}: error: {printable(message)}")


def _client(
    api_key: str | None,
    base_url: str | None,
    project_id: str | None,
    network: dict[str, Any],
) -> SessionsAPI:
    if api_key is None:
        raise ConfigError(f"no API key: pass --api-key or set {API_KEY_ENV}")
    return SessionsAPI(
        api_key,
        base_url=base_url,
        project_id=project_id,
        proxy=network.pop("proxy"),
        ssl=network.pop("ca_file"),
    )


def _connection_options(command: _F) -> _F:
    for option in reversed(
        (
            click.option(
                "--api-key", envvar=API_KEY_ENV, show_envvar=True, help="Browserbase API key."
            ),
            click.option("--base-url", envvar=BASE_URL_ENV, show_envvar=True, help="API root URL."),
            click.option(
                "--proxy",
                metavar="URL",
                help="Reach the API through this proxy (else HTTPS_PROXY, NO_PROXY).",
            ),
            click.option(
                "--ca-file",
                type=click.Path(exists=True, dir_okay=False),
                help="Trust the CAs of this PEM bundle (a private CA) instead of the system's.",
            ),
        )
    ):
        command = option(command)
    return command


_project_option: Final = click.option(
    "--project-id",
    envvar=PROJECT_ID_ENV,
    show_envvar=True,
    help="projectId sent with each release.",
)


_STATUS = click.Choice([status.value for status in SessionStatus], case_sensitive=False)


def _release_options(command: _F) -> _F:
    for option in reversed(
        (
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=DEFAULT_CONCURRENCY,
                show_default=True,
                help="Most requests in flight.",
            ),
            click.option("--json", "json_rows", is_flag=True, help="One JSON line per session."),
            click.option(
                "--failed-out",
                type=click.Path(dir_okay=False, writable=True),
                help="Write the ids to do again here (failed, or cut short), one a line.",
            ),
            click.option("--dry-run", is_flag=True, help="Print the ids; release nothing."),
            click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
            click.option("--wait", is_flag=True, help="Confirm each session reached its end."),
        )
    ):
        command = option(command)
    return command


_SIGNAL_CODES: Final = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
STOP_POLL: Final = 0.05
"""Seconds between looks at the signals while a wait that may last for ever runs (`_stoppable`)."""
READ_CHUNK: Final = 1 << 16
"""Bytes read at a time from an ids file or standard input."""


@attrs.define
class _Terminate:
    """Ctrl-C and SIGTERM, taken from the command's start to its exit: each cancels the
    command's task (its summary said), the wait for the readers ends, and the exit code is
    130, or 143 once SIGTERM came.

    One handler for the whole command, never the event loop's: a signal that came as the
    command's task ended was lost in the loop's, which its removal dropped (the wait for a
    reader who does not read then lasted for ever), and SIGTERM had its default meanwhile
    (the process died without its exit code). Nor ``asyncio.run``'s for Ctrl-C: at a second
    one it raised KeyboardInterrupt wherever the code was, in the task (the summary never
    said) or in a loop callback (a task's wake-up lost: the loop's close waited for ever).
    """

    received: int | None = None
    """The exit code the signals received give: 143 once SIGTERM came, else 130 once Ctrl-C
    did; ``None`` until one comes."""
    _task: asyncio.Task[int] | None = None

    @contextlib.contextmanager
    def taken(self) -> Iterator[None]:
        """The signals are this handler's meanwhile (outside the main thread, they keep their
        own; an ignored Ctrl-C, as a job started in the background has it, stays ignored)."""
        previous = {}
        try:
            for number in _SIGNAL_CODES:
                if number != signal.SIGTERM and (
                    signal.getsignal(number) is not signal.default_int_handler
                ):
                    continue
                previous[number] = signal.signal(number, self._receive)
        except ValueError:  # not the main thread: signals are not ours to take
            pass
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    async def run(
        self, command: Callable[..., Coroutine[Any, Any, int]], kwargs: dict[str, Any]
    ) -> int:
        """Run ``command(**kwargs)``; Ctrl-C or SIGTERM meanwhile cancels it.

        Raises:
            asyncio.CancelledError: One came before: the command does not begin.
        """
        self._task = asyncio.current_task()
        if self.received is not None:  # taken with no task yet to cancel
            raise asyncio.CancelledError
        return await command(**kwargs)

    def _receive(self, signum: int, _frame: object) -> None:
        self.received = max(self.received or 0, _SIGNAL_CODES[signal.Signals(signum)])
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # Wake the loop, should it wait in select() for something else.
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                task.get_loop().call_soon_threadsafe(lambda: None)


def _run(main: Callable[..., Coroutine[Any, Any, int]]) -> Callable[..., None]:
    """Run an async command; turn config errors, API errors, Ctrl-C and SIGTERM into exit
    codes. (What it writes on standard output goes through `Stdout`, which a reader that
    went away cannot stop.)"""

    @functools.wraps(main)
    def command(**kwargs: Any) -> None:
        # Output goes through writer threads meanwhile: a reader who stops reading holds up
        # neither the releases nor the signal handlers.
        terminate = _Terminate()
        # The signals are taken first, and given back last: the writers' end is theirs too.
        with terminate.taken(), BACKGROUND.on(), records_said():
            code = _delivered(_outcome(main, kwargs, terminate), lambda: terminate.received)
        sys.exit(code)

    return command


def _outcome(
    main: Callable[..., Coroutine[Any, Any, int]], kwargs: dict[str, Any], terminate: _Terminate
) -> int:
    """Run ``main(**kwargs)``; return its exit code, or that of what stopped it."""
    try:
        code = asyncio.run(terminate.run(main, kwargs))
    except asyncio.CancelledError:  # a signal outside a release: nothing to summarise
        code = EXIT_INTERRUPTED
    except ConfigError as exc:
        _fail(str(exc))
        code = EXIT_USAGE
    except ValueError as exc:  # the library's word on a bad key, URL or id
        _fail(str(exc))
        code = EXIT_USAGE
    except APIError as exc:
        _fail(str(exc))
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except _Stopped as exc:
        code = exc.code
    if terminate.received is not None:
        # Even once the command ended (its loop closing): the readers are not waited for.
        code = terminate.received
    return code


def _delivered(code: int, signalled: Callable[[], int | None] = lambda: None) -> int:
    """Wait until what the command wrote reached its readers, then return *code*.

    A reader may not read for a long while (a pager): Ctrl-C and SIGTERM end the wait
    (what the readers did not take is dropped) and give their exit code; after either, the
    command does not wait at all.

    Args:
        code: The command's exit code.
        signalled: The exit code of a signal that came since the command's outcome was
            known (before this wait could take it), else ``None``.
    """
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        return code

    def drain() -> None:
        if (stopped := signalled()) is not None:
            raise _Stopped(stopped)
        BACKGROUND.drain()

    try:
        _stoppable(drain)
    except _Stopped as stopped:
        return stopped.code
    return code


class _Group(click.Group):
    """The command group; its usage errors, and its commands', are one line (``cli.md``)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_usage_errors():
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Close Browserbase sessions, many at once."""


@cli.command()
@click.argument("ids", nargs=-1)
@click.option(
    "--from-file",
    "from_file",
    metavar="FILE",
    help="Read ids one a line ('-': standard input); blank and '#' lines are skipped.",
)
@click.option("--all", "all_sessions", is_flag=True, help="Release every listed session.")
@click.option("--status", type=_STATUS, help="With --all: this status (default RUNNING).")
@click.option("--query", help="With --all: user_metadata['key']:'value'.")
@click.option(
    "--older-than",
    callback=duration,
    metavar="AGE",
    help="With --all: only sessions started at least AGE ago (30m, 2h, 1d; bare: seconds).",
)
@click.option("--skip-keep-alive", is_flag=True, help="With --all: leave keepAlive sessions alone.")
@click.option(
    "--watch",
    callback=duration,
    metavar="EVERY",
    help="With --all: sweep again every EVERY (30s, 5m) until Ctrl-C or SIGTERM.",
)
@_release_options
@_connection_options
@_project_option
@_run
async def release(
    ids: tuple[str, ...],
    from_file: str | None,
    all_sessions: bool,
    status: str | None,
    query: str | None,
    older_than: float | None,
    skip_keep_alive: bool,
    watch: float | None,
    api_key: str | None,
    base_url: str | None,
    project_id: str | None,
    **options: Any,
) -> int:
    """Release sessions: by ID, from a file, or --all (once, or every --watch)."""
    if all_sessions and (ids or from_file):
        raise ConfigError("--all cannot be combined with ids or --from-file")
    filters = status or query or older_than is not None or skip_keep_alive or watch is not None
    if filters and not all_sessions:
        raise ConfigError(
            "--status, --query, --older-than, --skip-keep-alive and --watch go with --all"
        )
    if watch is not None and watch <= 0:
        raise ConfigError("--watch needs an interval above 0")
    if not (all_sessions or ids or from_file):
        raise ConfigError("say which sessions: IDs, --from-file FILE, or --all")
    wanted = list(ids) + (_stoppable(functools.partial(_read_ids, from_file)) if from_file else [])
    async with _client(api_key, base_url, project_id, options) as api:
        if not all_sessions:
            return await release_ids(api, wanted, **options)
        sweep = Sweep(
            api,
            status=status or SessionStatus.RUNNING,
            query=query,
            older_than=older_than,
            where=_not_keep_alive if skip_keep_alive else None,
            options=options,
        )
        if watch is None:
            return await sweep.run()
        return await sweep.watch(watch)


def _not_keep_alive(session: Session) -> bool:
    return not session.keep_alive


@attrs.frozen
class Sweep:
    """One listing of ``release --all``, filtered, then released: once, or every ``--watch``."""

    api: SessionsAPI
    status: str
    query: str | None
    older_than: float | None
    where: Callable[[Session], bool] | None
    options: dict[str, Any]

    async def run(self, prefix: str = "") -> int:
        """List, filter, release (or with ``--dry-run``, show); return the exit code.

        Raises:
            APIError: The listing failed.
        """
        listed = await self.api.list(status=self.status, q=self.query)
        now = self.api.server_now()
        selection = sort_out(listed, older_than=self.older_than, where=self.where, now=now)
        chosen, ended = selection.chosen, len(selection.already_ended)
        if prefix:
            prefix += f"listed {len(listed)}; "
        if self.options["dry_run"]:
            print_candidates(chosen, now, stdout_console(), json_rows=self.options["json_rows"])
            if not self.options["quiet"]:
                noun = "session" if len(chosen) == 1 else "sessions"
                apart = f", {ended} {ALREADY_ENDED}" if ended else ""
                would = f"would release {len(chosen)} {noun} of {len(listed)} listed"
                say(f"{prefix}dry run: {would}{apart}")
            return EXIT_OK
        ids = [session.id for session in chosen]
        return await release_ids(
            self.api, ids, summary_prefix=prefix, already_ended=ended, listed=True, **self.options
        )

    async def watch(self, every: float) -> int:
        """Sweep every *every* seconds until Ctrl-C or SIGTERM; a failed sweep is said, and
        the next runs.

        Returns:
            `EXIT_INTERRUPTED`, once Ctrl-C or SIGTERM ends it (between sweeps or inside one).
        """
        number = 0
        try:
            while True:
                number += 1
                prefix = f"{datetime.now(UTC).isoformat(timespec='seconds')} sweep {number}: "
                try:
                    code = await self.run(prefix)
                except APIError as exc:
                    say(f"{prefix}the listing failed: {printable(str(exc))}")
                    code = EXIT_FAILED
                if code == EXIT_INTERRUPTED:
                    return code
                await asyncio.sleep(every)
        except asyncio.CancelledError:
            return EXIT_INTERRUPTED


@cli.command(name="list")
@click.option("--status", type=_STATUS, help="Only sessions in this status.")
@click.option("--query", help="user_metadata['key']:'value'.")
@click.option("--json", "json_rows", is_flag=True, help="One JSON object a line.")
@_connection_options
@_run
async def list_sessions(
    status: str | None,
    query: str | None,
    json_rows: bool,
    api_key: str | None,
    base_url: str | None,
    **network: Any,
) -> int:
    """Print sessions: a table on a terminal, else tab-separated rows, or JSON lines."""
    async with _client(api_key, base_url, None, network) as api:
        sessions = await api.list(status=status, q=query)
    out = Stdout()
    if json_rows:
        for session in sessions:
            out.write(json.dumps(unstructure_session(session)) + "\n")
        return EXIT_OK
    print_sessions(sessions, stdout_console())
    say(f"{len(sessions)} sessions")
    return EXIT_OK


@cli.command()
@click.option(
    "--sessions",
    type=click.IntRange(min=0),
    default=DEFAULT_DEMO_SESSIONS,
    show_default=True,
    help="Running sessions to create, then release.",
)
@click.option("--faults", is_flag=True, help="Inject a realistic mix of 5xx, 429s and drops.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault draws.")
@click.option(
    "--scrape",
    is_flag=True,
    help="Instead: the whole life, create to release, of --workers sessions on a full plan.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=DEFAULT_WORKERS,
    show_default=True,
    help="With --scrape: workers, each in its own api.session().",
)
@click.option(
    "--browsers",
    type=click.IntRange(min=1),
    default=DEFAULT_BROWSERS,
    show_default=True,
    help="With --scrape: the fake plan's concurrent browsers.",
)
@click.option(
    "--use",
    type=click.FloatRange(min=0),
    default=DEFAULT_USE,
    show_default=True,
    help="With --scrape: seconds each worker uses its browser.",
)
@_release_options
@_run
async def demo(
    sessions: int,
    faults: bool,
    seed: int,
    scrape: bool,
    workers: int,
    browsers: int,
    use: float,
    **options: Any,
) -> int:
    """Release N sessions of an embedded fake Browserbase: no key, no network."""
    from ..testing import FakeBrowserbase, FaultPlan

    if scrape:
        return await scrape_demo(workers=workers, browsers=browsers, use=use, seed=seed)

    plan = FaultPlan.realistic(seed=seed) if faults else FaultPlan(seed=seed)
    async with FakeBrowserbase(faults=plan) as fake:
        fake.add_sessions(sessions)
        if not options["quiet"]:
            mix = " with injected faults" if faults else ""
            say(f"demo: a fake Browserbase on {fake.base_url}{mix}, {sessions} running sessions")
        async with SessionsAPI(fake.api_key, base_url=fake.base_url, retry=DEMO_RETRY) as api:
            listed = await api.list(status=SessionStatus.RUNNING)
            code = await release_ids(api, [session.id for session in listed], **options)
        if not options["quiet"] and not options["dry_run"]:
            left = sum(session["status"] == "RUNNING" for session in fake.sessions.values())
            say(
                f"demo: the server received {fake.received.total} requests"
                f" and holds {left} running sessions"
            )
    return code


async def release_ids(
    api: SessionsAPI,
    ids: list[str],
    *,
    concurrency: int,
    json_rows: bool,
    failed_out: str | None,
    dry_run: bool,
    quiet: bool,
    wait: bool,
    summary_prefix: str = "",
    already_ended: int = 0,
    listed: bool = False,
) -> int:
    """Release *ids* with a progress bar; return the exit code.

    *already_ended* counts the sessions of a ``--all`` listing that had ended, and were
    sent nothing: the summary says how many. *listed* says the ids come from the
    server's listing: each is released whatever characters it holds.

    Ctrl-C and SIGTERM stop it cleanly: the summary is said, and ``--failed-out`` holds
    the failed ids and those never answered, to resume with ``--from-file``. Until the
    end it holds every id, so that a run killed outright can be resumed too. A closed
    standard output stops nothing: the rows go nowhere, and the releases go on.
    """
    if dry_run:
        write_id_rows(Stdout(), [(session_id,) for session_id in ids])
        if not quiet:
            noun = "session" if len(ids) == 1 else "sessions"
            say(f"dry run: would release {len(ids)} {noun}")
        return EXIT_OK
    # Written first: a path we cannot write is said before anything is released.
    failed_file = _open_to_resume(failed_out, ids) if failed_out is not None else None
    tally = Tally(len(ids), quiet=quiet, json_rows=json_rows)
    before = api.flow_stats()
    interrupted = False
    with tally, failed_file or contextlib.nullcontext():
        try:
            # Each result is counted the moment it is made (release_iter would hand it over
            # through a queue, whose results a cancellation drops: released, but unsaid).
            release = api._release_listed if listed else api.release_many
            await release(ids, concurrency=concurrency, wait=wait, on_result=tally.add)
        except asyncio.CancelledError:
            # Ctrl-C or SIGTERM: what was in flight is cancelled; say what was done.
            interrupted = True
        if failed_file is not None:
            _rewrite(failed_file, tally.to_resume(ids))
    stats = api.flow_stats().since(before)
    summary = tally.summary(interrupted=interrupted, stats=stats, already_ended=already_ended)
    tally.say(summary_prefix + summary)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if tally.failed else EXIT_OK


def _stoppable(wait: Callable[[], _T]) -> _T:
    """``wait()``, which SIGTERM and Ctrl-C interrupt.

    The wait may last for ever (a read of a pipe whose producer never closes it, a FIFO
    with no writer; a reader who does not read), outside the event loop or blocking it: the
    loop's own handlers would run only after it. So it runs in a thread of its own, and this
    one looks every `STOP_POLL` seconds, each signal raising at once, here. (Waited in this
    thread, a signal that landed just before the wait's blocking call entered the kernel did
    not interrupt it: its handler was to run once the call returned, which was never, and a
    SIGTERM was lost.) After a signal the wait's thread is left blocked, a daemon: the
    command exits.

    Raises:
        _Stopped: SIGTERM or Ctrl-C arrived meanwhile, with the exit code to give (an
            ignored Ctrl-C, as a job started in the background has it, stays ignored).
        Exception: What ``wait()`` raised.
    """
    outcome: list[Callable[[], _T]] = []
    done = threading.Event()

    def run() -> None:
        try:
            value = wait()
        except BaseException as exc:  # handed over to the caller, whatever it is
            caught = exc

            def outcome_raises() -> _T:
                raise caught

            outcome.append(outcome_raises)
        else:
            outcome.append(lambda: value)
        finally:
            done.set()

    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(_SIGNAL_CODES[signal.Signals(signum)])

    previous = {}
    try:
        for number in _SIGNAL_CODES:
            if signal.getsignal(number) is not signal.SIG_IGN:
                previous[number] = signal.signal(number, stop)
    except ValueError:  # not the main thread: signals are not ours to take
        pass
    try:
        threading.Thread(target=run, name="browserbase_async-wait", daemon=True).start()
        while not done.wait(STOP_POLL):
            pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return outcome[0]()


def _read_all(fd: int) -> bytes:
    """Every byte of the file descriptor *fd*, to its end.

    Raises:
        OSError: The read failed (a directory, say).
    """
    chunks = []
    while chunk := os.read(fd, READ_CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_ids(source: str) -> list[str]:
    # utf-8-sig: a byte order mark (Notepad, PowerShell) is not part of the first id;
    # splitlines and strip take CRLF line ends.
    try:
        # Read by file descriptor, no buffered file object: the read runs in a thread that a
        # signal leaves blocked, and a buffered stdin it held locked would crash the
        # interpreter's shutdown ("could not acquire lock ... possibly due to daemon threads").
        if source == "-":
            if sys.stdin is None:  # `<&-`
                raise ConfigError("cannot read ids from standard input: it is closed")
            try:
                data = _read_all(sys.stdin.fileno())
            except io.UnsupportedOperation:  # not a file (click's test runner): read it whole
                data = sys.stdin.buffer.read()
        else:
            fd = os.open(source, os.O_RDONLY)
            try:
                data = _read_all(fd)
            finally:
                os.close(fd)
        lines = data.decode("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read ids from {source!r}: {_reason(exc)}") from None
    stripped = (line.strip() for line in lines)
    return [line for line in stripped if line and not line.startswith(COMMENT)]


def _open_to_resume(path: str, ids: list[str]) -> IO[str]:
    """Open ``--failed-out`` and write every id in it: none is confirmed yet, and a run
    killed outright (SIGKILL, a lost machine) leaves a file that resumes all of it."""
    file = _open_for_writing(path)
    try:
        _rewrite(file, dict.fromkeys(ids))
    except OSError as exc:  # a full disk
        with contextlib.suppress(OSError):  # closing flushes, and fails, again
            file.close()
        raise ConfigError(f"cannot write {path!r}: {_reason(exc)}") from None
    return file


def _open_for_writing(path: str) -> IO[str]:
    try:
        # Not blocking: a FIFO that no one reads is refused at once (ENXIO), where a plain
        # open waited for a reader for ever, deaf to the signals (the loop's thread held).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o666)
        os.set_blocking(fd, True)
        return open(fd, "w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path!r}: {_reason(exc)}") from None


def _rewrite(file: IO[str], ids: Iterable[str]) -> None:
    # One line an id, whatever the id: a line break in one must not add an id to resume.
    # Made before the file is cut: a second Ctrl-C meanwhile (a KeyboardInterrupt at any
    # line) leaves the file as it was, never cut short.
    text = "".join(id_field(session_id) + "\n" for session_id in ids)
    file.seek(0)
    file.truncate()
    file.write(text)
    file.flush()


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
