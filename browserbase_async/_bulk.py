"""Releasing many sessions at once: a fixed pool of workers, honest results.

The pool pulls ids lazily from any iterable or async iterable, so a million
ids cost the memory of a few. Its ``concurrency`` workers each send one
request at a time, so a run never has more in flight; every request also
takes its permit from the client's flow control (`_flow`), like any other
call of the client.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
from collections import OrderedDict
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final, TypeAlias

import attrs

from ._config import check_session_id
from ._errors import BrowserbaseError, ClientClosedError, client_closed, printable
from ._flow import FlowStats
from ._models import Session

logger: Final = logging.getLogger("browserbase_async")

SessionIds: TypeAlias = Iterable[str | Session] | AsyncIterable[str | Session]
"""Session ids, or sessions (their ``id`` is taken)."""
Age: TypeAlias = float | timedelta
"""How old a session must be: seconds, or a `timedelta`."""
Where: TypeAlias = Callable[[Session], object]
"""A predicate on a session: keep it when it returns something true."""
ReleaseOne: TypeAlias = Callable[[object], Awaitable["ReleaseResult"]]
OnClose: TypeAlias = Callable[[Callable[[], object]], Callable[[], None]]
"""Registers what to call when the client closes; returns what forgets it (`Requester.on_close`)."""

STREAM_MEMO_SIZE: Final = 4096
"""Finished ids that `release_iter` remembers, to report a repeat without a new request."""
WORKER_NAME: Final = "browserbase_async-worker-"
"""Prefix of the names of a run's worker tasks."""


@attrs.frozen
class ReleaseResult:
    """What became of one session of a bulk release.

    Attributes:
        session_id: The id as it was given.
        session: The session, in the state the API last reported, when released
            (``None`` if neither the release's 2xx answer nor a retrieve could be read).
        error: Why it failed: a `BrowserbaseError`, the `ValueError` of an
            invalid id (which was sent to no one), the closed-client
            `RuntimeError`, or whatever else one session's release raised.
        attempts: HTTP attempts made for the release (0 for an invalid id).
    """

    session_id: str
    session: Session | None
    error: Exception | None
    attempts: int

    @property
    def ok(self) -> bool:
        """Whether the session was released (or had already ended)."""
        return self.error is None


@attrs.frozen
class BulkReleaseReport:
    """The outcome of `SessionsAPI.release_many`: one result per input id, in input order.

    A repeated id is released once, and its result stands at each of its positions.

    Attributes:
        results: One `ReleaseResult` per input id, in input order.
        stats: The client's flow figures over the run (requests, 429s,
            pauses, the window at its end) and its ``elapsed`` seconds; other
            calls made through the same client meanwhile count in them too.
    """

    results: list[ReleaseResult]
    stats: FlowStats | None = None
    already_ended: list[Session] = attrs.field(factory=list)
    """`release_all`: listed sessions already in a terminal state; nothing was sent to them."""
    age_unknown: list[Session] = attrs.field(factory=list)
    """`release_all` with *older_than*: listed sessions whose age could not be told
    (no ``startedAt``); skipped, with a warning."""

    @property
    def released(self) -> list[ReleaseResult]:
        """The results that succeeded, in input order."""
        return [result for result in self.results if result.ok]

    @property
    def failed(self) -> list[ReleaseResult]:
        """The results that failed, in input order."""
        return [result for result in self.results if not result.ok]

    @property
    def ok(self) -> bool:
        """Whether every session was released."""
        return all(result.ok for result in self.results)


class BulkReleaseAborted(BrowserbaseError):
    """A bulk release stopped because its input or its ``on_result`` callback raised.

    (Or because the client was closed under it: the cause is then the
    closed-client `RuntimeError`.) The run stopped taking ids and let the
    releases already sent finish: no release that was sent goes unreported.
    The original exception is the ``__cause__``.

    Attributes:
        report: Every session tried before the stop, in input order (in
            ``release_iter``, whose results were all yielded already, it is empty).
    """

    report: BulkReleaseReport

    def __init__(
        self, report: BulkReleaseReport, cause: BaseException, *, yielded: int | None = None
    ) -> None:
        """Say what stopped the run, and where its results are.

        Args:
            report: The sessions tried, in input order.
            cause: What the input, the callback or the close raised.
            yielded: For ``release_iter``: the results it yielded before the stop (its
                *report* is empty).
        """
        if yielded is None:
            raised_by = "its input, its on_result callback, or a close of the client"
            results = f"the {len(report.results)} sessions tried are in .report"
        else:
            raised_by = "its input or a close of the client"
            results = f"all {yielded} results of the run were yielded before it"
        super().__init__(
            f"the bulk release stopped on {type(cause).__name__} ({cause}), raised by "
            f"{raised_by}; {results}, the releases sent all finished"
        )
        self.report = report


