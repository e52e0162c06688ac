"""What "released" means: the release, its truth checks, waits, and the shielded guard.

A release is an update to ``REQUEST_RELEASE`` on the one request path
(`_request`). Its outcome is judged here: a refusal that may mean "already
ended", or a failure after which the server may have acted, is checked with a
retrieve, and an ended session counts as released; with *wait*, the session
is polled until it is terminal. A guard's release on exit is shielded from the
block's cancellation and bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import attrs

from . import _bulk
from ._bulk import ReleaseResult
from ._config import (
    USE_CLIENT_DEFAULT,
    Timeout,
    check_seconds,
    check_session_id,
    server_session_id,
    session_path,
)
from ._converter import structure_session
from ._errors import (
    APICertificateError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    NotFoundError,
    PermissionDeniedError,
    ProxyAuthenticationError,
    may_have_acted,
    printable,
)
from ._models import Session
from ._request import Call, Fatal, Requester
from ._retry import is_retryable, poll_until

logger: Final = logging.getLogger("browserbase_async")

REQUEST_RELEASE: Final = "REQUEST_RELEASE"
DEFAULT_WAIT_TIMEOUT: Final = 30.0
"""Seconds that ``release(wait=True)`` waits for a terminal state."""
DEFAULT_GUARD_TIMEOUT: Final = 30.0
"""Seconds that a guard's release on exit may take, retries included."""
CLOSE_RELEASE_TIMEOUT: Final = 5.0
"""Seconds that closing the client gives each session open guards still hold to be released."""
CANCELLED_RELEASE_TIMEOUT: Final = 10.0
"""Seconds that a guard's release may still take once its task is cancelled, whatever its
own timeout: a cancellation is never held back for longer. A block that was cancelled has
its session released without waiting for the end to be confirmed."""

UPDATE_STATUSES: Final = frozenset({REQUEST_RELEASE})
ALREADY_ENDED_STATUSES: Final = frozenset({400, 409, 410, 422})
"""Refusals of a release that are checked with ``retrieve``: the session may have ended."""
_RELEASE_BODY: Final = json.dumps({"status": REQUEST_RELEASE}).encode()
_OWN_BODY_KEYS: Final = {"status": "status", "projectId": "project_id"}
"""The update's own body keys, and the argument that sets each."""
_FATAL_IN_BULK: Final = (
    AuthenticationError,
    PermissionDeniedError,
    APICertificateError,
    ProxyAuthenticationError,
)
"""Failures that end a bulk run: the key, the server's certificate or the proxy's credentials
are wrong for every session alike (and a proxy may lock an account that keeps failing)."""
_T = TypeVar("_T")


