"""SessionsAPI: the public surface of the client.

Each method checks its arguments and hands over: the request path (a permit
from the flow control, an attempt, retries, the decoded answer) is
`_request`; what a release means (its checks, waits and the guard's shielded
release) is `_release`; creates and ``session()`` blocks (waiting for a free
browser, no lost create) are `_lifecycle`'s; bulk runs are `_bulk`'s workers
on that same path.
"""

from __future__ import annotations

import contextlib
import os
import ssl as _ssl
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import attrs

from . import _bulk
from ._bulk import BulkReleaseAborted, BulkReleaseReport, ReleaseResult, SessionIds
from ._config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    USE_CLIENT_DEFAULT,
    Timeout,
    check_positive_int,
    check_seconds,
    check_session_id,
    check_timeout,
    redact_url,
    resolve_api_key,
    resolve_base_url,
    resolve_proxy,
    resolve_ssl,
)
from ._converter import structure_session, structure_sessions
from ._flow import FlowControl, FlowStats
from ._lifecycle import DEFAULT_SESSION_WAIT_FOR_SLOT, Lifecycle, create_fields
from ._models import CreatedSession, Region, Session, SessionStatus, bare_session
from ._release import (
    CLOSE_RELEASE_TIMEOUT,
    DEFAULT_GUARD_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    REQUEST_RELEASE,
    UPDATE_STATUSES,
    Releaser,
)
from ._request import Call, Requester
from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, Transport

if TYPE_CHECKING:
    from types import TracebackType


