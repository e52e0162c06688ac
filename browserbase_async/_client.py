"""SessionsAPI: the client, and the one path every request takes.

``update``/``release``/``retrieve``/``list`` build a `_Call`; `_call` runs it
through the client's retry loop, whose every attempt takes a permit from the
client's flow control (`_flow`), goes through the transport and `for_status`,
and hands the permit back with what it learned; the JSON is then structured
by the converter. Bulk runs (see `_bulk`) are workers on this same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeAlias

import aiohttp
import attrs

from . import _bulk
from ._bulk import BulkReleaseReport, ReleaseResult, SessionIds
from ._config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    USE_CLIENT_DEFAULT,
    Timeout,
    check_positive,
    check_positive_int,
    check_session_id,
    check_timeout,
    resolve_api_key,
    resolve_base_url,
)
from ._converter import structure_session, structure_sessions
from ._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    InternalServerError,
    PermissionDeniedError,
    client_closed,
    excerpt,
    for_status,
)
from ._flow import FlowControl, FlowStats
from ._models import Session, SessionStatus
from ._retry import (
    DEFAULT_RETRY_POLICY,
    RetryBudget,
    RetryPolicy,
    build_retrying,
    is_retryable,
    poll_until,
)
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, Transport

if TYPE_CHECKING:
    from types import TracebackType

logger: Final = logging.getLogger("browserbase_async")

REQUEST_RELEASE: Final = "REQUEST_RELEASE"
DEFAULT_WAIT_TIMEOUT: Final = 30.0
"""Seconds that ``release(wait=True)`` waits for a terminal state."""
DEFAULT_GUARD_TIMEOUT: Final = 30.0
"""Seconds that a guard's release on exit may take, retries included."""

_UPDATE_STATUSES: Final = frozenset({REQUEST_RELEASE})
ALREADY_ENDED_STATUSES: Final = frozenset({400, 409, 410, 422})
"""Refusals of a release that are checked with ``retrieve``: the session may have ended."""
_RELEASE_BODY: Final = json.dumps({"status": REQUEST_RELEASE}).encode()
_OWN_BODY_KEYS: Final = {"status": "status", "projectId": "project_id"}
"""The update's own body keys, and the argument that sets each."""
_FATAL_IN_BULK: Final = (AuthenticationError, PermissionDeniedError)
"""Refusals that end a bulk run: the key is wrong, for every session alike."""
_Fatal: TypeAlias = list[APIError]
"""A bulk run's fatal error, once it has one (at most one item)."""