@attrs.define(eq=False)
class Releaser:
    """Releases on the client's request path, judged for what they did.

    Args:
        requester: The client's one request path.
        project_id: The client's ``projectId``, for calls that give none.
    """

    requester: Requester
    project_id: str | None
    holds: set[Hold] = attrs.field(init=False, factory=set)
    """The sessions that open guards hold, for `release_held`."""
    on_released: list[Callable[[], object]] = attrs.field(init=False, factory=list)
    """Called after each release that succeeded: a browser may be free (see `_slots`)."""

    def update_call(
        self,
        session_id: str,
        project_id: str | None,
        status: str = REQUEST_RELEASE,
        extra_body: Mapping[str, object] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Call:
        """Build the update of one valid id.

        Raises:
            ValueError: A bad *extra_body*.
        """
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
        return Call("POST", session_path(session_id), session_id, body=body, timeout=timeout)

    async def release_result(
        self,
        session_id: str,
        *,
        project_id: str | None,
        wait: bool,
        wait_timeout: float,
        fatal: Fatal | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> ReleaseResult:
        """Release one valid id; the outcome, good or bad, is in the result.

        *fatal* is a bulk run's: its first 401, 403, certificate failure or proxy 407 goes
        there, and no request of the run is sent after that.
        """
        call = self.update_call(session_id, project_id, timeout=timeout)
        call.fatal = fatal
        session: Session | None
        try:
            try:
                answer = await self.requester.call(call)
            except APIError as exc:
                # Not after a bulk run's fatal error: nothing of the run is sent after it.
                acted = call.maybe_acted and not call.fatal
                session = await self.check_ended(session_id, exc, timeout, maybe_acted=acted)
            else:
                try:
                    session = structure_session(answer)
                except APIResponseValidationError as exc:
                    session = await self.confirm(session_id, exc, timeout)
            if wait and (session is None or not session.is_terminal):
                session = await self.wait_terminal(session_id, wait_timeout, session, timeout)
        except APIError as exc:
            if fatal is not None and not fatal and isinstance(exc, _FATAL_IN_BULK):
                fatal.append(exc)
            return ReleaseResult(session_id, None, exc, call.attempts)
        except Exception as exc:  # a closed client, or a bug: this session's outcome, no more
            return ReleaseResult(session_id, None, exc, call.attempts)
        for released in self.on_released:
            released()
        return ReleaseResult(session_id, session, None, call.attempts)

    async def check_ended(
        self,
        session_id: str,
        failure: APIError,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        *,
        maybe_acted: bool = False,
    ) -> Session | None:
        """Return the session if a failed release found it ended; else raise *failure*.

        A 2xx whose body could not be read is the server's yes: see `confirm`.
        A refusal that may mean "already ended" (`ALREADY_ENDED_STATUSES`) is
        always checked. A connection error, a timeout or a 5xx is checked when
        the retry budget allows: the server may have acted before the answer
        was lost. So is any failure when *maybe_acted* (an earlier attempt met
        one of those): a later refusal, a 429 say, does not undo what the server
        did. If the check fails too, *failure* is raised, with the check's error
        as its cause and in a note.
        """
        requester = self.requester
        if isinstance(failure, APIStatusError) and failure.status_code in ALREADY_ENDED_STATUSES:
            pass
        elif isinstance(failure, APIResponseValidationError) and failure.accepted:
            return await self.confirm(session_id, failure, timeout)
        elif not (
            (maybe_acted or may_have_acted(failure))
            and not requester.closed
            and requester.budget.try_withdraw()
        ):
            raise failure
        try:
            session = await requester.retrieve(session_id, timeout)
        except APIError as check:
            failure.add_note(
                f"checking session {printable(session_id)} with retrieve failed too: {check}"
            )
            raise failure from check
        if not session.is_terminal:
            raise failure
        return session

    async def confirm(
        self,
        session_id: str,
        unreadable: APIResponseValidationError,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Session | None:
        """The session of a release that the server accepted (2xx) with an answer not a Session.

        A 2xx is never a failure: the session is retrieved, and where it cannot
        be read either (or the client closed meanwhile), the release stands with
        no `Session` (``None``), the parse error logged.
        """
        try:
            return await self.requester.retrieve(session_id, timeout)
        except (APIError, ClientClosedError) as check:
            logger.warning(
                "session %s released (the server answered %s), but its answer could not be "
                "read: %s; nor could retrieving it: %s",
                printable(session_id),
                unreadable.status_code or "2xx",
                unreadable,
                check,
            )
            return None

    def bulk_release_one(
        self,
        project_id: str | None,
        wait: bool,
        wait_timeout: float,
        *,
        given_by_server: bool = False,
    ) -> _bulk.ReleaseOne:
        """The release of one id of a bulk run, which never raises.

        Args:
            project_id: Sent as ``projectId``.
            wait: Confirm each session reached a terminal state.
            wait_timeout: Seconds to wait for each, with *wait*.
            given_by_server: The ids come from a listing (``release_all``): each is
                released whatever characters it holds (percent-encoded), where a
                caller's must be URL-safe; only one no URL can address fails.

        Raises:
            RuntimeError: The client is closed.
        """
        self.requester.check_open()
        # The run's first 401, 403, bad certificate or proxy 407: wrong for every session, so stop
        # sending.
        fatal: Fatal = []

        def release_one(session_id: object) -> Awaitable[ReleaseResult]:
            # A plain function handing back the coroutine: one frame less per release.
            try:
                if given_by_server and isinstance(session_id, str):
                    valid = server_session_id(session_id)
                else:
                    valid = check_session_id(session_id)
            except (ValueError, APIResponseValidationError) as exc:
                return _finished(ReleaseResult(str(session_id), None, exc, 0))
            if fatal:
                return _finished(ReleaseResult(valid, None, fatal[0], 0))
            return self.release_result(
                valid, project_id=project_id, wait=wait, wait_timeout=wait_timeout, fatal=fatal
            )

        return release_one

    async def wait_terminal(
        self,
        session_id: str,
        wait_timeout: float,
        last: Session | None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Session | None:
        """Poll `retrieve` at the polls' own pace until the session is terminal.

        Called once the server accepted the release: a 404 then means that the
        session ended and is gone (the session as last seen, from *last* on, is
        returned: ``None`` if never read), and a poll that fails for a reason
        that may pass (a 5xx, a connection error, a timeout) is tried again
        until *wait_timeout*.

        Raises:
            APITimeoutError: Not terminal within *wait_timeout* seconds.
            APIError: A poll failed for a reason that will not pass (a 401, a
                certificate).
        """
        requester = self.requester
        seen = [last]
        failed: list[APIError] = []

        async def fetch() -> Session | None:
            try:
                session = await requester.retrieve(session_id, timeout)
            except NotFoundError:
                logger.info(
                    "session %s is gone (404) after its release: it ended", printable(session_id)
                )
                return None
            except APIError as exc:
                failed[:] = [exc]
                raise
            seen[0] = session
            failed.clear()  # the last poll answered: no failure to name
            return session

        try:
            async with asyncio.timeout(wait_timeout):
                found = await poll_until(
                    fetch,
                    lambda session: session is None or session.is_terminal,
                    is_retryable,
                    requester.sleep,
                )
        except TimeoutError:
            last_failure = f"; the last poll failed: {failed[0]}" if failed else ""
            raise APITimeoutError(
                f"session {printable(session_id)} did not reach a terminal state "
                f"within {wait_timeout} s" + last_failure
            ) from None
        return seen[0] if found is None else found

    @contextlib.asynccontextmanager
    async def guard(
        self,
        session_id: str | Session,
        project_id: str | None,
        wait: bool,
        release_timeout: float,
        *,
        given_by_server: bool = False,
    ) -> AsyncIterator[None]:
        """Release *session_id* when the block exits, however it exits (see `SessionsAPI.guard`).

        While the block runs, the session is held in `holds`, so that closing
        the client releases it first (`release_held`). Nothing the release
        raises replaces the block's own exception or cancellation.

        *given_by_server*: the id is the server's (a create's answer), not a
        caller's: whatever its characters, it is held and released (see `hold`).

        Raises:
            ValueError: A bad id or *release_timeout*, on entry.
            APIResponseValidationError: With *given_by_server*, an id no URL can
                address, on entry.
            RuntimeError: The client is closed, on entry.
            Exception: The block ended normally and the release failed.
        """
        hold = self.hold(
            session_id, project_id, wait, release_timeout, given_by_server=given_by_server
        )
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                # The release still goes out, but a cancellation waits only so long, and
                # not for the confirmation of the end.
                hold.wait, hold.limit = False, min(hold.limit, CANCELLED_RELEASE_TIMEOUT)
            error = await self.release_shielded(hold)
            if error is not None:
                logger.warning(
                    "could not release session %s after %s: %s",
                    printable(hold.session_id),
                    type(exc).__name__,
                    error,
                )
                exc.add_note(
                    f"and releasing session {printable(hold.session_id)} failed: {error!r}"
                )
            raise
        error = await self.release_shielded(hold)
        if error is not None:
            # The error alone may name no session ("503"): say which one may run on.
            error.add_note(
                f"releasing session {printable(hold.session_id)} failed: it may still be running"
            )
            raise error

    def hold(
        self,
        session_id: str | Session,
        project_id: str | None,
        wait: bool,
        limit: float,
        *,
        given_by_server: bool = False,
    ) -> Hold:
        """Hold *session_id* until `release_shielded` releases it, or `release_held` does.

        Args:
            session_id: The session (or its id) to release in the end.
            project_id: Sent as ``projectId``; else the client's, else none.
            wait: Confirm the session reached a terminal state.
            limit: Seconds that its release may take in all.
            given_by_server: The id is the server's: it is not held to the
                characters a caller's id may use, for refusing it would leave
                the session running (its release percent-encodes it).

        Raises:
            ValueError: A bad id or *limit*.
            APIResponseValidationError: With *given_by_server*, an id no URL can address.
            RuntimeError: The client is closed, or belongs to another loop.
        """
        if given_by_server:
            valid = server_session_id(
                session_id.id if isinstance(session_id, Session) else session_id
            )
        else:
            valid = check_session_id(session_id)
        check_seconds("release_timeout", limit)
        self.requester.check_open()
        hold = Hold(valid, project_id, wait, limit)
        self.holds.add(hold)
        return hold

    def _start_release(self, hold: Hold, limit: float) -> asyncio.Future[ReleaseResult]:
        """The release of *hold*, started now unless it already was: it is released once."""
        if hold.release is None:
            hold.limit = min(hold.limit, limit)
            hold.release = asyncio.ensure_future(self._release_bounded(hold))
            hold.release.add_done_callback(lambda _: self.holds.discard(hold))
        else:
            hold.hurry(limit)  # begun by its guard, with the guard's longer bound: closing's
        return hold.release

    async def _release_bounded(self, hold: Hold) -> ReleaseResult:
        limit = hold.limit  # as cut meanwhile, if it was (`Hold.hurry`)
        bounded = asyncio.timeout(limit)
        # Its start is its deadline's own, not a reading of the clock a moment before: the
        # bound said is then the bound given, however long a loaded machine took in between.
        started = (bounded.when() or 0.0) - limit
        try:
            async with bounded as hold.deadline:
                return await self.release_result(
                    hold.session_id, project_id=hold.project_id, wait=hold.wait, wait_timeout=limit
                )
        except TimeoutError:
            # Its bound may have been cut since (a cancellation, the client closing): say
            # the bound it ran out of, not the one it began with.
            when = hold.deadline.when() if hold.deadline is not None else None
            bound = limit if when is None else when - started
            error = APITimeoutError(
                f"releasing session {printable(hold.session_id)} took over {bound:.3g} s"
            )
            return ReleaseResult(hold.session_id, None, error, 0)
        except asyncio.CancelledError:
            # Shielded, so cancelled only as the loop shuts down (a second Ctrl-C): the
            # program ends without its answer, and that is said, not passed over.
            logger.warning(
                "the release of session %s was cancelled before it was answered (the event "
                "loop is shutting down?): the session may still be running",
                printable(hold.session_id),
            )
            raise

    async def release_shielded(self, hold: Hold) -> Exception | None:
        """Release *hold*, shielded from our cancellation and bounded by its limit.

        If `release_held` released it already (the client was closed), that
        release's outcome is the answer: the session is never released twice.
        A cancellation meanwhile cuts what is left of the release to
        `CANCELLED_RELEASE_TIMEOUT`: no timeout, however long, holds a
        cancellation back for longer.

        Returns:
            The release's error, of whatever class, or ``None`` once it is released.

        Raises:
            asyncio.CancelledError: We were cancelled meanwhile; raised once the
                release is done.
        """
        release = self._start_release(hold, hold.limit)
        try:
            result = await finish_shielded(release, hold.hurry)
        except asyncio.CancelledError as cancelled:
            # Raised once the release ended: a failure of it is said all the same, or the
            # cancellation would carry the session away unreported.
            error = None if release.cancelled() else release.result().error
            if error is not None:
                logger.warning(
                    "could not release session %s (cancelled meanwhile): %s",
                    printable(hold.session_id),
                    error,
                )
                cancelled.add_note(
                    f"and releasing session {printable(hold.session_id)} failed: {error!r}"
                )
            raise
        return result.error

    async def release_held(self, limit: float) -> None:
        """Release every session that open guards hold, each within *limit* seconds.

        For closing the client: a program stopped by Ctrl-C, whose guards are
        still open in tasks not yet cancelled, leaves nothing running. Each
        guard, on its exit, then finds its session released. Shielded: a
        cancellation of the closing waits for these bounded releases.
        """
        cancelled = False
        while self.holds:
            releases = [self._start_release(hold, min(hold.limit, limit)) for hold in self.holds]
            try:
                await asyncio.wait(releases)
            except asyncio.CancelledError:
                cancelled = True  # the releases go on: wait for them, then say so
        if cancelled:
            raise asyncio.CancelledError


@attrs.define(eq=False)
class Hold:
    """A session an open guard holds: released once, by the guard's exit or the client's close.

    Attributes:
        session_id: The session to release.
        project_id: Sent as ``projectId``; else the client's, else none.
        wait: Confirm the session reached a terminal state.
        limit: Seconds that its release may take in all.
        release: The release, once started.
    """

    session_id: str
    project_id: str | None
    wait: bool
    limit: float
    release: asyncio.Future[ReleaseResult] | None = None
    deadline: asyncio.Timeout | None = None
    """The release's timeout, once it runs."""

    def hurry(self, within: float = CANCELLED_RELEASE_TIMEOUT) -> None:
        """Cut what is left of the release to *within* seconds: we were cancelled, or close."""
        if self.release is None or self.deadline is None:
            # Not begun (or not run its first step): it begins with the shorter bound.
            self.limit = min(self.limit, within)
        else:
            cut_short(self.release, self.deadline, within)


def cut_short(work: asyncio.Future[Any], deadline: asyncio.Timeout, within: float) -> None:
    """Move *work*'s *deadline* to *within* seconds from now, unless it comes sooner already.

    Work that has ended, or whose deadline has passed, is left as it is: its
    timeout can no longer be moved. It may have ended a moment ago, its
    done callbacks not run yet (a guard's release that the client's close
    finds still held, say).
    """
    if work.done() or deadline.expired():
        return
    soon = asyncio.get_running_loop().time() + within
    when = deadline.when()
    deadline.reschedule(soon if when is None else min(when, soon))


async def finish_shielded(
    work: Awaitable[_T], on_cancel: Callable[[], object] = lambda: None
) -> _T:
    """Run *work* to its end, shielded from our cancellation; bound it yourself.

    *on_cancel* is called at each cancellation that arrives meanwhile (to
    shorten the work's bound, say).

    Returns:
        What *work* returned.

    Raises:
        asyncio.CancelledError: We were cancelled meanwhile; raised once *work* is done.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            # Cancelled (again) while the work runs: let it finish first.
            if task.done():
                raise
            cancelled = True
            on_cancel()
    if cancelled:
        raise asyncio.CancelledError
    return result


async def _finished(result: ReleaseResult) -> ReleaseResult:
    # A turn of the loop even so: a run of ids that need no request (invalid, or after a
    # 401) would otherwise hold the loop to its end, deaf to a cancellation or a close.
    await asyncio.sleep(0)
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
        ValueError: A value is not JSON, or is nested too deeply for the encoder.
    """
    try:
        return json.dumps(fields, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra_body is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("extra_body is nested too deeply to be encoded as JSON") from None