class RunAborted(Exception):
    """A run's input or consumer raised *cause*: the run stopped (internal to the bulk calls)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause


def check_concurrency(concurrency: int) -> None:
    """Refuse a pool of fewer than one worker, or a count that is not a whole number.

    Raises:
        ValueError: *concurrency* is not an ``int`` (a ``bool`` or a ``float``
            is not one), or is below 1.
    """
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, a whole number; got {concurrency!r}")


def check_age(older_than: Age | None) -> float | None:
    """Return *older_than* in seconds, checked.

    Raises:
        ValueError: It is negative, NaN, or neither a number nor a `timedelta`.
    """
    if older_than is None:
        return None
    if isinstance(older_than, timedelta):
        seconds = older_than.total_seconds()
    elif isinstance(older_than, int | float) and not isinstance(older_than, bool):
        seconds = float(older_than)
    else:
        raise ValueError(
            f"older_than must be seconds or a timedelta, got {type(older_than).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"older_than must be 0 seconds or more, got {older_than!r} (finite)")
    return seconds


def check_where(where: object) -> None:
    """Refuse a *where* that cannot be called, or that is async.

    Raises:
        ValueError: *where* is neither ``None`` nor callable, or is an async function
            (its answer, a coroutine, would be true for every session).
    """
    if where is not None and not callable(where):
        raise ValueError(f"where must be a callable taking a Session, got {where!r}")
    if inspect.iscoroutinefunction(where):
        raise ValueError(_ASYNC_WHERE.format("where must be a plain function, not an async one"))


def check_on_result(on_result: object) -> None:
    """Refuse an async *on_result*, which would never run.

    Raises:
        ValueError: *on_result* is an async function: nothing would await its coroutines.
    """
    if inspect.iscoroutinefunction(on_result):
        raise ValueError(
            "on_result must be a plain function, not an async one: it is called, not "
            "awaited, and its coroutines would never run"
        )


def refuse_awaitable(answer: object) -> None:
    """Refuse what an *on_result* callback answered, if it is awaitable (it would never run).

    Raises:
        TypeError: *answer* is awaitable (it is closed first, when a coroutine).
    """
    if _awaitable_dropped(answer):
        raise TypeError(
            "on_result must not answer with an awaitable: it is called, not awaited, "
            "and what it answers would never run"
        )


def _awaitable_dropped(answer: object) -> bool:
    """Whether a callback's *answer* is awaitable, which nothing will await (a coroutine is
    closed, so that it does not warn)."""
    if not inspect.isawaitable(answer):
        return False
    if inspect.iscoroutine(answer):
        answer.close()
    return True


_ASYNC_WHERE: Final = (
    "{}: its answer, a coroutine, is true for every session, so that every listed session "
    "would be released"
)


def session_age(session: Session, now: datetime) -> float | None:
    """Seconds since *session* started; ``None`` when its ``started_at`` could not be read."""
    if session.started_at is None:
        return None
    return (now - session.started_at).total_seconds()


def clock_offset(headers: Mapping[str, str], received: datetime) -> float:
    """Seconds by which the server's clock is ahead of ours, from an answer's ``Date``.

    *received* is when the answer arrived, by our UTC clock. ``Date`` is whole
    seconds, so an offset within a second of zero is taken as none; without a
    readable ``Date``, the offset is 0.
    """
    value = headers.get("Date")
    try:
        sent = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        sent = None
    if sent is None or sent.tzinfo is None:
        return 0.0
    # The server's clock read somewhere in [sent, sent + 1 s): take the middle.
    offset = (sent - received).total_seconds() + 0.5
    try:
        # A date at the calendar's edge (year 9999 west of UTC, year 1 east of it) is no
        # clock: the server's now, a day on, would not even be a datetime.
        received + timedelta(seconds=offset) + _CALENDAR_SLACK
        received + timedelta(seconds=offset) - _CALENDAR_SLACK
    except OverflowError:
        return 0.0
    return offset if abs(offset) > 1.0 else 0.0


_CALENDAR_SLACK: Final = timedelta(days=1)


@attrs.frozen
class Selection:
    """A listing sorted for a release: what to release, and what is left alone and why."""

    chosen: list[Session]
    already_ended: list[Session]
    age_unknown: list[Session]


def sort_out(
    sessions: Iterable[Session], *, older_than: float | None, where: Where | None, now: datetime
) -> Selection:
    """Sort *sessions*: those to release, those already ended, those of unknown age.

    A session is chosen when it is not in a terminal state, is at least
    *older_than* seconds old at *now* (by the server's clock, see
    `clock_offset`), and *where* holds for it. A session without
    ``started_at`` cannot be told old enough: with *older_than*, it is skipped,
    and a warning says how many were. A session listed twice is sorted once, as
    first listed.

    Raises:
        ValueError: *where* answered with an awaitable (an async predicate's
            coroutine), which cannot tell one session from another.
    """
    chosen: list[Session] = []
    ended: list[Session] = []
    unknown: list[Session] = []
    seen: set[str] = set()
    for session in sessions:
        # A listing taken while sessions change may hold one twice: a report that counted
        # both would say two were released (or had ended) where one was.
        if session.id in seen:
            continue
        seen.add(session.id)
        if session.is_terminal:
            ended.append(session)
            continue
        if older_than is not None:
            age = session_age(session, now)
            if age is None:  # a drifted session's startedAt, not read
                unknown.append(session)
                continue
            if age < older_than:
                continue
        if where is None:
            chosen.append(session)
            continue
        kept = where(session)
        if _awaitable_dropped(kept):
            raise ValueError(_ASYNC_WHERE.format("where must answer true or false"))
        if kept:
            chosen.append(session)
    if unknown:
        # The server's ids, with their control characters escaped: a log is read in a terminal.
        shown = ", ".join(printable(session.id) for session in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        logger.warning(
            "skipped %d session(s) whose age cannot be told (no startedAt): %s%s",
            len(unknown),
            shown,
            more,
        )
    return Selection(chosen, ended, unknown)


class _Source:
    """Hands out ``(position, id)`` pairs from the input, one at a time, lazily.

    A plain iterable is read with `take`, at no cost of a coroutine; an async
    one with `next`.
    """

    def __init__(self, session_ids: SessionIds) -> None:
        self._position = 0
        self._lock = asyncio.Lock()
        self._async: AsyncIterator[object] | None = None
        self._sync: Iterator[object] = iter(())
        if isinstance(session_ids, AsyncIterable):
            self._async = aiter(session_ids)
        elif isinstance(session_ids, str | bytes):
            raise TypeError("session_ids must be an iterable of ids, not a single str")
        else:
            self._sync = iter(session_ids)
        self.is_async = self._async is not None
        self.exhausted = False

    def take(self) -> tuple[int, object] | None:
        """The next pair of a plain iterable; ``None`` at its end."""
        if self.exhausted:
            return None
        return self._number(next(self._sync, _END))

    async def next(self) -> tuple[int, object] | None:
        """The next pair of an async iterable; ``None`` at its end."""
        assert self._async is not None
        # An async generator may not be entered by two workers at once.
        async with self._lock:
            if self.exhausted:
                # Checked in turn: it may have ended while this worker waited, and an
                # iterator read past its end may wait for ever (one over a queue that ends
                # on a sentinel).
                return None
            return self._number(await anext(self._async, _END))

    def _number(self, item: object) -> tuple[int, object] | None:
        if item is _END:
            self.exhausted = True
            return None
        position, self._position = self._position, self._position + 1
        return position, item


_END: Final = object()


class _Memo:
    """Ids being released or released already, so that a repeat is not sent twice.

    An id in flight maps to `_IN_FLIGHT`, or to a future made only when a
    repeat comes to wait for it (repeats are rare, futures are not free); a
    finished id maps to its result. With a *size*, the two together never hold
    more than *size* ids (unless more than that are in flight, which
    ``release_iter`` never lets be): the oldest results are forgotten first, even
    while an older id still hangs.
    """

    def __init__(self, size: int | None) -> None:
        self._size = size
        self._flying: dict[str, object] = {}
        self._done: dict[str, ReleaseResult] = {} if size is None else OrderedDict()

    def lookup(self, session_id: str) -> ReleaseResult | asyncio.Future[ReleaseResult] | None:
        """A repeat's result, or a future of it; ``None`` (and the id claimed) when it is new."""
        done = self._done.get(session_id)
        if done is not None:
            return done
        entry = self._flying.get(session_id)
        if entry is None:
            self._flying[session_id] = _IN_FLIGHT
            if self._size is not None:
                self._trim(self._size)
            return None
        if entry is _IN_FLIGHT:
            entry = self._flying[session_id] = asyncio.get_running_loop().create_future()
        assert isinstance(entry, asyncio.Future)
        return entry

    def _trim(self, size: int) -> None:
        done = self._done
        assert isinstance(done, OrderedDict)
        while done and len(done) + len(self._flying) > size:
            done.popitem(last=False)

    def __len__(self) -> int:
        return len(self._done) + len(self._flying)

    def settle(self, session_id: str, result: ReleaseResult) -> None:
        entry = self._flying.pop(session_id, None)
        self._done[session_id] = result
        if isinstance(entry, asyncio.Future) and not entry.done():
            entry.set_result(result)

    def abandon(self, session_id: str, exc: BaseException) -> None:
        """Forget *session_id*, passing *exc* on to any repeat waiting for it."""
        entry = self._flying.pop(session_id, None)
        if not isinstance(entry, asyncio.Future) or entry.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            entry.cancel()
        else:
            entry.set_exception(exc)
            entry.exception()  # marked as retrieved: the worker that raised reports it


