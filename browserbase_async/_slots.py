"""Creates waiting for a free browser: the line, its turns, and the server's hints.

A plan limits the browsers running at once and the creates per minute; a
create beyond either is answered 429. The creates of one client that wait for
a browser stand in one line (`SlotQueue`), served first come, first served;
the head is given a *turn* to send when the server's hint (`slot_hint`) has
passed, or as soon as a release of this client frees a browser.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Mapping
from typing import Final

import attrs

from ._errors import client_closed
from ._retry import retry_after

DEFAULT_SLOT_RETRY: Final = 1.0
"""Seconds before a create refused without a hint tries again (unless a release frees one first)."""
FIRST_PROBE_GAP: Final = 0.01
"""Seconds between probes of a plan that refused a release's turn, at first; then doubling."""
MAX_PROBE_GAP: Final = 1.0
"""The longest gap, in seconds, between probes of a plan that keeps refusing."""
_EPOCH_RESET: Final = 1e9
"""An ``x-ratelimit-reset`` above this is a Unix time, not seconds to wait."""
_SWEEP_SLACK: Final = 16
"""Gone waiters the line may hold beyond its live ones before it is swept."""


def slot_hint(headers: Mapping[str, str]) -> float | None:
    """Seconds until a browser may be free, by a create's 429: the longer of its hints.

    ``Retry-After`` (or ``retry-after-ms``), and ``x-ratelimit-reset`` (seconds;
    a Unix time when it is that large). ``None`` when neither is readable, or
    neither asks for a wait (0, negative, a time past): that 429 is a bare one,
    as for any call, and not a turn at once, which would send creates to a full
    plan as fast as the round trip for all of ``wait_for_slot``.
    """
    hints = [hint] if (hint := retry_after(headers)) is not None else []
    reset = headers.get("x-ratelimit-reset")
    if reset is not None:
        try:
            seconds = float(reset)
        except ValueError:
            seconds = math.nan
        if seconds > _EPOCH_RESET:
            seconds -= time.time()
        if math.isfinite(seconds):
            hints.append(max(seconds, 0.0))
    longest = max(hints, default=0.0)
    return longest if longest > 0 else None


