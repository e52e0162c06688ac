"""The one request path: a permit from the flow, an attempt, retries, the decoded answer.

Every call of a client, single or bulk, goes through `Requester.call`: the
first attempt runs bare, and only a retryable failure brings in the retry
loop (`_retry`), whose every attempt first takes a permit from the client's
flow control (`_flow`), goes through the transport and `for_status`, and
hands the permit back with what it learned. Nothing here knows what a
release means: that is `_release`.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias

import attrs

from ._config import USE_CLIENT_DEFAULT, Timeout, session_path
from ._converter import structure_session
from ._errors import (
    APIError,
    APIResponseValidationError,
    client_closed,
    excerpt,
    for_status,
    may_have_acted,
)
from ._flow import FlowControl
from ._models import Session
from ._retry import RetryBudget, RetryPolicy, build_retrying, is_retryable
from ._sleeps import Sleeps
from ._transport import Response, Transport

Fatal: TypeAlias = list[APIError]
"""A bulk run's fatal error, once it has one (at most one item)."""


class Held(Exception):
    """An attempt not sent: its call's ``held`` said to wait (never leaves the library)."""


@attrs.define
class Call:
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
    fatal: Fatal | None = None
    """A bulk run's fatal error, once it has one: the attempt is then not sent."""
    answered: Mapping[str, str] | None = None
    """The headers of the answer that succeeded (a listing's ``Date`` tells the server's clock)."""
    held: Callable[[], bool] | None = None
    """Asked once the attempt has its permit: if it says so, nothing is sent and `Held` is
    raised (a create that should stand in line behind others, see `_slots`)."""
    maybe_acted: bool = False
    """An attempt got no answer, or a 5xx: the server may have acted on it, whatever the
    attempts after it were told (see `Releaser.check_ended`)."""
    plan_limited: bool = False
    """A create: its 429 means no browser is free (the plan), not that requests come too
    fast, so the flow learns nothing from it: no smaller window, no pause for the others."""


