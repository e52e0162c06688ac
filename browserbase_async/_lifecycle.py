"""The life of a session: create it, wait for a free browser, never lose it, release it.

A create (``POST /v1/sessions``) goes on the one request path (`_request`),
but it is not retried there, for two reasons:

- Its 429 means that the plan has no browser free (concurrent browsers, or
  creates per minute), not that requests come too fast. The create waits for
  a slot in `_slots.SlotQueue`, first come first served, up to ``wait_for_slot``
  seconds: until the server's hint (``Retry-After``, ``x-ratelimit-reset``)
  or until a release of this client frees a browser, whichever is first.
  The flow control learns nothing from it (no smaller window, no pause of the
  releases, which are what frees a browser), and no attempt is spent.
- Its outcome may be unknown (a timeout, a dropped connection, a 5xx, a
  cancellation while on the wire): the server may have made the session.
  Each create carries a unique tag in ``userMetadata`` (`CREATE_TAG_KEY`);
  such a create is looked up by its tag before anything else, and sent again
  only when the lookup finds nothing. A session found is returned, or, when
  the caller gave up, released. So one create makes at most one session, and
  every session the client made is known to it.

``session()`` is a create followed by `Releaser.guard`: it releases on exit
exactly as a guard does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from ._config import Timeout, check_seconds, check_timeout, server_session_id, session_path
from ._converter import structure_session, structure_sessions
from ._errors import (
    APICertificateError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    ClientClosedError,
    InternalServerError,
    RateLimitError,
    client_closed,
    excerpt,
    printable,
)
from ._models import CreatedSession, Region, Session
from ._release import CANCELLED_RELEASE_TIMEOUT, Releaser, cut_short, finish_shielded
from ._request import Call, Held
from ._slots import SlotQueue, slot_hint

logger: Final = logging.getLogger("browserbase_async")

CREATE_TAG_KEY: Final = "browserbase_async_create"
"""The ``userMetadata`` key of the tag each create carries, to find it if its answer is lost."""
DEFAULT_SESSION_WAIT_FOR_SLOT: Final = 300.0
"""Seconds that ``session()`` waits for a free browser, by default."""
RECOVERY_TIMEOUT: Final = CANCELLED_RELEASE_TIMEOUT
"""Seconds that finding and releasing the session of an abandoned create may take: it runs
because the caller cancelled, and no cancellation is held back longer than a guard's."""
MIN_SESSION_TIMEOUT: Final = 60
MAX_SESSION_TIMEOUT: Final = 21600
MAX_METADATA_CHARS: Final = 512
"""The API stores user metadata whose JSON is under this many characters (our tag included)."""
_SECRETS: Final = ("connectUrl", "seleniumRemoteUrl", "signingKey")
"""The answer's connection fields, kept out of every excerpt (the key, and the URL carrying it)."""
_UNKNOWN_OUTCOME: Final = (APIConnectionError, InternalServerError, APIResponseValidationError)
"""Failures of a create after which the server may have made the session."""
_PROXY_TYPES: Final = frozenset({"browserbase", "external", "none"})
_TAG_SHAPE: Final = "0" * 32
"""As long as a tag (a UUID's 32 hex digits): to measure the metadata the API will store."""