@attrs.define
class _Call:
    """One logical request, as the retry hooks and the flow see it."""

    method: str
    path: str
    session_id: str | None
    body: bytes | None = None
    params: Mapping[str, str] | None = None
    timeout: Timeout = USE_CLIENT_DEFAULT
    attempts: int = 0
    rate_limited: int = 0
    replay: APIError | None = None
    """A failure of the first attempt, handed to the retry loop to judge."""
    fatal: _Fatal | None = None
    """A bulk run's fatal error, once it has one: the attempt is then not sent."""


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
            it is never closed by the client.
        allow_insecure_http: Accept an ``http://`` base URL to a host that is
            not loopback (the key then travels in clear text).
        max_response_bytes: The longest answer read; a longer one (or one
            without end) fails with `APIResponseValidationError` as soon as it
            passes the limit, and is not retried.

    Raises:
        ValueError: No API key, an unsafe or malformed base URL, or a bad number.
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
    ) -> None:
        key = resolve_api_key(api_key)
        url = resolve_base_url(base_url, allow_insecure_http=allow_insecure_http)
        check_timeout(timeout)
        check_positive("max_connections", max_connections)
        check_positive_int("max_response_bytes", max_response_bytes)
        self.base_url: Final = url
        self.project_id: Final = project_id
        self.timeout: Final = timeout
        self.retry: Final = retry if retry is not None else DEFAULT_RETRY_POLICY
        self._budget = RetryBudget.for_policy(self.retry)
        self._retrying = build_retrying(self.retry, self._budget, self._is_closed)
        self._flow = FlowControl(max_connections, self.retry.max_retry_after, self.retry.max_delay)
        self._transport = Transport(
            url, key, timeout, max_connections, http_session, max_response_bytes
        )
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SessionsAPI base_url={self.base_url!r} project_id={self.project_id!r} {state}>"

    async def __aenter__(self) -> SessionsAPI:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's own connections; a caller's ``http_session`` stays open.

        Calls still waiting for a place in the window end with `RuntimeError`,
        those on the wire with `APIConnectionError`. Calling it again does
        nothing. A closed client refuses further calls.
        """
        self._closed = True
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
        session_id: str,
        *,
        status: str = REQUEST_RELEASE,
        project_id: str | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Session:
        """Update a session: its status (``REQUEST_RELEASE`` ends it), or other fields.

        Args:
            session_id: The session's id.
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
        if status not in _UPDATE_STATUSES:
            raise ValueError(f"status must be one of {sorted(_UPDATE_STATUSES)}, got {status!r}")
        check_timeout(timeout)
        call = self._update_call(
            check_session_id(session_id), project_id, status, extra_body, timeout
        )
        return structure_session(await self._call(call))

    async def release(
        self,
        session_id: str,
        *,
        project_id: str | None = None,
        wait: bool = False,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Session:
        """Release a session (``REQUEST_RELEASE``), so that it stops costing.

        A refusal because the session had already ended (for instance a retry
        whose first attempt was processed but whose answer was lost) is checked
        with `retrieve`: if the session is over, that counts as released.

        Args:
            session_id: The session's id.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Poll `retrieve` until the session is in a terminal state.
            wait_timeout: Seconds to wait for it, with *wait*.
            timeout: Seconds allowed for each attempt of this call (the update,
                its checks and polls), instead of the client's; ``None``: no limit.

        Returns:
            The session; in a terminal state when *wait* is true.

        Raises:
            ValueError: A bad id or timeout, before any request.
            APITimeoutError: With *wait*, the session did not end in time.
            APIStatusError: The API refused (a subclass per status).
            APIConnectionError: No answer, after the retries.
            APIResponseValidationError: The answer is not a Session.
        """
        check_timeout(timeout)
        result = await self._release_result(
            check_session_id(session_id),
            project_id=project_id,
            wait=wait,
            wait_timeout=wait_timeout,
            timeout=timeout,
        )
        if result.error is not None:
            raise result.error
        assert result.session is not None
        return result.session

    async def retrieve(self, session_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Session:
        """Return a session as it is now.

        Args:
            session_id: The session's id.
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
        return await self._retrieve(check_session_id(session_id), timeout)

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
            APIResponseValidationError: The answer is not a list of sessions.
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
        call = _Call("GET", "/v1/sessions", None, params=params or None, timeout=timeout)
        return structure_sessions(await self._call(call))

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
            session_ids: Any iterable or async iterable of ids.
            concurrency: The most requests in flight, ever.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm each session reached a terminal state.
            wait_timeout: Seconds to wait for each, with *wait*.

        Raises:
            ValueError: *concurrency* is below 1. A failure of one session is
                never raised: it is in its result.
        """
        release_one = self._bulk_release_one(project_id, wait, wait_timeout)
        run = _bulk.stream(
            release_one,
            session_ids,
            concurrency=concurrency,
            memo_size=_bulk.STREAM_MEMO_SIZE,
        )
        # Closed here, not by the GC, so that closing us cancels the workers at once.
        async with contextlib.aclosing(run):
            async for _, result in run:
                yield result

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
            session_ids: Any iterable or async iterable of ids.
            concurrency: The most requests in flight, ever.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm each session reached a terminal state.
            wait_timeout: Seconds to wait for each, with *wait*.
            on_result: Called with each result as it finishes (for progress).

        Returns:
            The report, with the run's flow figures in ``stats``; it never
            raises for a per-session failure.

        Raises:
            ValueError: *concurrency* is below 1.
        """
        results: list[ReleaseResult | None] = []
        before, started = self._flow.stats(), time.monotonic()

        def keep(position: int, result: ReleaseResult) -> None:
            if position >= len(results):
                results.extend([None] * (position + 1 - len(results)))
            results[position] = result
            if on_result is not None:
                on_result(result)

        await _bulk.drive(
            self._bulk_release_one(project_id, wait, wait_timeout),
            session_ids,
            keep,
            concurrency=concurrency,
            memo_size=None,
        )
        stats = self._flow.stats().since(before, elapsed=time.monotonic() - started)
        return BulkReleaseReport([result for result in results if result is not None], stats)

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
        than any job should are closed, and the live ones are left alone. A
        session that ends between the listing and its release counts as
        released.

        Args:
            status: Which sessions (default: the running ones); ``None``: all.
            q: A user-metadata query, as ``user_metadata['key']:'value'``.
            older_than: Only sessions started at least this long ago, by the
                client's UTC clock: seconds as a float, or a ``timedelta``.
            where: Only sessions for which this predicate holds (for instance
                ``lambda s: not s.keep_alive``).
            concurrency: The most requests in flight, ever.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm each session reached a terminal state.
            wait_timeout: Seconds to wait for each, with *wait*.
            on_result: Called with each result as it finishes (for progress).

        Returns:
            The report of the sessions released or tried: those that the
            filters kept, no others.

        Raises:
            ValueError: A bad *status*, *concurrency*, *older_than* (negative,
                NaN) or *where* (not callable), before any request.
            APIError: The listing itself failed (nothing was released).
        """
        age = _bulk.check_age(older_than)
        _bulk.check_where(where)
        _bulk.check_concurrency(concurrency)
        listed = await self.list(status=status, q=q)
        sessions = _bulk.select(listed, older_than=age, where=where, now=datetime.now(UTC))
        return await self.release_many(
            [session.id for session in sessions],
            concurrency=concurrency,
            project_id=project_id,
            wait=wait,
            wait_timeout=wait_timeout,
            on_result=on_result,
        )

    # -- scraper ergonomics ---------------------------------------------------

    @contextlib.asynccontextmanager
    async def guard(
        self,
        session_id: str,
        *,
        project_id: str | None = None,
        wait: bool = False,
        release_timeout: float = DEFAULT_GUARD_TIMEOUT,
    ) -> AsyncIterator[None]:
        """Release *session_id* when the block exits, however it exits.

        The release on exit is shielded from a cancellation of the block and
        bounded by *release_timeout*. If the block raised, a failed release is logged
        and added to the block's exception as a note, never hiding it; if the
        block ended normally, a failed release raises. A `CancelledError` is
        re-raised once the release is done.

        Args:
            session_id: The session to release.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm the session reached a terminal state.
            release_timeout: Seconds that the release on exit may take in all.

        Raises:
            ValueError: A bad id, on entry.
            APIError: The block ended normally and the release failed.
        """
        check_session_id(session_id)
        try:
            yield
        except BaseException as exc:
            error = await self._release_shielded(session_id, project_id, wait, release_timeout)
            if error is not None:
                logger.warning(
                    "could not release session %s after %s: %s",
                    session_id,
                    type(exc).__name__,
                    error,
                )
                exc.add_note(f"and releasing session {session_id} failed: {error!r}")
            raise
        error = await self._release_shielded(session_id, project_id, wait, release_timeout)
        if error is not None:
            raise error

    # -- the one path ---------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise client_closed()

    def _is_closed(self) -> bool:
        return self._closed

    async def _call(self, call: _Call) -> object:
        self._check_open()
        self._budget.deposit()
        # The first attempt runs bare: the retry machinery costs only calls that fail.
        try:
            return await self._attempt(call)
        except APIError as exc:
            if not is_retryable(exc):
                raise
            call.replay = exc
        return await self._retrying(self._attempt, call)

    async def _attempt(self, call: _Call) -> object:
        if call.replay is not None:
            # The retry loop's first turn: the failure already seen, judged like any other.
            failure, call.replay = call.replay, None
            raise failure
        flow = self._flow
        permit = flow.try_acquire() or await flow.acquire()
        if call.fatal:
            flow.give_back()
            raise call.fatal[0]
        call.attempts += 1
        try:
            response = await self._transport.request(
                call.method, call.path, body=call.body, params=call.params, timeout=call.timeout
            )
        except BaseException:
            flow.release(permit, None)
            raise
        flow.release(permit, response)
        error = for_status(response.status, response.headers, response.body)
        if error is not None:
            if response.status == 429:
                call.rate_limited += 1
            raise error
        try:
            # JSON between systems is UTF-8 (RFC 8259); given bytes, json.loads would first
            # guess among five encodings, in Python, on every answer.
            return json.loads(response.body.decode())
        except ValueError:  # UnicodeDecodeError included
            raise APIResponseValidationError(
                f"{call.method} {call.path}: the answer is not JSON",
                body=excerpt(response.body.decode("utf-8", errors="replace")),
            ) from None

    def _update_call(
        self,
        session_id: str,
        project_id: str | None,
        status: str = REQUEST_RELEASE,
        extra_body: Mapping[str, object] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> _Call:
        project = project_id if project_id is not None else self.project_id
        if project is None and status == REQUEST_RELEASE and extra_body is None:
            body = _RELEASE_BODY
        else:
            fields: dict[str, object] = {"status": status}
            if project is not None:
                fields["projectId"] = project
            if extra_body is not None:
                fields |= _checked_extra_body(extra_body)
            body = _encode_body(fields)
        return _Call("POST", f"/v1/sessions/{session_id}", session_id, body=body, timeout=timeout)

    async def _retrieve(self, session_id: str, timeout: Timeout = USE_CLIENT_DEFAULT) -> Session:
        call = _Call("GET", f"/v1/sessions/{session_id}", session_id, timeout=timeout)
        return structure_session(await self._call(call))

    async def _release_result(
        self,
        session_id: str,
        *,
        project_id: str | None,
        wait: bool,
        wait_timeout: float,
        fatal: _Fatal | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> ReleaseResult:
        """Release one valid id; the outcome, good or bad, is in the result.

        *fatal* is a bulk run's: its first 401 or 403 goes there, and no
        request of the run is sent after that.
        """
        call = self._update_call(session_id, project_id, timeout=timeout)
        call.fatal = fatal
        try:
            try:
                session = structure_session(await self._call(call))
            except APIError as exc:
                session = await self._check_ended(session_id, exc, timeout)
            if wait and not session.is_terminal:
                session = await self._wait_terminal(session_id, wait_timeout, timeout)
        except APIError as exc:
            if fatal is not None and not fatal and isinstance(exc, _FATAL_IN_BULK):
                fatal.append(exc)
            return ReleaseResult(session_id, None, exc, call.attempts)
        return ReleaseResult(session_id, session, None, call.attempts)

    async def _check_ended(
        self, session_id: str, failure: APIError, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Session:
        """Return the session if a failed release found it ended; else raise *failure*.

        A refusal that may mean "already ended" (`ALREADY_ENDED_STATUSES`) is
        always checked. A connection error, a timeout or a 5xx is checked when
        the retry budget allows: the server may have acted before the answer
        was lost. If the check fails too, *failure* is raised, with the
        check's error as its cause and in a note.
        """
        if isinstance(failure, APIStatusError) and failure.status_code in ALREADY_ENDED_STATUSES:
            pass
        elif not (
            isinstance(failure, APIConnectionError | InternalServerError)
            and not self._closed
            and self._budget.try_withdraw()
        ):
            raise failure
        try:
            session = await self._retrieve(session_id, timeout)
        except APIError as check:
            failure.add_note(f"checking session {session_id} with retrieve failed too: {check}")
            raise failure from check
        if not session.is_terminal:
            raise failure
        return session

    def _bulk_release_one(
        self, project_id: str | None, wait: bool, wait_timeout: float
    ) -> _bulk.ReleaseOne:
        self._check_open()
        # The run's first 401 or 403: the key is wrong for every session, so stop sending.
        fatal: _Fatal = []

        def release_one(session_id: object) -> Awaitable[ReleaseResult]:
            # A plain function handing back the coroutine: one frame less per release.
            try:
                valid = check_session_id(session_id)
            except ValueError as exc:
                return _finished(ReleaseResult(str(session_id), None, exc, 0))
            if fatal:
                return _finished(ReleaseResult(valid, None, fatal[0], 0))
            return self._release_result(
                valid, project_id=project_id, wait=wait, wait_timeout=wait_timeout, fatal=fatal
            )

        return release_one

    async def _wait_terminal(
        self, session_id: str, wait_timeout: float, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Session:
        """Poll `retrieve` with backoff until the session is terminal.

        Raises:
            APITimeoutError: Not terminal within *wait_timeout* seconds.
        """

        async def fetch() -> Session:
            return await self._retrieve(session_id, timeout)

        try:
            async with asyncio.timeout(wait_timeout):
                return await poll_until(fetch, lambda session: session.is_terminal, self.retry)
        except TimeoutError:
            raise APITimeoutError(
                f"session {session_id} did not reach a terminal state within {wait_timeout} s"
            ) from None

    async def _release_shielded(
        self, session_id: str, project_id: str | None, wait: bool, limit: float
    ) -> APIError | None:
        async def bounded() -> ReleaseResult:
            try:
                async with asyncio.timeout(limit):
                    return await self._release_result(
                        session_id, project_id=project_id, wait=wait, wait_timeout=limit
                    )
            except TimeoutError:
                error = APITimeoutError(f"releasing session {session_id} took over {limit} s")
                return ReleaseResult(session_id, None, error, 0)

        task = asyncio.ensure_future(bounded())
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                # Cancelled again while releasing: finish the (bounded) release first.
                if task.done():
                    raise
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return result.error if isinstance(result.error, APIError) else None


async def _finished(result: ReleaseResult) -> ReleaseResult:
    return result


def _checked_extra_body(extra_body: object) -> Mapping[str, object]:
    """Return *extra_body* if it may join an update's body.

    Raises:
        ValueError: It is not a mapping of str keys, or a key is one the
            client sends itself (``status``, ``projectId``).
    """
    if not isinstance(extra_body, Mapping):
        raise ValueError(f"extra_body must be a mapping, got {type(extra_body).__name__}")
    for key in extra_body:
        if not isinstance(key, str):
            raise ValueError(f"extra_body keys must be str, got {key!r}")
        if key in _OWN_BODY_KEYS:
            raise ValueError(
                f"extra_body must not set {key!r}: pass it as "
                f"{_OWN_BODY_KEYS[key]}= (the client sends it itself)"
            )
    return extra_body


def _encode_body(fields: Mapping[str, object]) -> bytes:
    """Encode a request body as strict JSON (no NaN, no infinity).

    Raises:
        ValueError: A value is not JSON.
    """
    try:
        return json.dumps(fields, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra_body is not JSON: {exc}") from None