_IN_FLIGHT: Final = object()


Emit: TypeAlias = Callable[[int, ReleaseResult], Awaitable[None] | None]
"""Receives a result; what it returns, if anything, is awaited before the worker goes on."""


async def drive(
    release_one: ReleaseOne,
    session_ids: SessionIds,
    emit: Emit,
    *,
    concurrency: int,
    memo_size: int | None,
    on_close: OnClose | None = None,
) -> None:
    """Release every id of *session_ids*, handing each ``(position, result)`` to *emit*.

    Args:
        release_one: Releases one id; never raises but for cancellation
            or a closed client.
        session_ids: The ids, read lazily.
        emit: Receives each result as it finishes.
        concurrency: The most workers, and requests in flight; never more
            workers than ids taken from the input (plus the one looking for the next).
        memo_size: Finished ids remembered to answer repeats; ``None``: all.
        on_close: Where to hear that the client closed: the run then stops
            taking ids at once, even from an input that hangs (as it does when
            the input or *emit* raised).

    Raises:
        ValueError: *concurrency* is below 1.
        TypeError: *session_ids* is a single string.
        RunAborted: The input or *emit* raised, or the client was closed (its
            ``cause``); raised once the releases already sent are done.
    """
    check_concurrency(concurrency)
    source = _Source(session_ids)
    memo = _Memo(memo_size)
    errors: list[BaseException] = []
    workers: list[asyncio.Task[None]] = []
    stopping = False
    taking: set[asyncio.Task[None]] = set()
    """Workers waiting on an async input: the ones a stop cuts."""
    cut: set[asyncio.Task[None]] = set()

    def spawn() -> None:
        workers.append(asyncio.create_task(worker(), name=f"{WORKER_NAME}{len(workers)}"))

    def stop_taking(cause: BaseException) -> None:
        # A worker releasing finishes (or ends as a close ends its request), and reports it;
        # one waiting on the input would wait as long as the input hangs, then release an
        # id taken after the stop.
        errors.append(cause)
        source.exhausted = True
        for task in taking:
            cut.add(task)
            task.cancel()

    def closed() -> None:
        if not errors:
            stop_taking(client_closed())

    async def worker() -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            while not errors:
                # A failure of the input itself lands below too: the releases in flight
                # finish, then it is raised.
                if source.is_async:
                    taking.add(me)
                    try:
                        item = await source.next()
                    finally:
                        taking.discard(me)
                else:
                    item = source.take()
                if item is None:
                    return
                if len(workers) < concurrency:
                    # One more worker per id in hand, up to concurrency: never a pool
                    # larger than the input.
                    spawn()
                position, session_id = item
                done = await _release_once(release_one, session_id, memo)
                if (waiting := emit(position, done)) is not None:
                    await waiting
                if done.error is not None and isinstance(done.error, ClientClosedError):
                    # Closed under the run: the ids left would each fail the same way.
                    raise done.error
        except Exception as exc:  # the input's, the consumer's, or a close: stop taking ids
            stop_taking(exc)
        except asyncio.CancelledError as exc:
            if stopping:
                raise
            if me in cut and me.uncancel() == 0:
                return  # cut by a stop, whose error the run raises
            # Not the run's own stop: the input or the consumer raised it (a future it
            # awaited was cancelled). A worker that ended quietly would leave the ids it had
            # yet to take out of a report that looks whole.
            stop_taking(exc)

    forget = on_close(closed) if on_close is not None else None
    spawn()
    try:
        # Workers spawn others only while they run: once all those seen are done, all are.
        # (`wait`, not an await of each: a cancellation then cancels every worker at once,
        # below, and none takes the place that another's leaves.)
        seen = 0
        while seen < len(workers):
            batch, seen = workers[seen:], len(workers)
            await asyncio.wait(batch)
    finally:
        stopping = True
        if forget is not None:
            forget()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if errors:
        raise RunAborted(errors[0]) from errors[0]


