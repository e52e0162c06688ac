"""Releasing many sessions at once: a fixed pool of workers, flow control, honest results.

The pool pulls ids lazily from any iterable or async iterable, so a million
ids cost the memory of a few. Every request of a run, first attempts,
retries and ``retrieve`` checks alike, first takes a permit from the run's
`FlowControl`:

- at most ``limit`` permits are out, and ``limit`` never exceeds the
  run's ``concurrency``;
- a 429 halves ``limit`` (once per round trip, not once per refused
  request), each success adds ``1 / limit`` to it (additive increase,
  multiplicative decrease, as TCP does);
- an answer that asks for a wait (``Retry-After``, ``retry-after-ms``)
  closes one gate for the whole run until then; the workers held at the gate
  then resume with a little jitter, so they do not all arrive at once.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from typing import Final, TypeAlias

import attrs

from ._models import Session
from ._retry import retry_after
from ._transport import Response

SessionIds: TypeAlias = Iterable[str] | AsyncIterable[str]
ReleaseOne: TypeAlias = Callable[[object, "FlowControl"], Awaitable["ReleaseResult"]]

STREAM_MEMO_SIZE: Final = 4096
"""Finished ids that `release_iter` remembers, to report a repeat without a new request."""
WORKER_NAME: Final = "browserbase_async-worker-"
"""Prefix of the names of a run's worker tasks."""
MAX_RESUME_JITTER: Final = 1.0
"""Seconds, at most, over which workers held at the pause gate are spread on resuming."""


@attrs.frozen
class ReleaseResult:
    """What became of one session of a bulk release.

    Attributes:
        session_id: The id as it was given.
        session: The session, in the state the API last reported, when released.
        error: Why it failed: a `BrowserbaseError`, or the `ValueError` of an
            invalid id (which was sent to no one).
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
    """

    results: list[ReleaseResult]

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


@attrs.define
class FlowControl:
    """The permits of one bulk run: an AIMD window and a pause gate.

    Args:
        concurrency: The most requests in flight, ever.
        max_retry_after: The longest server-asked pause honoured, in seconds.
    """

    concurrency: int
    max_retry_after: float
    limit: float = attrs.field(init=False)
    in_flight: int = attrs.field(default=0, init=False)
    peak_in_flight: int = attrs.field(default=0, init=False)
    _tickets: int = attrs.field(default=0, init=False)
    _last_decrease: int = attrs.field(default=0, init=False)
    _waiters: list[asyncio.Future[None]] = attrs.field(factory=list, init=False)
    _gate: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _reopen: asyncio.TimerHandle | None = attrs.field(default=None, init=False)
    _paused_until: float = attrs.field(default=0.0, init=False)
    _jitter: float = attrs.field(default=0.0, init=False)

    def __attrs_post_init__(self) -> None:
        self.limit = float(self.concurrency)
        self._gate.set()

    def try_acquire(self) -> int | None:
        """Take a permit if one is free at once; return its ticket, else ``None``."""
        if self.in_flight < int(self.limit) and self._gate.is_set() and not self._waiters:
            return self._take()
        return None

    async def acquire(self) -> int:
        """Wait for a permit; return its ticket, to hand back to `release`."""
        while True:
            if not self._gate.is_set():
                await self._gate.wait()
                await asyncio.sleep(random.uniform(0.0, self._jitter))
                continue
            if self.in_flight < int(self.limit):
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._take()

    def _take(self) -> int:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._tickets += 1
        return self._tickets

    def release(self, ticket: int, response: Response | None) -> None:
        """Hand back a permit, learning from the answer (``None``: no answer came)."""
        self.in_flight -= 1
        if response is not None:
            if response.status == 429:
                # Only requests sent after the last decrease may decrease
                # again: one refused round trip halves the window once.
                if ticket > self._last_decrease:
                    self.limit = max(1.0, self.limit / 2)
                    self._last_decrease = self._tickets
            elif response.status < 300:
                self.limit = min(float(self.concurrency), self.limit + 1.0 / self.limit)
            if response.status >= 400:
                asked = retry_after(response.headers)
                if asked is not None and 0 < asked <= self.max_retry_after:
                    self._pause(asked)
        self._wake()

    def _pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        if until <= self._paused_until:
            return
        self._paused_until = until
        self._jitter = min(MAX_RESUME_JITTER, seconds / 4)
        self._gate.clear()
        if self._reopen is not None:
            self._reopen.cancel()
        self._reopen = loop.call_at(until, self._open)

    def _open(self) -> None:
        self._reopen = None
        self._gate.set()

    def _wake(self) -> None:
        free = int(self.limit) - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def close(self) -> None:
        """Drop the pending reopen timer, if any."""
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None


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
        if self.exhausted:
            return None
        assert self._async is not None
        # An async generator may not be entered by two workers at once.
        async with self._lock:
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

    An id maps to its result once done; while in flight, to `_IN_FLIGHT`, or to
    a future made only when a repeat comes to wait for it (repeats are rare,
    futures are not free).
    """

    def __init__(self, size: int | None) -> None:
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def lookup(self, session_id: str) -> ReleaseResult | asyncio.Future[ReleaseResult] | None:
        """A repeat's result, or a future of it; ``None`` (and the id claimed) when it is new."""
        entry = self._entries.get(session_id)
        if entry is None:
            self._entries[session_id] = _IN_FLIGHT
            if self._size is not None and len(self._entries) > self._size:
                oldest_id, oldest = next(iter(self._entries.items()))
                if isinstance(oldest, ReleaseResult):
                    del self._entries[oldest_id]
            return None
        if isinstance(entry, ReleaseResult):
            return entry
        if entry is _IN_FLIGHT:
            entry = self._entries[session_id] = asyncio.get_running_loop().create_future()
        assert isinstance(entry, asyncio.Future)
        return entry

    def settle(self, session_id: str, result: ReleaseResult) -> None:
        entry = self._entries.get(session_id)
        self._entries[session_id] = result
        if isinstance(entry, asyncio.Future) and not entry.done():
            entry.set_result(result)

    def abandon(self, session_id: str, exc: BaseException) -> None:
        """Forget *session_id*, passing *exc* on to any repeat waiting for it."""
        entry = self._entries.pop(session_id, None)
        if not isinstance(entry, asyncio.Future) or entry.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            entry.cancel()
        else:
            entry.set_exception(exc)
            entry.exception()  # marked as retrieved: the worker that raised reports it