@attrs.define(eq=False)
class SlotQueue:
    """Creates waiting for a free browser, served first come, first served.

    A create refused with 429 joins the line; so does any create that comes
    while others wait, so that none jumps the line. The head gets a *turn*
    (the right to send) when the server's hint has passed, or at once when a
    release of this client frees a browser. A turn refused again goes back to
    the head of the line and sets the next hint; a turn not used (an error, a
    cancellation) goes to the next in line.

    After a success that followed the hint, or refusals, the next in line
    goes at once (a limit that reset may have room for many), until one is
    refused. A release's turn does not chain so: it stands for one browser.
    Once a release's turn was refused (the plan is held by others' sessions,
    or limits creates per minute), releases are doubted: one turn probes at a
    time, the probes spaced by a gap that doubles with each refusal (from
    `FIRST_PROBE_GAP` to `MAX_PROBE_GAP`), so that a long run of releases on
    a full plan costs a few 429s, not one per release.
    """

    _waiting: collections.deque[asyncio.Future[bool]] = attrs.field(
        factory=collections.deque, init=False
    )
    _live: int = attrs.field(default=0, init=False)
    """Waiters in the line not yet granted nor gone (the gone stay in it until swept)."""
    _sending: int = attrs.field(default=0, init=False)
    _retry_at: float = attrs.field(default=0.0, init=False)
    _timer: asyncio.TimerHandle | None = attrs.field(default=None, init=False)
    _doubt: bool = attrs.field(default=False, init=False)
    _credits: int = attrs.field(default=0, init=False)
    _gap: float = attrs.field(default=0.0, init=False)
    _next_probe: float = attrs.field(default=0.0, init=False)
    _probe_timer: asyncio.TimerHandle | None = attrs.field(default=None, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    @property
    def busy(self) -> bool:
        """Whether creates wait for a slot, or one sent on a turn is out: newcomers line up."""
        return self._live > 0 or self._sending > 0

    async def wait_turn(self, deadline: float, *, first: bool = False) -> bool:
        """Wait in line for a turn to send a create.

        Args:
            deadline: The event loop's time after which to give up.
            first: Go back to the head of the line (a turn refused again).

        Returns:
            Whether the turn came from the server's hint (or a success that
            followed one), rather than from one freed browser; then say how it
            went: `served`, `refused` or `leave`.

        Raises:
            TimeoutError: *deadline* came first.
        """
        if self._closed:
            raise client_closed()
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if first:
            self._waiting.appendleft(waiter)
        else:
            self._waiting.append(waiter)
        self._live += 1
        self._arm()
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except (TimeoutError, asyncio.CancelledError):
            if waiter.done() and not waiter.cancelled():
                # Ended by the close in the same turn, its error is not raised: ours stands (a
                # cancellation is never turned into another error).
                if waiter.exception() is None:
                    self.leave(waiter.result())  # granted, but not to be used
            else:
                self._left(waiter)
            self._arm()
            raise

    def _left(self, waiter: asyncio.Future[bool]) -> None:
        """A waiter gone from the line: skipped by `_grant` until swept out.

        Taking it out at once would scan the line per waiter that leaves
        (20,000 cancelled together: 200 million steps); the line is swept when
        more than half of it is gone instead, O(1) a waiter in all.
        """
        waiter.cancel()
        self._live -= 1
        if len(self._waiting) > 2 * self._live + _SWEEP_SLACK:
            self._waiting = collections.deque(w for w in self._waiting if not w.done())

    def freed(self) -> None:
        """A release of this client succeeded: one browser may be free, give the head a turn.

        While releases are doubted, it is a credit instead: the next probe goes
        when the one out (if any) is answered and the gap has passed.
        """
        if self._doubt:
            self._credits += 1
            self._probe_soon()
            return
        self._grant(hinted=False)

    def served(self, hinted: bool) -> None:
        """A create sent on a turn was served.

        After a turn the server's hint gave, or after refusals, there may be
        room for more (a limit that reset, a plan others held and left): the
        next in line goes at once, and so on until one is refused. After a
        turn that one freed browser gave, there is no sign of more room.
        """
        self._sending -= 1
        if hinted or self._doubt:
            self._grant(hinted=True)
        self._doubt, self._credits, self._gap = False, 0, 0.0
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        self._arm()

    def refused(self, hint: float | None, *, on_turn: bool = False) -> None:
        """A create was refused for want of a slot.

        Args:
            hint: Seconds the server asked to wait, if it said.
            on_turn: The create was sent on a turn, which ends here.
        """
        loop = asyncio.get_running_loop()
        if on_turn:
            self._sending -= 1
            self._doubt = True
            self._gap = min(max(self._gap * 2, FIRST_PROBE_GAP), MAX_PROBE_GAP)
            self._next_probe = loop.time() + self._gap
            # Releases that came back while this one was out may postdate the refusal:
            # they are worth one more probe, no more.
            self._credits = min(self._credits, 1)
        self._retry_at = loop.time() + (DEFAULT_SLOT_RETRY if hint is None else hint)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm()

    def leave(self, hinted: bool) -> None:
        """A turn ended neither served nor refused (an error, a cancellation).

        The slot it stood for may still be free: the next in line takes it.
        """
        self._sending -= 1
        self._grant(hinted)
        self._arm()

    def close(self) -> None:
        """The client closed: every waiting create ends with the closed-client error."""
        self._closed = True
        for timer in (self._timer, self._probe_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._probe_timer = None
        self._live = 0
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(client_closed())

    def _grant(self, hinted: bool) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self._live -= 1
                self._sending += 1
                waiter.set_result(hinted)
                return

    def _arm(self) -> None:
        # While creates wait and none is out on a turn, a timer must give the next turn.
        if self._live and not self._sending and self._timer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(self._retry_at, loop.time()), self._ring)
        self._probe_soon()

    def _probe_soon(self) -> None:
        """A probe for the credits of doubted releases, once none is out and the gap has passed."""
        if (
            not self._credits
            or self._sending
            or not self._live
            or self._probe_timer is not None
            or self._closed
        ):
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_probe:
            self._probe_timer = loop.call_at(self._next_probe, self._probe)
            return
        self._credits = 0
        self._grant(hinted=False)

    def _probe(self) -> None:
        self._probe_timer = None
        self._probe_soon()

    def _ring(self) -> None:
        self._timer = None
        if not self._sending:
            self._grant(hinted=True)
        self._arm()