@attrs.define(eq=False)
class Requester:
    """The client's request path: its transport, flow control, retry policy and budget.

    Args:
        transport: The aiohttp seam.
        flow: The client's one window and pause gate.
        policy: The retry policy.
    """

    transport: Transport
    flow: FlowControl
    policy: RetryPolicy
    budget: RetryBudget = attrs.field(init=False)
    closed: bool = attrs.field(init=False, default=False)
    loop: asyncio.AbstractEventLoop | None = attrs.field(init=False, default=None, repr=False)
    """The event loop of the client's first call: the only one it serves."""
    _retrying: Callable[[Callable[[Call], Awaitable[object]], Call], Awaitable[object]] = (
        attrs.field(init=False, repr=False)
    )
    _sleeps: Sleeps = attrs.field(init=False, factory=Sleeps, repr=False)
    _on_close: set[Callable[[], object]] = attrs.field(init=False, factory=set, repr=False)

    def __attrs_post_init__(self) -> None:
        self.budget = RetryBudget.for_policy(self.policy)
        self._retrying = build_retrying(self.policy, self.budget, self.is_closed, self.sleep)

    def is_closed(self) -> bool:
        """Whether the client was closed."""
        return self.closed

    def check_open(self) -> None:
        """Refuse a call to a closed client, or from another event loop than its own.

        Raises:
            RuntimeError: The client is closed, or belongs to another event loop.
        """
        if self.closed:
            raise client_closed()
        if asyncio.get_running_loop() is not self.loop:
            self._bind()

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
            self.transport.watch_loop()
            return
        raise RuntimeError(
            "this SessionsAPI belongs to another event loop (that of its first call): a client "
            "cannot move between loops (a second asyncio.run, a thread's own loop); make the "
            "client inside the loop that uses it, for instance in the coroutine given to "
            "asyncio.run, with 'async with SessionsAPI(...) as api:'"
        )

    def close(self) -> None:
        """Refuse further calls, and end the calls sleeping in a backoff or a poll at once.

        Each sleeper raises the closed-client `RuntimeError`.
        """
        self.closed = True
        self._sleeps.end()
        for stop in list(self._on_close):
            stop()

    def on_close(self, stop: Callable[[], object]) -> Callable[[], None]:
        """Have *stop* called when the client closes (a bulk run waiting on its input).

        A client closed already calls it at once: a run that starts a loop turn after
        its call (`release_iter`'s task) may come after the close.

        Returns:
            What forgets *stop*: call it once the work it stops is over.
        """
        if self.closed:
            stop()
        self._on_close.add(stop)
        return lambda: self._on_close.discard(stop)

    async def sleep(self, seconds: float) -> None:
        """Sleep *seconds* (a backoff, a poll's pace), unless the client closes meanwhile.

        Raises:
            RuntimeError: The client closed during the sleep.
        """
        self.check_open()
        await self._sleeps.sleep(seconds)

    async def call(self, call: Call) -> object:
        """Run *call* to its decoded JSON answer, with the retries its failures allow.

        Raises:
            RuntimeError: The client is closed, or belongs to another event loop.
            APIError: The last failure, once no retry is left or allowed.
        """
        if self.closed:
            raise client_closed()
        if asyncio.get_running_loop() is not self.loop:
            self._bind()
        self.budget.deposit()
        # The first attempt runs bare: the retry machinery costs only calls that fail.
        try:
            return await self.attempt(call)
        except APIError as exc:
            if not is_retryable(exc):
                raise
            call.replay = exc
        return await self._retrying(self.attempt, call)

    async def attempt(self, call: Call) -> object:
        """Send *call* once, under a permit of the flow; return its decoded answer."""
        if call.replay is not None:
            # The retry loop's first turn: the failure already seen, judged like any other.
            failure, call.replay = call.replay, None
            raise failure
        if self.transport.env_proxied:
            # Before the permit and the count: nothing is sent, no attempt is made.
            self.transport.check_env_proxy()
        flow = self.flow
        permit = flow.try_acquire() or await flow.acquire()
        if call.fatal:
            flow.give_back()
            raise call.fatal[0]
        if call.held is not None and call.held():
            flow.give_back()
            raise Held
        call.attempts += 1
        try:
            response = await self.transport.request(
                call.method, call.path, body=call.body, params=call.params, timeout=call.timeout
            )
        except BaseException as exc:
            flow.release(permit, None)
            call.maybe_acted = call.maybe_acted or may_have_acted(exc)
            raise
        refused_by_plan = call.plan_limited and response.status == 429
        flow.release(permit, None if refused_by_plan else response)
        error = for_status(response.status, response.headers, response.body)
        if error is not None:
            if response.status == 429:
                call.rate_limited += 1
            call.maybe_acted = call.maybe_acted or may_have_acted(error)
            raise error
        call.answered = response.headers
        try:
            # JSON between systems is UTF-8 (RFC 8259); given bytes, json.loads would first
            # guess among five encodings, in Python, on every answer.
            return json.loads(response.body.decode())
        except (ValueError, RecursionError):  # UnicodeDecodeError included; too deep a nesting
            return _decode_slowly(call, response)

    async def retrieve(self, session_id: str, timeout: Timeout = USE_CLIENT_DEFAULT) -> Session:
        """Return the session *session_id* as the API has it now."""
        call = Call("GET", session_path(session_id), session_id, timeout=timeout)
        return structure_session(await self.call(call))


def _decode_slowly(call: Call, response: Response) -> object:
    """Decode an answer the fast path could not: a leading BOM is forgiven, nothing else.

    Raises:
        APIResponseValidationError: The answer is not JSON (or nested too deep to read).
    """
    body = response.body
    if body.startswith(codecs.BOM_UTF8):
        try:
            return json.loads(body[len(codecs.BOM_UTF8) :].decode())
        except (ValueError, RecursionError):
            pass
    raise APIResponseValidationError(
        f"{call.method} {call.path}: the answer is not JSON",
        body=excerpt(body.decode("utf-8", errors="replace")),
        status_code=response.status,
    )