def create_fields(
    *,
    project_id: str | None,
    keep_alive: bool | None,
    timeout: int | None,
    region: Region | str | None,
    user_metadata: Mapping[str, Any] | None,
    browser_settings: Mapping[str, Any] | None,
    proxies: bool | Sequence[Mapping[str, Any]] | None,
    extension_id: str | None,
    extra_body: Mapping[str, Any] | None,
    wait_for_slot: float,
    request_timeout: Timeout,
) -> dict[str, Any]:
    """Return a create's body, as the API spells it, from checked arguments.

    Raises:
        ValueError: An argument the API would refuse, or a bad *wait_for_slot*
            or *request_timeout*, named.
    """
    check_seconds("wait_for_slot", wait_for_slot)
    check_timeout(request_timeout)
    fields: dict[str, Any] = {}
    for name, key, value in (
        ("project_id", "projectId", project_id),
        ("extension_id", "extensionId", extension_id),
    ):
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty str, got {value!r}")
            fields[key] = value
    if keep_alive is not None:
        if not isinstance(keep_alive, bool):
            raise ValueError(f"keep_alive must be a bool, got {keep_alive!r}")
        fields["keepAlive"] = keep_alive
    if timeout is not None:
        if (
            not isinstance(timeout, int)
            or isinstance(timeout, bool)
            or not MIN_SESSION_TIMEOUT <= timeout <= MAX_SESSION_TIMEOUT
        ):
            raise ValueError(
                f"timeout must be whole seconds from {MIN_SESSION_TIMEOUT} to "
                f"{MAX_SESSION_TIMEOUT}, got {timeout!r}"
            )
        fields["timeout"] = timeout
    if region is not None:
        try:
            fields["region"] = Region(region).value
        except ValueError:
            choices = ", ".join(member.value for member in Region)
            raise ValueError(f"region must be one of {choices}; got {region!r}") from None
    if user_metadata is not None:
        fields["userMetadata"] = _checked_metadata(user_metadata)
    if browser_settings is not None:
        if not isinstance(browser_settings, Mapping):
            raise ValueError(f"browser_settings must be a mapping, got {browser_settings!r}")
        fields["browserSettings"] = dict(browser_settings)
    if proxies is not None:
        fields["proxies"] = _checked_proxies(proxies)
    if extra_body is not None:
        if not isinstance(extra_body, Mapping):
            raise ValueError(f"extra_body must be a mapping, got {type(extra_body).__name__}")
        for key in extra_body:
            if not isinstance(key, str) or key in fields or key == "userMetadata":
                raise ValueError(f"extra_body must not set {key!r}: pass it as its own argument")
        fields |= extra_body
    encode_body(fields)  # a value that is not JSON fails here, before any request
    return fields


def _checked_metadata(metadata: object) -> dict[str, Any]:
    if not isinstance(metadata, Mapping) or not all(isinstance(key, str) for key in metadata):
        raise ValueError(f"user_metadata must be a mapping with str keys, got {metadata!r}")
    if CREATE_TAG_KEY in metadata:
        raise ValueError(f"user_metadata must not set {CREATE_TAG_KEY!r}: the client sets it")
    tagged = {**metadata, CREATE_TAG_KEY: _TAG_SHAPE}
    size = len(encode_body(tagged, what="user_metadata"))
    if size >= MAX_METADATA_CHARS:
        raise ValueError(
            f"user_metadata is too long: {size} characters as JSON with the client's tag "
            f"({len(CREATE_TAG_KEY) + 40} of them); the API takes under {MAX_METADATA_CHARS}"
        )
    return dict(metadata)


def _checked_proxies(proxies: object) -> bool | list[Any]:
    if isinstance(proxies, bool):
        return proxies
    if isinstance(proxies, str | bytes) or not isinstance(proxies, Sequence):
        raise ValueError(f"proxies must be a bool or a list of proxy configs, got {proxies!r}")
    for proxy in proxies:
        if not isinstance(proxy, Mapping) or proxy.get("type") not in _PROXY_TYPES:
            raise ValueError(
                f"each proxy must be a mapping whose 'type' is one of "
                f"{sorted(_PROXY_TYPES)}, got {proxy!r}"
            )
        if proxy["type"] == "external" and not isinstance(proxy.get("server"), str):
            raise ValueError(f"an external proxy needs a 'server' str, got {proxy!r}")
    return [dict(proxy) for proxy in proxies]