_IN_FLIGHT: Final = object()
_Entry: TypeAlias = "ReleaseResult | asyncio.Future[ReleaseResult] | object"


Emit: TypeAlias = Callable[[int, ReleaseResult], Awaitable[None] | None]
"""Receives a result; what it returns, if anything, is awaited before the worker goes on."""


async def drive(
    release_one: ReleaseOne,
    session_ids: SessionIds,
    emit: Emit,
    *,
    concurrency: int,
    max_retry_after: float,
    memo_size: int | None,
) -> None:
    """Release every id of *session_ids*, handing each ``(position, result)`` to *emit*.

    Args:
        release_one: Releases one id through a flow; never raises but for
            cancellation.
        session_ids: The ids, read lazily.
        emit: Receives each result as it finishes.
        concurrency: Workers, and the most requests in flight.
        max_retry_after: The longest server-asked pause honoured, in seconds.
        memo_size: Finished ids remembered to answer repeats; ``None``: all.

    Raises:
        ValueError: *concurrency* is below 1.
        TypeError: *session_ids* is a single string.
        Exception: Whatever the input itself raised, once the started releases are done.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
    source = _Source(session_ids)
    flow = FlowControl(concurrency, max_retry_after)
    memo = _Memo(memo_size)
    errors: list[BaseException] = []

    async def worker() -> None:
        try:
            while not errors:
                # A failure of the input itself lands below too: the releases in flight
                # finish, then it is raised.
                item = await source.next() if source.is_async else source.take()
                if item is None:
                    return
                position, session_id = item
                done = await _release_once(release_one, session_id, flow, memo)
                if (waiting := emit(position, done)) is not None:
                    await waiting
        except Exception as exc:  # the input's, the consumer's or ours: never hang the run
            errors.append(exc)
            source.exhausted = True

    workers = [asyncio.create_task(worker(), name=f"{WORKER_NAME}{n}") for n in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        flow.close()
    if errors:
        raise errors[0]


async def stream(
    release_one: ReleaseOne,
    session_ids: SessionIds,
    *,
    concurrency: int,
    max_retry_after: float,
    memo_size: int | None,
) -> AsyncGenerator[tuple[int, ReleaseResult], None]:
    """`drive`, as an async generator of ``(position, result)`` in completion order.

    Closing the generator cancels the run.
    """
    # Bounded, so that a slow consumer slows the workers instead of piling up results.
    finished: asyncio.Queue[tuple[int, ReleaseResult] | None] = asyncio.Queue(max(concurrency, 1))
    failure: list[Exception] = []

    def emit(position: int, result: ReleaseResult) -> Awaitable[None]:
        return finished.put((position, result))

    async def run_then_end() -> None:
        try:
            await drive(
                release_one,
                session_ids,
                emit,
                concurrency=concurrency,
                max_retry_after=max_retry_after,
                memo_size=memo_size,
            )
        except Exception as exc:
            failure.append(exc)
        await finished.put(None)

    runner = asyncio.create_task(run_then_end(), name="browserbase_async-run")
    try:
        while (item := await finished.get()) is not None:
            yield item
        if failure:
            raise failure[0]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def _release_once(
    release_one: ReleaseOne, session_id: object, flow: FlowControl, memo: _Memo
) -> ReleaseResult:
    if not isinstance(session_id, str):
        return await release_one(session_id, flow)
    known = memo.lookup(session_id)
    if isinstance(known, ReleaseResult):
        return known
    if known is not None:
        return await asyncio.shield(known)
    try:
        result = await release_one(session_id, flow)
    except BaseException as exc:
        # Never leave a repeat of this id waiting for a result that will not come.
        memo.abandon(session_id, exc)
        raise
    memo.settle(session_id, result)
    return result