class Stream:
    """`drive`, as an async iterator of ``(position, result)`` in completion order.

    The run starts at the first `__anext__`; `aclose` cancels it. Not an async
    generator: the loop's shutdown closes every async generator still open, all at
    once, and would close this one while `release_iter`, which closes it, was
    closing it too ("aclose(): asynchronous generator is already running").
    """

    def __init__(
        self,
        release_one: ReleaseOne,
        session_ids: SessionIds,
        *,
        concurrency: int,
        memo_size: int | None,
        on_close: OnClose | None = None,
    ) -> None:
        # Bounded, so that a slow consumer slows the workers instead of piling up results.
        self._finished: asyncio.Queue[tuple[int, ReleaseResult] | None] = asyncio.Queue(
            max(concurrency, 1)
        )
        self._failure: list[Exception] = []
        self._run = functools.partial(
            drive,
            release_one,
            session_ids,
            self._emit,
            concurrency=concurrency,
            memo_size=memo_size,
            on_close=on_close,
        )
        self._runner: asyncio.Task[None] | None = None
        self._ended = False

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> tuple[int, ReleaseResult]:
        """The next result to finish.

        Raises:
            StopAsyncIteration: Every result was given.
            Exception: What the run raised (`RunAborted`), once every result was given.
        """
        if self._ended:
            raise StopAsyncIteration
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_then_end(), name="browserbase_async-run")
        item = await self._finished.get()
        if item is None:
            self._ended = True
            if self._failure:
                raise self._failure[0]
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Cancel the run, and wait until its workers are gone."""
        self._ended = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    def _emit(self, position: int, result: ReleaseResult) -> Awaitable[None]:
        return self._finished.put((position, result))

    async def _run_then_end(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            self._failure.append(exc)
        await self._finished.put(None)


async def _release_once(release_one: ReleaseOne, session_id: object, memo: _Memo) -> ReleaseResult:
    if not isinstance(session_id, str):
        if not isinstance(session_id, Session):
            return await _release_safely(release_one, session_id)
        session_id = session_id.id
    known = memo.lookup(session_id)
    if isinstance(known, ReleaseResult):
        # A turn of the loop, as for any result made without a request: an input of
        # repeats would otherwise hold the loop to its end, deaf to a cancellation or a close.
        await asyncio.sleep(0)
        return known
    if known is not None:
        return await asyncio.shield(known)
    try:
        result = await release_one(session_id)
    except Exception as exc:  # one session's failure never aborts the run
        result = ReleaseResult(session_id, None, exc, 0)
    except BaseException as exc:
        # Never leave a repeat of this id waiting for a result that will not come.
        memo.abandon(session_id, exc)
        raise
    memo.settle(session_id, result)
    return result


async def _release_safely(release_one: ReleaseOne, session_id: object) -> ReleaseResult:
    """*release_one*, whose exception, of any class, is that session's failed result."""
    try:
        return await release_one(session_id)
    except Exception as exc:  # one session's failure never aborts the run
        return ReleaseResult(_as_text(session_id), None, exc, 0)


def _as_text(session_id: object) -> str:
    try:
        return check_session_id(session_id)
    except ValueError:
        pass
    try:
        return str(session_id)[:200]
    except Exception:  # an id that cannot even be shown is still one session's failure
        return f"<{type(session_id).__name__}>"