def encode_body(fields: Mapping[str, Any], *, what: str = "the create's body") -> bytes:
    """Encode *fields* as strict JSON (no NaN, no infinity).

    Raises:
        ValueError: A value is not JSON.
    """
    try:
        return json.dumps(fields, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None


def created_session(data: object) -> CreatedSession:
    """Build a `CreatedSession` from a create's (or a retrieve's) decoded answer.

    Raises:
        APIResponseValidationError: It is not a Session with its connection
            fields; the message never holds their values.
    """
    if not isinstance(data, dict):
        return _as_created(structure_session(data), {})
    public = {key: value for key, value in data.items() if key not in _SECRETS}
    return _as_created(structure_session(public), data)


def _as_created(session: Session, data: Mapping[str, Any]) -> CreatedSession:
    found: dict[str, str] = {}
    for key in _SECRETS:
        value = data.get(key)
        if not isinstance(value, str):
            raise APIResponseValidationError(
                f"session {printable(session.id)}: the answer has no {key} string", body=""
            )
        found[key] = value
    fields: dict[str, Any] = {
        field.name: getattr(session, field.name) for field in attrs.fields(Session)
    }
    return CreatedSession(
        **fields,
        connect_url=found["connectUrl"],
        selenium_remote_url=found["seleniumRemoteUrl"],
        signing_key=found["signingKey"],
    )


@attrs.define
class CreateCounts:
    """What the creates of one client met, for a demo or a report (counts and seconds)."""

    created: int = 0
    refused: int = 0
    waited: int = 0
    waited_seconds: float = 0.0
    lost_answers: int = 0
    recovered: int = 0
    released_after_giving_up: int = 0
    duplicates_released: int = 0
    """Sessions a retried create made beside the one it returned (a lookup missed them)."""


@attrs.define(eq=False)
class _Create:
    """One create in progress: its tag and call, and whether a session may exist."""

    tag: str
    call: Call
    task: asyncio.Task[Any] | None
    """The task the create runs in: closing the client cuts it (`Lifecycle.close`)."""
    unsure: bool = False
    sent: int = 0
    """The call's attempts before the one under way: more since, and it went out."""
    on_turn: bool = False
    hinted: bool = False
    waited: bool = False
    cut: bool = False
    """Cut by the client's close, which settles it (`settling`): the create ends closed."""
    settling: asyncio.Future[None] | None = None
    """Finding and releasing what it made, once its caller gave up or the client closed."""
    limit: float = math.inf
    """Seconds that `settling` may take, as it begins (cut by a close before it runs)."""
    deadline: asyncio.Timeout | None = None
    """The bound of `settling`, once it runs."""

    @property
    def maybe_made(self) -> bool:
        """Whether the server may have made a session that nobody knows of yet."""
        return self.unsure and self.call.attempts > self.sent


@attrs.define(eq=False)
class Lifecycle:
    """Creates and ``session()`` blocks on the client's request path and its releaser.

    Args:
        releaser: The client's releases (and through it, its request path).
    """

    releaser: Releaser
    slots: SlotQueue = attrs.field(factory=SlotQueue, init=False)
    counts: CreateCounts = attrs.field(factory=CreateCounts, init=False)
    closing: bool = attrs.field(default=False, init=False)
    """The client closes: no create is sent any more."""
    _creates: set[_Create] = attrs.field(factory=set, init=False)
    """The creates under way, for `close`."""

    def __attrs_post_init__(self) -> None:
        self.releaser.on_released.append(self.slots.freed)

    async def create(
        self, fields: Mapping[str, Any], *, wait_for_slot: float, timeout: Timeout
    ) -> CreatedSession:
        """Create a session (see `SessionsAPI.create`).

        Raises:
            RateLimitError: No browser was free within *wait_for_slot* seconds.
            APIError: The create failed, and no session is left behind.
        """
        requester = self.releaser.requester
        requester.check_open()
        if self.closing:
            raise client_closed()
        tag = uuid.uuid4().hex
        metadata = {**fields.get("userMetadata", {}), CREATE_TAG_KEY: tag}
        body = encode_body({**fields, "userMetadata": metadata})
        call = Call("POST", "/v1/sessions", None, body=body, timeout=timeout, plan_limited=True)
        state = _Create(tag, call, asyncio.current_task())
        # Asked once the attempt has its permit: a closing client sends no create (it would
        # be made as the client closes, and left running); and a create that waited for a
        # permit while others were refused joins their line.
        call.held = lambda: (
            self.closing or (wait_for_slot > 0 and not state.on_turn and self.slots.busy)
        )
        requester.budget.deposit()
        self._creates.add(state)
        try:
            created = await self._create(state, wait_for_slot)
        except asyncio.CancelledError:
            self._end_turn(state)
            task = state.task
            if state.cut and task is not None and task.uncancel() == 0:
                # Only the close cut it, and the close settles it: the closed-client error.
                raise self._closed_under(state) from None
            if state.unsure:
                # The caller gave up while the server may have made the session: find, release.
                await finish_shielded(self._settle(state, RECOVERY_TIMEOUT))
            raise
        finally:
            # However the create ended, a turn it still holds goes to the next in line.
            self._end_turn(state)
            self._creates.discard(state)
        self.counts.created += 1
        return created

    def close(self, limit: float) -> list[asyncio.Future[None]]:
        """Stop the creates, for the client's close; settle those that may have made a session.

        No create is sent from now on, and none waiting in line gets a turn.
        A create whose outcome is unknown (on the wire, or looking its tag up)
        is cut at once: it ends with the closed-client `RuntimeError`, and its
        tag is looked up here and what it made released, within *limit*
        seconds. Await the futures returned (`settled`) before the client closes.

        Args:
            limit: Seconds that settling each create may take, in all.

        Returns:
            The settlings under way, the ones begun by a cancellation included.
        """
        self.closing = True
        self.slots.close()
        settling: list[asyncio.Future[None]] = []
        for state in self._creates:
            if state.settling is None:
                if not state.maybe_made or state.task is None:
                    continue  # nothing sent that may have made a session: it ends closed
                state.cut = True
                state.task.cancel()
            settling.append(self._settle(state, limit))
        return settling

    @staticmethod
    async def settled(settling: list[asyncio.Future[None]]) -> None:
        """Wait for *settling* (see `close`), shielded: a cancellation is raised after it.

        Raises:
            asyncio.CancelledError: We were cancelled meanwhile; raised once all are done.
        """
        if settling:
            await finish_shielded(asyncio.gather(*settling))

    def _closed_under(self, state: _Create) -> ClientClosedError:
        error = client_closed()
        error.add_note(
            "the client closed while this create's outcome was unknown; closing looked its "
            f"tag up, user_metadata['{CREATE_TAG_KEY}'] = '{state.tag}', to release what it made"
        )
        return error

    async def _create(self, state: _Create, wait_for_slot: float) -> CreatedSession:
        requester, slots = self.releaser.requester, self.slots
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + wait_for_slot
        failures = 0
        refusal: RateLimitError | None = None
        again = False  # refused on a turn: back to the head of the line
        while True:
            if wait_for_slot > 0 and not state.on_turn and (refusal is not None or slots.busy):
                # In line behind those who came first, or for a browser after a refusal.
                if not state.waited:
                    state.waited = True
                    self.counts.waited += 1
                try:
                    state.hinted = await slots.wait_turn(deadline, first=again)
                except TimeoutError:
                    raise _ran_out(refusal, wait_for_slot) from None
                state.on_turn = True
            state.unsure, state.sent = True, state.call.attempts
            try:
                data = await requester.attempt(state.call)
            except asyncio.CancelledError:
                # Cancelled while waiting for a permit: nothing was sent, nothing to look up.
                state.unsure = state.maybe_made
                raise
            except Held:
                state.unsure = False
                if self.closing:
                    raise client_closed() from None
                # Others were refused while this one waited for a permit: it lines up too.
                continue
            except RateLimitError as refused:
                state.unsure = False
                self.counts.refused += 1
                refusal, again = refused, state.on_turn
                slots.refused(slot_hint(refused.headers), on_turn=state.on_turn)
                state.on_turn = False
                if wait_for_slot <= 0 or loop.time() >= deadline:
                    raise _ran_out(refused, wait_for_slot) from None
                continue
            except APICertificateError:
                raise  # no handshake, no request: nothing was made to look up
            except _UNKNOWN_OUTCOME as failure:
                # A turn is kept through the lookup and the retry: the slot it stands for
                # is this create's until it knows whether it used it.
                found = await self._look_up(state, failure)
                if found is not None:
                    self._end_turn(state, served=True)
                    self._count_wait(state, started)
                    return found
                state.unsure = False
                failures += 1
                if failures >= requester.policy.max_attempts or not requester.budget.try_withdraw():
                    raise
                await requester.sleep(requester.policy.backoff(failures))
                continue
            self._end_turn(state, served=True)
            try:
                created = created_session(data)
            except APIResponseValidationError as failure:
                # The session was made, but its answer cannot be read: find it by its tag.
                found = await self._look_up(state, failure)
                if found is None:
                    raise
                created = found
            else:
                if failures:
                    # A lookup found nothing before this retry, yet its index may have lagged
                    # behind a session the server did make: one more look, one GET.
                    await self._release_duplicates(state.tag, created.id)
            self._count_wait(state, started)
            return created

    def _end_turn(self, state: _Create, *, served: bool = False) -> None:
        if state.on_turn:
            state.on_turn = False
            if served:
                self.slots.served(state.hinted)
            else:
                self.slots.leave(state.hinted)

    def _count_wait(self, state: _Create, started: float) -> None:
        if state.waited:
            self.counts.waited_seconds += asyncio.get_running_loop().time() - started

    async def _look_up(self, state: _Create, failure: APIError) -> CreatedSession | None:
        """Find the session a create with an unknown outcome made, by its tag.

        Returns:
            The session, retrieved in full; ``None`` if the server made none.

        Raises:
            APIError: *failure*, if the lookup failed too (with a note: the tag to
                look for); or the session cannot be used (it is then released).
        """
        self.counts.lost_answers += 1
        try:
            sessions = await self._find(state.tag)
        except (APIError, ClientClosedError) as lookup:
            # Closed under the create (`aclose`): the create's own failure, with the tag.
            failure.add_note(
                f"looking the create up by its tag failed too ({lookup}); a session may "
                f"exist with user_metadata['{CREATE_TAG_KEY}'] = '{state.tag}'"
            )
            raise failure from lookup
        if not sessions:
            return None
        # Several, when an earlier lookup missed one (a lagging index) and the create was
        # sent again: one is the create's, the others are released.
        found = min(sessions, key=lambda session: session.is_terminal)
        await self._release_all(session for session in sessions if session is not found)
        logger.info(
            "create: %s; found session %s by its tag, as made", failure, printable(found.id)
        )
        try:
            created = created_session(await self._retrieve_raw(found.id))
        except APIError:
            # Known, but not usable: released, so that nothing is left running.
            await self._release(found.id)
            raise
        self.counts.recovered += 1
        state.unsure = False
        return created

    async def _find(self, tag: str) -> list[Session]:
        """The sessions that carry the create tag *tag* (more than one after a retry)."""
        query = f"user_metadata['{CREATE_TAG_KEY}']:'{tag}'"
        call = Call("GET", "/v1/sessions", None, params={"q": query})
        found = structure_sessions(await self.releaser.requester.call(call))
        # The server's filter is not taken on trust: a session whose metadata shows another
        # tag (a server that ignores q, or reads it otherwise) is someone else's, running.
        ours = [session for session in found if _may_carry(session, tag)]
        if len(ours) < len(found):
            logger.warning(
                "looking up user_metadata['%s'] = '%s' listed %d sessions that do not carry "
                "it: left alone (does the server filter by q?)",
                CREATE_TAG_KEY,
                tag,
                len(found) - len(ours),
            )
        return [session for session in ours if _addressable(session)]

    async def _release_duplicates(self, tag: str, kept: str) -> None:
        """Release the sessions that carry *tag* but *kept*: a retried create's extra ones.

        A failed lookup is logged with the tag, and the create still succeeds:
        its session is made and known.
        """
        try:
            sessions = await self._find(tag)
        except APIError as exc:
            logger.warning(
                "a retried create could not check for a second session with "
                "user_metadata['%s'] = '%s': %s",
                CREATE_TAG_KEY,
                tag,
                exc,
            )
            return
        await self._release_all(session for session in sessions if session.id != kept)

    async def _release_all(self, sessions: Iterable[Session], *, duplicates: bool = True) -> None:
        """Release *sessions* (those not ended yet), one after the other: rarely more than one."""
        for session in sessions:
            if not session.is_terminal:
                await self._release(session.id, duplicate=duplicates)

    async def _retrieve_raw(self, session_id: str) -> object:
        # An id the server gave: percent-encoded where it needs to be, never raw in the URL.
        call = Call("GET", session_path(session_id), session_id)
        return await self.releaser.requester.call(call)

    async def _release(self, session_id: str, *, duplicate: bool = False) -> None:
        result = await self.releaser.release_result(
            session_id, project_id=None, wait=False, wait_timeout=0.0
        )
        if result.error is not None:
            logger.warning("could not release session %s: %s", printable(session_id), result.error)
        elif duplicate:
            self.counts.duplicates_released += 1
        else:
            self.counts.released_after_giving_up += 1

    def _settle(self, state: _Create, limit: float) -> asyncio.Future[None]:
        """Find and release what *state* made, within *limit* seconds; once, however asked.

        Asked again (a cancelled create's, then the client's close), the
        settling under way is kept, its bound cut to *limit* if that is sooner.
        """
        if state.settling is None or state.deadline is None:
            # Not begun (or not run its first step): it begins with the shorter bound.
            state.limit = min(state.limit, limit)
            if state.settling is None:
                state.settling = asyncio.ensure_future(self._abandon(state))
        else:
            cut_short(state.settling, state.deadline, limit)
        return state.settling

    async def _abandon(self, state: _Create) -> None:
        """Find and release what a create given up on (cancelled, or closed under) may have made."""
        try:
            async with asyncio.timeout(state.limit) as state.deadline:
                await self._release_all(await self._find(state.tag), duplicates=False)
        except (APIError, RuntimeError, TimeoutError) as exc:
            _may_have_left(state.tag, excerpt(str(exc)) or type(exc).__name__)
        except asyncio.CancelledError:
            # Cancelled only as the loop shuts down (a second Ctrl-C): said too, then raised.
            _may_have_left(state.tag, "finding it was cancelled (the event loop is shutting down?)")
            raise

    @contextlib.asynccontextmanager
    async def session(
        self,
        fields: Mapping[str, Any],
        *,
        wait_for_slot: float,
        timeout: Timeout,
        project_id: str | None,
        wait: bool,
        release_timeout: float,
    ) -> AsyncIterator[CreatedSession]:
        """Create a session, and release it when the block exits, as a guard does."""
        created = await self.create(fields, wait_for_slot=wait_for_slot, timeout=timeout)
        # No await between the create and the guard: nothing can interrupt in between.
        async with self.releaser.guard(
            created.id, project_id, wait, release_timeout, given_by_server=True
        ):
            yield created


def _may_have_left(tag: str, why: str) -> None:
    logger.warning(
        "a create given up on may have left a session with user_metadata['%s'] = '%s': %s",
        CREATE_TAG_KEY,
        tag,
        why,
    )


def _may_carry(session: Session, tag: str) -> bool:
    """Whether *session* may carry the create tag *tag*: its metadata says so, or is not given."""
    metadata = session.user_metadata
    return metadata is None or metadata.get(CREATE_TAG_KEY) == tag


def _addressable(session: Session) -> bool:
    """Whether a URL can address *session* (any id the server gave can, but ``.`` and the like).

    One that none can is logged: no client can release it through the API.
    """
    try:
        server_session_id(session.id)
    except APIResponseValidationError as exc:
        logger.error("%s", exc)
        return False
    return True


def _ran_out(refusal: RateLimitError | None, wait_for_slot: float) -> RateLimitError:
    """The error of a create that found no browser free in time (nothing was created)."""
    if refusal is None:
        # Never sent: it waited in line behind other creates for all of its time.
        return RateLimitError(
            f"no browser was free within wait_for_slot={wait_for_slot} s "
            "(waiting in line behind other creates)",
            status_code=429,
            body=None,
            headers={},
        )
    if wait_for_slot > 0:
        refusal.add_note(f"no browser was free within wait_for_slot={wait_for_slot} s")
    return refusal