class SessionsAPI:
    """An async client for the Browserbase sessions API.

    Use it as an ``async with`` block, or call `aclose` when done. One client
    may serve many concurrent calls; they share its connections, its retry
    budget and its flow control: one adaptive window of requests in flight
    and one pause gate, whatever the calls (see `flow_stats`).

    Args:
        api_key: The key sent as ``X-BB-API-Key``; else ``BROWSERBASE_API_KEY``.
        base_url: The API's root; else ``BROWSERBASE_BASE_URL``, else the public API.
        project_id: The ``projectId`` sent with updates when a call gives none.
        timeout: Seconds allowed for one attempt; ``None`` for no limit.
        retry: The retry policy; ``None`` for `RetryPolicy` defaults.
        max_connections: The most requests in flight, from all calls together:
            the flow control's largest window, and the size of the connection
            pool of the client's own ``aiohttp.ClientSession``.
        http_session: An ``aiohttp.ClientSession`` to use instead of our own;
            it is never closed by the client. One with ``trust_env=True`` would send
            a plain ``http`` base URL through ``HTTP_PROXY``, the key in clear: that
            is refused with `ValueError` (see the Networks page of the docs).
        allow_insecure_http: Accept an ``http://`` base URL to a host that is
            not loopback (the key then travels in clear text).
        max_response_bytes: The longest answer read; a longer one (or one
            without end) fails with `APIResponseValidationError` as soon as it
            passes the limit, and is not retried.
        proxy: The proxy to reach an ``https`` base URL through (``http://host:port``);
            else ``HTTPS_PROXY`` (or ``ALL_PROXY``) from the environment, unless
            ``NO_PROXY`` names the API's host. The proxy sees only a tunnel, never
            the key; a plain ``http`` base URL (a loopback fake) is never proxied.
        ssl: What verifies the server's certificate: an `ssl.SSLContext`, or the
            path of a CA bundle (a private CA); ``None``: the system's trust.
            A certificate that fails verification raises `APICertificateError`,
            never retried.

    Raises:
        ValueError: No API key or one with a control character, an unsafe or
            malformed base URL or proxy, an unreadable CA bundle, a bad number, or
            an ``http_session`` with ``trust_env=True`` that would send a plain
            ``http`` base URL through a proxy.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        project_id: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        http_session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        proxy: str | None = None,
        ssl: _ssl.SSLContext | str | os.PathLike[str] | None = None,
    ) -> None:
        resolve_api_key(api_key)  # a missing key is said first; kept below, in no local
        url = resolve_base_url(base_url, allow_insecure_http=allow_insecure_http)
        check_timeout(timeout)
        check_positive_int("max_connections", max_connections)
        check_positive_int("max_response_bytes", max_response_bytes)
        self.base_url: Final = redact_url(url)
        """The API's root, without the credentials it may hold."""
        self.project_id: Final = project_id
        self.timeout: Final = timeout
        self.retry: Final = retry if retry is not None else DEFAULT_RETRY_POLICY
        self._flow = FlowControl(max_connections, self.retry.max_retry_after, self.retry.max_delay)
        # The key is read last, into the transport: no local of a frame that may still raise
        # holds it (a traceback's locals, an error tracker's, would show it).
        self._transport = Transport(
            url,
            resolve_api_key(api_key),
            timeout,
            max_connections,
            http_session,
            max_response_bytes,
            proxy=resolve_proxy(proxy, url),
            ssl=resolve_ssl(ssl),
        )
        self._transport.check_env_proxy()
        self._requester = Requester(self._transport, self._flow, self.retry)
        self._releaser = Releaser(self._requester, project_id)
        self._clock_offset = 0.0
        self._lifecycle = Lifecycle(self._releaser)

    def __repr__(self) -> str:
        requester = getattr(self, "_requester", None)
        if requester is None:
            # Its __init__ raised (a traceback's locals show it so): nothing more to say.
            return "<SessionsAPI, not made>"
        state = "closed" if requester.closed else "open"
        return f"<SessionsAPI base_url={self.base_url!r} project_id={self.project_id!r} {state}>"

    async def __aenter__(self) -> SessionsAPI:
        self._requester.check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release what open guards hold, then close; a caller's ``http_session`` stays open.

        First the sessions that open guards (`guard`) still hold are released,
        each within `CLOSE_RELEASE_TIMEOUT` seconds (those of guards entered
        while the close runs too), so that a program stopped
        by Ctrl-C leaves nothing running. So are those of creates whose outcome
        is unknown (on the wire, or looking their tag up): each such create is
        cut at once and ends with the closed-client `RuntimeError`, its tag is
        looked up and what it made released, within the same bound; no create
        is sent after the close began. Then calls still waiting for a place
        in the window, or sleeping in a backoff or a ``wait=True`` poll, end with
        the closed-client `RuntimeError`, and those on the wire (ours, on a
        caller's ``http_session`` too) with `APIConnectionError`, within a loop
        turn or two. Calling it again does nothing. A closed client refuses
        further calls.
        """
        # First: no create may take a browser that the releases below free, nor be sent at
        # all; those whose outcome is unknown are cut, and settled while the guards release.
        settling = self._lifecycle.close(CLOSE_RELEASE_TIMEOUT)
        try:
            if not self._requester.closed:
                try:
                    await self._releaser.release_held(CLOSE_RELEASE_TIMEOUT)
                finally:
                    await self._lifecycle.settled(settling)
                    # A guard entered while the creates settled holds a session too.
                    await self._releaser.release_held(CLOSE_RELEASE_TIMEOUT)
        finally:
            self._requester.close()
            self._flow.close()
            await self._transport.aclose()

    def flow_stats(self) -> FlowStats:
        """A snapshot of the client's flow control: its window, and what it has seen.

        Returns:
            The window and the requests in flight now; the requests sent,
            429s received, and server-asked pauses (with their seconds) since
            the client was made.
        """
        return self._flow.stats()

    def __del__(self) -> None:
        transport = getattr(self, "_transport", None)
        if transport is not None and transport.owns_open_session():
            warnings.warn(
                f"{self!r} was not closed: use 'async with' or 'await api.aclose()'",
                ResourceWarning,
                stacklevel=1,
            )

    # -- single calls ---------------------------------------------------------

    async def update(
        self,
        session_id: str | Session,
        *,
        status: str = REQUEST_RELEASE,
        project_id: str | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Session:
        """Update a session: its status (``REQUEST_RELEASE`` ends it), or other fields.

        Args:
            session_id: The session's id, or the session.
            status: The new status: ``"REQUEST_RELEASE"``.
            project_id: Sent as ``projectId``; else the client's, else none.
            extra_body: More fields of the request body, as the API spells them
                (camelCase), for mutable fields this client does not name yet.
            timeout: Seconds allowed for each attempt of this call, instead of
                the client's; ``None`` for no limit.

        Returns:
            The session as the API answered (fields the model does not know are ignored).

        Raises:
            ValueError: A bad id, status, timeout or *extra_body* (not a mapping,
                a key that collides with ``status`` or ``projectId``, a value
                that is not JSON), before any request.
            APIStatusError: The API refused (a subclass per status).
            APIConnectionError: No answer, after the retries.
            APIResponseValidationError: The answer is not a Session.
        """
        if status not in UPDATE_STATUSES:
            raise ValueError(f"status must be one of {sorted(UPDATE_STATUSES)}, got {status!r}")
        check_timeout(timeout)
        call = self._releaser.update_call(
            check_session_id(session_id), project_id, status, extra_body, timeout
        )
        return structure_session(await self._requester.call(call))

    async def release(
        self,
        session_id: str | Session,
        *,
        project_id: str | None = None,
        wait: bool = False,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Session:
        """Release a session (``REQUEST_RELEASE``), so that it stops costing.

        A refusal because the session had already ended (for instance a retry
        whose first attempt was processed but whose answer was lost) is checked
        with `retrieve`: if the session is over, that counts as released. A 2xx
        is the server's yes: if its body is not a Session, the session is
        retrieved; if that cannot be read either, the release still stands and
        the `Session` returned holds only the id and the status
        ``"REQUEST_RELEASE"`` that the server accepted (the parse error is logged).

        Args:
            session_id: The session's id, or the session.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Poll `retrieve` until the session is in a terminal state, at
                the polls' own pace (0.25 s growing to 2 s); a poll that fails
                for a reason that may pass is tried again until *wait_timeout*,
                and a 404 means the session ended (it is returned as last seen).
            wait_timeout: Seconds to wait for it, with *wait*.
            timeout: Seconds allowed for each attempt of this call (the update,
                its checks and polls), instead of the client's; ``None``: no limit.

        Returns:
            The session; in a terminal state when *wait* is true.

        Raises:
            ValueError: A bad id, timeout or *wait_timeout*, before any request.
            RuntimeError: The client is closed (or closes meanwhile), or belongs
                to another event loop.
            APITimeoutError: With *wait*, the session did not end in time.
            APIStatusError: The API refused (a subclass per status).
            APIConnectionError: No answer, after the retries.
            APIResponseValidationError: The answer is not a Session.
        """
        check_timeout(timeout)
        if wait_timeout != DEFAULT_WAIT_TIMEOUT:  # the default needs no check, on every call
            check_seconds("wait_timeout", wait_timeout)
        valid = check_session_id(session_id)
        result = await self._releaser.release_result(
            valid, project_id=project_id, wait=wait, wait_timeout=wait_timeout, timeout=timeout
        )
        if result.error is not None:
            raise result.error
        if result.session is None:
            # Accepted, but neither the answer nor a retrieve could be read: say no more.
            return bare_session(valid, REQUEST_RELEASE)
        return result.session

    async def retrieve(
        self, session_id: str | Session, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Session:
        """Return a session as it is now.

        Args:
            session_id: The session's id, or the session.
            timeout: Seconds allowed for each attempt of this call, instead of
                the client's; ``None`` for no limit.

        Raises:
            ValueError: A bad id or timeout, before any request.
            NotFoundError: No such session.
            APIStatusError: The API refused otherwise.
            APIConnectionError: No answer, after the retries.
            APIResponseValidationError: The answer is not a Session.
        """
        check_timeout(timeout)
        return await self._requester.retrieve(check_session_id(session_id), timeout)

    async def list(
        self,
        *,
        status: SessionStatus | str | None = None,
        q: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[Session]:
        """List the sessions of the key's project.

        Args:
            status: Only sessions in this state (the enum, or its value in any case).
            q: A user-metadata query, as ``user_metadata['key']:'value'``.
            timeout: Seconds allowed for each attempt of this call, instead of
                the client's; ``None`` for no limit.

        Raises:
            ValueError: *status* is not a `SessionStatus` value, or a bad timeout.
            APIStatusError: The API refused.
            APIConnectionError: No answer, after the retries.
            APIResponseValidationError: The answer is not a JSON array (a session
                in it that cannot be read, without an ``id`` or a ``status``, is
                skipped with a warning).
        """
        params: dict[str, str] = {}
        if status is not None:
            try:
                params["status"] = SessionStatus(str(status).upper()).value
            except ValueError:
                choices = ", ".join(member.value for member in SessionStatus)
                raise ValueError(f"status must be one of {choices}; got {status!r}") from None
        if q is not None:
            params["q"] = q
        check_timeout(timeout)
        call = Call("GET", "/v1/sessions", None, params=params or None, timeout=timeout)
        sessions = structure_sessions(await self._requester.call(call))
        self._clock_offset = _bulk.clock_offset(call.answered or {}, datetime.now(UTC))
        return sessions

    def server_now(self) -> datetime:
        """Now, by the API server's clock, as far as the client can tell.

        The client's UTC clock, corrected by the offset that the ``Date`` header
        of the last `list` answer showed (none before a listing, or when the
        clocks agree within the header's one-second resolution). Sessions' ages
        (``older_than``) are measured on it, so that a client whose clock is
        off neither releases young sessions nor spares old ones.
        """
        return datetime.now(UTC) + timedelta(seconds=self._clock_offset)

    # -- bulk -----------------------------------------------------------------

    async def release_iter(
        self,
        session_ids: SessionIds,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        project_id: str | None = None,
        wait: bool = False,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> AsyncGenerator[ReleaseResult, None]:
        """Release many sessions; yield a `ReleaseResult` for each, as each finishes.

        The input is read lazily, so it may be a generator of any length. An id
        repeated while it is in flight, or among the last `STREAM_MEMO_SIZE`
        finished, is released once and reported again; a repeat seen later is
        sent again and reported as the API then answers (already ended:
        released). To stop early, close the iterator (``contextlib.aclosing``):
        that cancels what is in flight.

        Args:
            session_ids: Any iterable or async iterable of ids (or sessions).
            concurrency: The most requests in flight, ever; never more workers
                than ids in hand, nor than `STREAM_MEMO_SIZE`.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm each session reached a terminal state.
            wait_timeout: Seconds to wait for each, with *wait*.

        Raises:
            ValueError: A bad *concurrency* or *wait_timeout*, before any
                request. A failure of one session is never raised: it is in its result.
            BulkReleaseAborted: The input raised, or the client was closed (even
                while the run waited on an input that hangs): every release sent
                was yielded first (so its ``report`` is empty); the input's
                exception (the closed-client `RuntimeError`) is the ``__cause__``.
        """
        _bulk.check_concurrency(concurrency)
        check_seconds("wait_timeout", wait_timeout)
        release_one = self._releaser.bulk_release_one(project_id, wait, wait_timeout)
        memo_size = _bulk.STREAM_MEMO_SIZE
        run = _bulk.Stream(
            release_one,
            session_ids,
            # No more ids in flight than the memo holds, so that it stays within its size at
            # all times (the contract); the client's window holds far fewer in flight anyway.
            concurrency=min(concurrency, memo_size),
            memo_size=memo_size,
            on_close=self._requester.on_close,
        )
        # Closed here, not by the GC, so that closing us cancels the workers at once.
        yielded = 0
        async with contextlib.aclosing(run):
            try:
                async for _, result in run:
                    yielded += 1
                    yield result
            except _bulk.RunAborted as exc:
                aborted = BulkReleaseAborted(BulkReleaseReport([]), exc.cause, yielded=yielded)
                raise aborted from exc.cause

    async def release_many(
        self,
        session_ids: SessionIds,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        project_id: str | None = None,
        wait: bool = False,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_result: Callable[[ReleaseResult], object] | None = None,
    ) -> BulkReleaseReport:
        """Release many sessions; return one result per input id, in input order.

        A repeated id is released once and reported at each of its positions.

        Args:
            session_ids: Any iterable or async iterable of ids (or sessions,
                as `list` returns them).
            concurrency: The most requests in flight, ever; never more workers
                than ids in hand.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm each session reached a terminal state.
            wait_timeout: Seconds to wait for each, with *wait*.
            on_result: Called with each result as it finishes (for progress);
                once it raises, it is called no more. A plain function: an async
                one is refused, and an answer that is awaitable aborts the run.

        Returns:
            The report, with the run's flow figures in ``stats``; it never
            raises for a per-session failure.

        Raises:
            ValueError: A bad *concurrency* or *wait_timeout*, or an async
                *on_result*, before any request.
            BulkReleaseAborted: The input or *on_result* raised, or the client
                was closed (even while the run waited on an input that hangs): no
                more ids were taken, the releases sent finished (or were ended by
                the close), and its ``report`` holds every session tried; the
                original exception (the closed-client `RuntimeError`) is its ``__cause__``.
        """
        _bulk.check_concurrency(concurrency)
        check_seconds("wait_timeout", wait_timeout)
        _bulk.check_on_result(on_result)
        release_one = self._releaser.bulk_release_one(project_id, wait, wait_timeout)
        return await self._release_many(release_one, session_ids, concurrency, on_result)

    async def _release_many(
        self,
        release_one: _bulk.ReleaseOne,
        session_ids: SessionIds,
        concurrency: int,
        on_result: Callable[[ReleaseResult], object] | None,
    ) -> BulkReleaseReport:
        """`release_many`'s run, its arguments checked, with *release_one* for each id.

        Raises:
            BulkReleaseAborted: As `release_many` says.
        """
        results: list[ReleaseResult | None] = []
        before, started = self._flow.stats(), time.monotonic()
        callback_failed = False

        def keep(position: int, result: ReleaseResult) -> None:
            nonlocal callback_failed
            if position >= len(results):
                results.extend([None] * (position + 1 - len(results)))
            results[position] = result
            if on_result is not None and not callback_failed:
                try:
                    _bulk.refuse_awaitable(on_result(result))
                except Exception:
                    callback_failed = True
                    raise

        def report() -> BulkReleaseReport:
            stats = self._flow.stats().since(before, elapsed=time.monotonic() - started)
            return BulkReleaseReport([result for result in results if result is not None], stats)

        try:
            await _bulk.drive(
                release_one,
                session_ids,
                keep,
                concurrency=concurrency,
                memo_size=None,
                on_close=self._requester.on_close,
            )
        except _bulk.RunAborted as exc:
            raise BulkReleaseAborted(report(), exc.cause) from exc.cause
        return report()

    async def release_all(
        self,
        *,
        status: SessionStatus | str | None = SessionStatus.RUNNING,
        q: str | None = None,
        older_than: _bulk.Age | None = None,
        where: _bulk.Where | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        project_id: str | None = None,
        wait: bool = False,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_result: Callable[[ReleaseResult], object] | None = None,
    ) -> BulkReleaseReport:
        """Release every session that `list` returns for *status* and *q*, filtered.

        A reaper's call: with *older_than*, the sessions that have run longer
        than any job should are closed, and the live ones are left alone. Ages
        are measured on the server's clock (see `server_now`); a session whose
        age cannot be told (no ``startedAt``) is skipped with a warning. A
        session listed in a terminal state is sent nothing (the report counts
        it in ``already_ended``); one that ends between the listing and its
        release counts as released.

        Args:
            status: Which sessions (default: the running ones); ``None``: all.
            q: A user-metadata query, as ``user_metadata['key']:'value'``.
            older_than: Only sessions started at least this long ago, by the
                server's clock: seconds as a float, or a ``timedelta``.
            where: Only sessions for which this predicate holds (for instance
                ``lambda s: not s.keep_alive``).
            concurrency: The most requests in flight, ever.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm each session reached a terminal state.
            wait_timeout: Seconds to wait for each, with *wait*.
            on_result: Called with each result as it finishes (for progress); a
                plain function, as for `release_many`.

        Returns:
            The report of the sessions released or tried: those that the
            filters kept, no others; with the ones left alone because they had
            ended (``already_ended``) or their age was unknown (``age_unknown``).

        Raises:
            ValueError: A bad *status*, *concurrency*, *wait_timeout*,
                *older_than* (negative, NaN), *where* (not callable, or async)
                or *on_result* (async), before any request; a *where* that
                answers with an awaitable, before any release.
            APIError: The listing itself failed (nothing was released).
            BulkReleaseAborted: *on_result* raised, or the client was closed: no
                more sessions were taken, and its ``report`` holds those tried, with
                those left alone (``already_ended``, ``age_unknown``).
        """
        age = _bulk.check_age(older_than)
        _bulk.check_where(where)
        _bulk.check_concurrency(concurrency)
        check_seconds("wait_timeout", wait_timeout)
        _bulk.check_on_result(on_result)
        listed = await self.list(status=status, q=q)
        chosen = _bulk.sort_out(listed, older_than=age, where=where, now=self.server_now())

        def with_apart(report: BulkReleaseReport) -> BulkReleaseReport:
            return attrs.evolve(
                report, already_ended=chosen.already_ended, age_unknown=chosen.age_unknown
            )

        try:
            report = await self._release_listed(
                [session.id for session in chosen.chosen],
                concurrency=concurrency,
                project_id=project_id,
                wait=wait,
                wait_timeout=wait_timeout,
                on_result=on_result,
            )
        except BulkReleaseAborted as aborted:
            # The listing was sorted whole before the stop: its report says so too.
            aborted.report = with_apart(aborted.report)
            raise
        return with_apart(report)

    async def _release_listed(
        self,
        session_ids: Sequence[str],
        *,
        concurrency: int,
        project_id: str | None = None,
        wait: bool = False,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_result: Callable[[ReleaseResult], object] | None = None,
    ) -> BulkReleaseReport:
        """`release_many` of ids a listing gave (``release_all``'s, the CLI's sweep).

        The ids are the server's: each is released whatever characters it holds
        (percent-encoded), where a caller's are refused unless URL-safe, so that a
        sweep leaves none running for want of a valid id.

        Raises:
            BulkReleaseAborted: As `release_many` says.
        """
        release_one = self._releaser.bulk_release_one(
            project_id, wait, wait_timeout, given_by_server=True
        )
        return await self._release_many(release_one, session_ids, concurrency, on_result)

    # -- scraper ergonomics ---------------------------------------------------

    def guard(
        self,
        session_id: str | Session,
        *,
        project_id: str | None = None,
        wait: bool = False,
        release_timeout: float = DEFAULT_GUARD_TIMEOUT,
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Release *session_id* when the block exits, however it exits.

        The release on exit is shielded from a cancellation of the block and
        bounded by *release_timeout*. If the block raised, a failed release (of
        any exception class) is logged and added to the block's exception as a
        note, never hiding it; if the block ended normally, a failed release
        raises. A `CancelledError` is re-raised once the release is done: a
        cancelled block's release does not wait for the end to be confirmed,
        and a cancellation never waits more than ``CANCELLED_RELEASE_TIMEOUT``
        (10 s), whatever *release_timeout*. Nothing the release raises ever
        replaces the block's own exception or cancellation. If the client is
        closed while the block runs, `aclose` releases the session first, and
        the guard's exit finds it released.

        Args:
            session_id: The session to release (or its id).
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm the session reached a terminal state.
            release_timeout: Seconds that the release on exit may take in all.

        Raises:
            ValueError: A bad id or *release_timeout*, on entry.
            RuntimeError: The client is closed, on entry (or, when the block
                ended normally, closed before it could release the session).
            APIError: The block ended normally and the release failed.
        """
        return self._releaser.guard(session_id, project_id, wait, release_timeout)

    # -- the session's life ---------------------------------------------------

    async def create(
        self,
        *,
        project_id: str | None = None,
        keep_alive: bool | None = None,
        timeout: int | None = None,
        region: Region | str | None = None,
        user_metadata: Mapping[str, Any] | None = None,
        browser_settings: Mapping[str, Any] | None = None,
        proxies: bool | Sequence[Mapping[str, Any]] | None = None,
        extension_id: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        wait_for_slot: float = 0.0,
        request_timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> CreatedSession:
        """Create a session (``POST /v1/sessions``); release it when done, or use `session`.

        A 429 means the plan has no browser free (concurrent browsers, or
        creates per minute). With *wait_for_slot*, the create waits for one,
        first come first served among this client's creates: until the
        server's ``Retry-After`` / ``x-ratelimit-reset``, or until a release
        of this client frees a browser. That wait is the create's own: it
        neither shrinks the client's window nor pauses its releases, and
        spends no attempt.

        No lost create: the create carries a unique tag in ``userMetadata``
        (key ``browserbase_async_create``). If it ends in a timeout, a
        connection error or a 5xx, the session is looked up by that tag, and
        returned if the server made it; only if it did not is the create sent
        again. A cancellation while the create is on the wire releases what it
        made.

        Args:
            project_id: Sent as ``projectId``; else the client's, else none.
            keep_alive: Keep the session alive after disconnections.
            timeout: Whole seconds after which the session ends by itself
                (60 to 21600); else the project's default.
            region: Where the browser runs (a `Region` or its value).
            user_metadata: Your JSON metadata, to find the session with ``list(q=...)``.
            browser_settings: ``browserSettings`` as the API spells it.
            proxies: ``True`` for the default proxy, or a list of proxy configs.
            extension_id: An uploaded extension's id.
            extra_body: More body fields, as the API spells them.
            wait_for_slot: Seconds to wait, in all, for a free browser;
                0 raises `RateLimitError` on the first 429.
            request_timeout: Seconds allowed for each attempt, instead of the
                client's; ``None`` for no limit.

        Returns:
            The session, with its ``connect_url`` (whose ``repr`` and that of
            ``signing_key`` are hidden).

        Raises:
            ValueError: A bad argument, before any request.
            RateLimitError: No browser was free within *wait_for_slot* seconds;
                nothing was created.
            APIStatusError: The API refused (a subclass per status).
            APIConnectionError: No answer, after the retries; the lookup by tag
                found no session.
        """
        fields = create_fields(
            project_id=project_id if project_id is not None else self.project_id,
            keep_alive=keep_alive,
            timeout=timeout,
            region=region,
            user_metadata=user_metadata,
            browser_settings=browser_settings,
            proxies=proxies,
            extension_id=extension_id,
            extra_body=extra_body,
            wait_for_slot=wait_for_slot,
            request_timeout=request_timeout,
        )
        return await self._lifecycle.create(
            fields, wait_for_slot=wait_for_slot, timeout=request_timeout
        )

    def session(
        self,
        *,
        project_id: str | None = None,
        keep_alive: bool | None = None,
        timeout: int | None = None,
        region: Region | str | None = None,
        user_metadata: Mapping[str, Any] | None = None,
        browser_settings: Mapping[str, Any] | None = None,
        proxies: bool | Sequence[Mapping[str, Any]] | None = None,
        extension_id: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        wait_for_slot: float = DEFAULT_SESSION_WAIT_FOR_SLOT,
        request_timeout: Timeout = USE_CLIENT_DEFAULT,
        wait: bool = False,
        release_timeout: float = DEFAULT_GUARD_TIMEOUT,
    ) -> contextlib.AbstractAsyncContextManager[CreatedSession]:
        """Create a session for the block, and release it when the block exits, however it exits.

        ``async with api.session() as session:`` is `create` (waiting up to
        *wait_for_slot* seconds for a free browser), then `guard`: the
        release on exit is shielded from a cancellation and bounded by
        *release_timeout*; a failed release never hides the block's error; a
        `CancelledError` is re-raised once the release is done. A cancellation
        during the create releases what the create made.

        Args:
            project_id: Sent as ``projectId`` with the create and the release.
            keep_alive: As for `create`.
            timeout: As for `create`: the session's own lifetime, in seconds.
            region: As for `create`.
            user_metadata: As for `create`.
            browser_settings: As for `create`.
            proxies: As for `create`.
            extension_id: As for `create`.
            extra_body: As for `create`.
            wait_for_slot: Seconds to wait, in all, for a free browser.
            request_timeout: As for `create`.
            wait: Confirm, on exit, that the session reached a terminal state.
            release_timeout: Seconds that the release on exit may take in all.

        Raises:
            ValueError: A bad argument, on entry, before any request.
            RateLimitError: No browser was free in time, on entry.
            APIError: The create failed, on entry; or the block ended normally
                and the release failed, on exit.
        """
        fields = create_fields(
            project_id=project_id if project_id is not None else self.project_id,
            keep_alive=keep_alive,
            timeout=timeout,
            region=region,
            user_metadata=user_metadata,
            browser_settings=browser_settings,
            proxies=proxies,
            extension_id=extension_id,
            extra_body=extra_body,
            wait_for_slot=wait_for_slot,
            request_timeout=request_timeout,
        )
        check_seconds("release_timeout", release_timeout)
        return self._lifecycle.session(
            fields,
            wait_for_slot=wait_for_slot,
            timeout=request_timeout,
            project_id=project_id,
            wait=wait,
            release_timeout=release_timeout,
        )
