"""The client-wide flow control: one window of requests in flight, one pause gate, the figures.

Every attempt of every call of a `SessionsAPI` takes a permit here first:
single calls, ``release``'s checks and polls, each guard's release, every
bulk worker. So a scraper's own ``gather`` of ``release()`` gets the same
protection as ``release_many``.

The window (AIMD after Chiu and Jain, with TCP's slow start and CUBIC's memory
of the last maximum), built so that clients that share one limit without
knowing of each other (a fleet) converge to equal shares that keep it full:

- It starts at `INITIAL_WINDOW` and, until the first 429, grows by one per
  success sent with at least half of it in flight (it doubles each round
  trip while in use), up to ``max_window``.
- The first 429 ends that: the window before its last doubling fitted, so it
  falls to the larger of half itself and the load the request was refused at
  (minus one), times `DECREASE`.
- After that, a 429 multiplies the window by `DECREASE`, once per round trip
  (only a request sent after the last cut cuts again): a factor of the
  window, so that a client with one or two requests in flight when the
  others' load refuses it keeps its share; a larger window loses more, which
  is what brings a fleet's windows together. Only a request refused with the
  window in use (half of it or more in flight: the client's own load met the
  limit) also drops the window below that load, one place per such refusal,
  so that a burst of refusals lands at what the server took within one round
  trip; but no lower than `BURST_FLOOR` of the cut window, so that a client
  refused again and again in a round the others filled keeps most of its share
  (without that floor, whoever sent last was crushed to a window of two or
  three, and a short fleet run ended far from equal shares).
- The window at the cut is remembered as the *ceiling*. Below it, the window
  climbs back halving the gap each round trip; just under it, it probes one
  place higher only every `PROBE_ROUNDS` round trips, so that a steady limit
  costs few refusals; a probe that holds a whole place past the ceiling
  forgets it, and the window climbs on with a step that doubles each round
  trip, following a limit that rose (or room that others left). A cut below
  the ceiling lowers the ceiling to between the two (CUBIC's "fast
  convergence"): room for a client that joins.
- Successes grow the window only while it is in use (sent with `IN_USE` of
  it, or all of it but one place, in flight), so that a quiet client does not
  inflate it. Any answer but a refusal is a success: a 404 is room at the
  server as much as a 200. A 5xx or a lost answer neither grows nor cuts it.
- Below one request per round trip (a window of one, refused twice running),
  the client paces: after each answer the gate stays closed for a *gap*,
  which each refusal at the floor that follows another makes `GAP_GROWTH`
  times longer (from `FIRST_GAP`) and each success `GAP_DECAY` times shorter.
  It also shrinks with time since it last grew, as
  ``0.5 ** (t / GAP_HALF_LIFE) ** 3``: flat at first, so that a steady pace is
  rarely probed, then steep, so that after a storm of refusals the client is
  back to its share within a second or two even at one request per gap. Once
  the gap is under `GAP_EXIT` of a round trip (or under `LAST_GAP`) pacing
  ends, and the window climbs as past a stale ceiling; but a shallow spell (a
  gap that never grew past `SHALLOW_GAP`, while the waiting calls carry fewer
  than `SHALLOW_DANGER` refusals each) lasts `SHALLOW_SPELL` at least, so
  that a client whose share is about one request per round trip (a fleet at a
  limit per second) does not leave pacing at its first success to climb to
  three or four places and be refused again.
- At the client's first success ever, pacing ends if the gap is under its round
  trip (`FIRST_GAP_EXIT`), not a quarter of it: a gap that short was learned
  before any round trip, from refusals alone, in the first burst of a fleet
  that starts together, where whoever sent last is refused a few times within a
  millisecond and crushed to a window of one. Kept, that gap held the client at
  a request every tenth of a second for seconds while the server had room for
  its share (8 clients on 50 in flight: one client 2.8 times its fair time),
  since at a window of one the others' refusals lengthened the gap as fast as
  successes shortened it. Not while the calls carry a refusal each or more
  (`CAUTION`, below): a crowd is paced from its first burst too, and ending
  that pace cost it more refusals per call, and failed calls. (Ending any
  pace at the first success also mends a storm faster, but costs the crowds.)
- Pacing turns cautious once the calls waiting carry `CAUTION` refusals or
  more each on average (each call fails at the one after its ``max_rate_limited``-th;
  a refusal adds one to the count, a success takes away the finished call's
  share of it): the *danger* is that average. Then a refusal running
  lengthens the gap by ``GAP_GROWTH ** (1 + danger - CAUTION)`` (a call
  near its last refusal is the one about to fail), a lone refusal between
  successes lengthens it too, by `GAP_GROWTH`, and the gap's half-life is
  stretched by `CAUTION_HALF_LIFE` per refusal a call carries past
  `CAUTION`. That is the crowd's case, more clients than the limit has places: a hundred clients
  sharing 20 requests a second each need a gap of about five seconds, which
  the plain rule's decay in time would not let the gap keep (it held it near
  0.84 s, where 83 % of the sends were refused, and 117 of 600 calls failed).
  A fleet of a few clients, or a storm met by a client with many calls, stays
  under the threshold and paces as before.
- A 429 whose wait is 0, or an HTTP-date in the past, asks for no wait: it is
  a bare refusal for the window and the pace.

An answer that asks for a wait (``Retry-After``, ``retry-after-ms``, up to
``max_retry_after``) closes the gate for the whole client, and cuts the window
as any 429 does. After a pause of `PACE_MIN_PAUSE` or more, the gate then
reopens *paced*, one request at a time at a rate learned from what the server
accepted, never more than the (cut) window in flight: a per-second limit
refills only its burst during a pause, so a gate that let the whole window
through at once spent it in a millisecond and was asked to wait again. A
shorter pause reopens with the window, spread by a jitter.

- After the first pause the pace starts at the rate accepted until then and
  doubles every `PACE_DOUBLING` (slow start, in rate).
- A pause while paced cuts it to `PACE_CUT` of the rate refused (while
  doubling, the rate of one doubling earlier, or what was accepted since the
  reopening if more; after that, no more than what was accepted since the
  reopening, which the burst makes a little high), from which it grows by
  `PACE_GROWTH` of itself a second, and after `PACE_PATIENCE` without a
  cut doubles each second, following a limit that rose; past `MAX_PACE` it
  lets go. A pace that was cut grows from the reopening, not through the pause.
- A pause while paced below the rate refused last cuts nothing: a rate's limit
  does not refuse below the rate it refused, so that 429 is the server's chance
  (waits asked at random), and the pace goes on growing through the pause.

Waiting calls queue in one FIFO,
so a bulk run of 10,000 cannot starve a guard's release; a call that gives up
waiting leaves it in O(1).
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from collections.abc import Callable
from typing import Final, TypeAlias

import attrs

from ._errors import client_closed
from ._retry import retry_after
from ._sleeps import Sleeps
from ._transport import Response

INITIAL_WINDOW: Final = 10.0
"""Requests in flight allowed before the client has learned anything (TCP's IW10)."""
DECREASE: Final = 0.9
"""The multiplicative cut of the window, once per refused round trip."""
PROBE_ROUNDS: Final = 3
"""Round trips the window waits just under its ceiling before it probes one place higher."""
BURST_FLOOR: Final = 0.7
"""Within one refused round trip, the window falls no lower than this share of its cut value."""
IN_USE: Final = 0.9
"""A success grows the window only if sent with this share of it in flight (or all but one)."""
MAX_RESUME_JITTER: Final = 1.0
"""Seconds, at most, over which held calls are spread on resuming (a quarter of the hold).

(After a server-asked pause of `PACE_MIN_PAUSE` or more the gate reopens paced instead: see
`PACE_DOUBLING`.)"""
FIRST_GAP: Final = 0.005
"""Seconds between requests when pacing starts."""
LAST_GAP: Final = FIRST_GAP / 8
"""The gap, in seconds, below which pacing ends: the server took requests that fast."""
GAP_GROWTH: Final = 1.5
"""How much longer the gap gets with each 429 at a window of one that follows another."""
GAP_DECAY: Final = 0.98
"""How much shorter the gap gets with each success while pacing (about 20 to undo a 429)."""
GAP_EXIT: Final = 0.25
"""Pacing ends once the gap is under this share of a round trip (or under `LAST_GAP`)."""
FIRST_GAP_EXIT: Final = 1.0
"""At the first success ever, pacing ends if the gap is under this share of a round trip."""
SHALLOW_GAP: Final = 2 * FIRST_GAP
"""Seconds: a spell of pacing whose gap never grew to this is shallow (see `SHALLOW_SPELL`)."""
SHALLOW_DANGER: Final = 0.5
"""A shallow spell is held only while the waiting calls carry fewer refusals each than this.

(A crowd's calls carry more: holding its spells made it less fair.)"""
SHALLOW_SPELL: Final = 0.4
"""Seconds a shallow spell of pacing lasts at least, however short its gap.

Its first gap is under a quarter of a 20 ms round trip: without it, a fleet at a limit per
second whose clients get about one request per round trip each left pacing at the first
success, climbed past a stale ceiling to three or four places and was refused again
(4 clients on 200 a second: 1.26 requests per session, now 1.20). A deeper spell (a crowd, a
storm) ends as before: holding every spell 0.4 to 0.6 s failed more sessions in crowds."""
GAP_HALF_LIFE: Final = 1.0
"""Seconds: with no refusal, the gap halves after one of them, and is 1/256 of itself after two.

(It shrinks as ``0.5 ** (t / GAP_HALF_LIFE) ** 3``: flat at first, so that a steady pace is
probed rarely, then steep, so that after a storm the client is back within two or three
seconds.)"""

PACE_DOUBLING: Final = 0.25
"""Seconds: after the first pause, the paced rate doubles this often until a pause ends it."""
PACE_CUT: Final = 0.9
"""A pause while paced sets the pace to this share of the rate it was refused at."""
PACE_GROWTH: Final = 0.03
"""After that, the pace grows by this share of itself per second (additive increase, in time)."""
PACE_PATIENCE: Final = 10.0
"""Seconds without a cut of the pace after which it doubles again, each second: the limit rose."""
PACE_MIN_PAUSE: Final = 0.1
"""Seconds: a server-asked pause at least this long reopens the gate paced; a shorter one does not.

A pause is paid again each time the gate reopens too fast: a per-second limit refills only
``rate x pause`` during it, so the whole window at once is refused and asked to wait again.
That costs one more pause: dear after a pause of a second, cheap after one of 50 ms (measured:
a limit of 50 a second asking 50 ms is served at its rate either way, at 1.17 to 1.40
requests per session unpaced; asking 0.1 or 0.2 s, unpaced costs 1.2x to 2.3x its time).
Pacing, in turn, costs throughput whenever the 429s are not about the rate (a server that
asks short waits at random): the pace measures only its own sending, so such pauses held it
low (the demo's realistic faults, 3 % of answers a 429 asking 50 ms: 1,000 releases in 104 s
instead of 4 s, before a pause below the rate refused last stopped cutting it)."""
MAX_PACE: Final = 1.0 / LAST_GAP
"""Requests per second past which the pace after a pause lets go: the window alone governs."""

CAUTION: Final = 1.0
"""Refusals carried per waiting call past which pacing turns cautious (see the module's docstring).

A call fails at the refusal after its ``max_rate_limited``-th (the 11th by default): one each
is what a storm met by a client of 32 calls costs them, and what the other fleets stay under."""
CAUTION_HALF_LIFE: Final = 2.0
"""Per refusal carried per call past `CAUTION`, the gap's half-life grows by this many of itself.

(Measured on the crowds: 1 left 4 to 7 of 600 calls failing at 100 clients on 20 a second;
3 kept every call but finished the last client past twice its fair share.)"""

SWEEP_SLACK: Final = 32
"""Cancelled waiters the queue may hold beyond its live ones before it is swept."""

Permit: TypeAlias = tuple[int, int]
"""A permit: its ticket (the order it was taken in) and the load it was sent with."""


@attrs.frozen
class FlowStats:
    """A snapshot of a client's flow control, or its figures over one bulk run.

    Attributes:
        window: The requests in flight the client allows itself now.
        in_flight: The requests in flight now.
        requests: Requests sent (every attempt, retries and checks included).
        rate_limited: Answers 429 received.
        pauses: Times a server-asked wait closed the client's gate (pacing
            below one request per round trip is not counted).
        paused_seconds: Seconds the gate was asked to stay closed, in all.
        elapsed: Seconds the run took (in a `BulkReleaseReport`); ``None`` in a snapshot.
    """

    window: float
    in_flight: int
    requests: int
    rate_limited: int
    pauses: int
    paused_seconds: float
    elapsed: float | None = None

    def since(self, earlier: FlowStats, *, elapsed: float | None = None) -> FlowStats:
        """The counts between *earlier* and this snapshot; window and in-flight as now."""
        return FlowStats(
            window=self.window,
            in_flight=self.in_flight,
            requests=self.requests - earlier.requests,
            rate_limited=self.rate_limited - earlier.rate_limited,
            pauses=self.pauses - earlier.pauses,
            paused_seconds=self.paused_seconds - earlier.paused_seconds,
            elapsed=elapsed,
        )


@attrs.define
class FlowControl:
    """The permits of one client: an adaptive window and a pause gate.

    Args:
        max_window: The most requests in flight, ever (the connection pool's size).
        max_retry_after: The longest server-asked pause honoured, in seconds.
        max_gap: The longest gap between requests when pacing, in seconds.
        clock: The monotonic clock of the statistics, in seconds.
    """

    max_window: int
    max_retry_after: float
    max_gap: float
    clock: Callable[[], float] = time.monotonic
    window: float = attrs.field(init=False)
    in_flight: int = attrs.field(default=0, init=False)
    requests: int = attrs.field(default=0, init=False)
    rate_limited: int = attrs.field(default=0, init=False)
    pauses: int = attrs.field(default=0, init=False)
    paused_seconds: float = attrs.field(default=0.0, init=False)
    closed: bool = attrs.field(default=False, init=False)
    _cap: int = attrs.field(init=False)
    _ceiling: float = attrs.field(default=math.inf, init=False)
    _base: float = attrs.field(default=0.0, init=False)
    _learning: bool = attrs.field(default=True, init=False)
    _tickets: int = attrs.field(default=0, init=False)
    _last_cut: int = attrs.field(default=0, init=False)
    _gap: float = attrs.field(default=0.0, init=False)
    _gap_at: float = attrs.field(default=0.0, init=False)
    _spell_at: float = attrs.field(default=0.0, init=False)
    _spell_peak: float = attrs.field(default=0.0, init=False)
    _sent_at: float = attrs.field(default=0.0, init=False)
    _refused_last: bool = attrs.field(default=False, init=False)
    _answered: bool = attrs.field(default=False, init=False)
    _carried: float = attrs.field(default=0.0, init=False)
    _waiters: collections.deque[asyncio.Future[tuple[Permit, float]]] = attrs.field(
        factory=collections.deque, init=False
    )
    _waiting: int = attrs.field(default=0, init=False)
    _reopen: asyncio.TimerHandle | None = attrs.field(default=None, init=False)
    _paused_until: float = attrs.field(default=0.0, init=False)
    _jitter: float = attrs.field(default=0.0, init=False)
    _accepted: int = attrs.field(default=0, init=False)
    _pace: float = attrs.field(default=0.0, init=False)
    _pace_at: float = attrs.field(default=0.0, init=False)
    _pace_doubling: bool = attrs.field(default=True, init=False)
    _mark: float | None = attrs.field(default=None, init=False)
    _mark_accepted: int = attrs.field(default=0, init=False)
    _asked: bool = attrs.field(default=False, init=False)
    _sleeps: Sleeps = attrs.field(factory=Sleeps, init=False, repr=False)
    _floor: float = attrs.field(default=0.0, init=False)
    _pace_refused: float = attrs.field(default=0.0, init=False)
    _pace_cut: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.window = min(INITIAL_WINDOW, float(self.max_window))
        self._cap = int(self.window)

    def stats(self) -> FlowStats:
        """A snapshot of the window and the counts so far."""
        return FlowStats(
            window=self.window,
            in_flight=self.in_flight,
            requests=self.requests,
            rate_limited=self.rate_limited,
            pauses=self.pauses,
            paused_seconds=self.paused_seconds,
        )

    # -- permits --------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """Take a permit if one is free at once, with nobody ahead; else ``None``."""
        if self.in_flight < self._cap and not self._waiting and self._reopen is None:
            return self._take()
        return None

    async def acquire(self) -> Permit:
        """Wait for a permit, in turn; return it, to hand back to `release`.

        Raises:
            RuntimeError: The client is closed, or closes while this waits.
        """
        self._check_open()
        if (free := self.try_acquire()) is not None:
            return free
        waiter: asyncio.Future[tuple[Permit, float]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._waiting += 1
        try:
            permit, jitter = await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                self._left(waiter)
            elif waiter.exception() is None:
                # Granted, then cancelled before it could use it: pass it on.
                self.give_back()
            raise
        if jitter:
            try:
                self._check_open()
                # A sleep that closing the client ends at once (raising its RuntimeError).
                await self._sleeps.sleep(random.uniform(0.0, jitter))
            except BaseException:
                self.give_back()
                raise
        return permit

    def _left(self, waiter: asyncio.Future[tuple[Permit, float]]) -> None:
        """A waiter cancelled in the queue: it stays there, skipped, until swept out.

        Taking it out at once would cost a scan of the queue per cancellation
        (20,000 cancelled together: 200 million steps); the queue is swept
        instead when more than half of it is gone, which costs O(1) a
        cancellation in all.
        """
        if self.closed:
            return  # the queue was emptied, and its count set to nought, by `close`
        self._waiting -= 1
        if len(self._waiters) > 2 * self._waiting + SWEEP_SLACK:
            self._waiters = collections.deque(w for w in self._waiters if not w.done())

    def _check_open(self) -> None:
        if self.closed:
            raise client_closed()

    def _take(self) -> Permit:
        self.in_flight += 1
        self.requests += 1
        self._tickets += 1
        if self._gap:
            self._sent_at = self._now()  # pacing: one in flight, whose round trip is timed
        if self._pace:
            self._paced()
        elif self._mark is None:
            self._mark = self._now()
        return (self._tickets, self.in_flight)

    def give_back(self) -> None:
        """Return a permit that was granted but never used."""
        self.in_flight -= 1
        self.requests -= 1
        self._wake()

    def release(self, permit: Permit, response: Response | None) -> None:
        """Hand back a permit, learning from the answer (``None``: no answer came)."""
        self.in_flight -= 1
        if response is not None:
            status = response.status
            if status == 429:
                self._carried += 1.0
                self._refused(permit, response)
            elif 200 <= status < 300 or 400 <= status < 500:
                # Any answer but a refusal is room at the server: a 404 too.
                self._accepted += 1
                if self._carried:
                    # The call is done: its share of the refusals the calls carry goes with it.
                    self._carried -= self._danger()
                self._grow(permit[1])
            elif status >= 500:
                self._refused(permit, response)
        if self._waiting:
            self._wake()

    def _refused(self, permit: Permit, response: Response) -> None:
        asked = retry_after(response.headers)
        if response.status == 429:
            self.rate_limited += 1
            # A wait of 0 (or a date past) is a refusal with no hint: pace as for a bare 429.
            self._shrink(permit, hinted=bool(asked))
        # A wait over the cap is not honoured: that call fails instead (see `_retry`).
        if asked and asked <= self.max_retry_after:
            # Only a long pause reopens paced: see `PACE_MIN_PAUSE`.
            paced = asked >= PACE_MIN_PAUSE
            if paced:
                self._learn_pace()
            self.pause(asked, paced=paced)

    # -- the window -----------------------------------------------------------

    def _grow(self, load: int) -> None:
        self._refused_last = False
        first, self._answered = not self._answered, True
        if self._gap:
            # Pacing: each success shortens the gap a little, and the window waits for its end.
            self._gap *= GAP_DECAY
            round_trip = self._now() - self._sent_at
            # The first success ever ends it sooner: a pace learned before any round trip
            # (in a fleet's first burst) was learned from refusals alone.
            # (Not in a crowd, paced from its first burst too: see `CAUTION`.)
            danger = self._danger()
            exit = FIRST_GAP_EXIT if first and danger < CAUTION else GAP_EXIT
            # Any other success leaves a shallow spell only after `SHALLOW_SPELL` (see there),
            # unless the calls carry refusals as a crowd's do.
            held = (
                not first
                and danger < SHALLOW_DANGER
                and self._spell_peak < SHALLOW_GAP
                and self._now() - self._spell_at < SHALLOW_SPELL
            )
            if (gap := self._pacing_gap()) < max(LAST_GAP, round_trip * exit) and not held:
                # Out of pacing: whatever ceiling the refusals left is stale by now, and the
                # window climbs with a step that doubles each round trip.
                self._gap, self._ceiling, self._base = 0.0, math.inf, self.window
            else:
                self._hold(gap)
            return
        window = self.window
        if self._learning:
            # Slow start: the window doubles each round trip while it is half in use.
            if load >= window / 2 and window < self.max_window:
                self._set_window(window + 1.0)
            return
        # Only a window in use learns that it could be larger (as Palantir's dialogue does).
        if load < min(IN_USE * window, window - 1.0) or window >= self.max_window:
            return
        if self._ceiling == math.inf:
            # Past a ceiling that proved stale: the step doubles each round trip.
            window += (window - self._base + 1.0) / window
        elif window < self._ceiling - 1.0:
            # Back towards the ceiling by halving the gap each round trip (BIC's search).
            window += max(1.0, (self._ceiling - 1.0 - window) / 2) / window
        elif window < self._ceiling + 1.0:
            window += 1.0 / (window * PROBE_ROUNDS)
        else:
            # The probe held a whole place past the ceiling (a burst allowance alone would
            # not): the limit rose; climb, ever faster, to follow it.
            self._ceiling, self._base = math.inf, window
            window += 1.0 / window
        self._set_window(window)

    def _shrink(self, permit: Permit, *, hinted: bool) -> None:
        ticket, load = permit
        window = self.window
        # Refused with the window in use (half of it or more in flight, as slow start judges
        # it): the client's own load met the limit, and the window drops below that load, one
        # place per such refusal (a burst of them lands at what the server took). A refusal
        # at a lower load is the others' doing: it leaves the window to the cut by a factor
        # below, which keeps a fleet's shares fair.
        full = load >= window / 2
        if ticket > self._last_cut:
            # The first refusal of a round trip: the others of the same round add no cut.
            if self._learning:
                # Slow start overshot: the window before its last doubling fitted.
                self._learning = False
                window = max(window / 2, min(window, load - 1.0))
                self._ceiling = window  # the level it fitted at: climb back, then probe
            else:
                if window < self._ceiling:
                    # Cut below the last level: leave room for the others (CUBIC's fast
                    # convergence), so that a fleet's windows meet sooner.
                    self._ceiling = window * (1.0 + DECREASE) / 2
                else:
                    self._ceiling = window
                if full:
                    window = max(min(window, load - 1.0), window * BURST_FLOOR)
            window *= DECREASE
            self._last_cut = self._tickets
            self._floor = window * BURST_FLOOR
        elif full:
            # The burst's later refusals land the window at what the server took, but no
            # lower than `BURST_FLOOR` of it: a client refused again and again in a round that
            # the others filled keeps most of its share, so a fleet's shares stay close.
            window = max(min(window, load - 1.0), self._floor)
        danger = self._danger()
        if (
            window < 1.0
            and self.window <= 1.0
            and not hinted
            and (self._refused_last or (self._gap and danger >= CAUTION))
        ):
            # At a window of one, refused twice running: the only smaller step is a gap
            # between requests. (A lone refusal between successes is no sign of pace: it
            # may be anyone's, and pacing on it would pin the window at one; but while the
            # calls carry many refusals each, one more is a call closer to failing.)
            gap = self._pacing_gap() if self._gap else 0.0
            growth = GAP_GROWTH
            if self._refused_last:
                growth **= 1.0 + max(0.0, danger - CAUTION)
            self._gap = min(max(gap * growth, FIRST_GAP), self.max_gap)
            if gap:
                self._spell_peak = max(self._spell_peak, self._gap)
            else:  # a spell of pacing starts
                self._spell_at, self._spell_peak = self._now(), self._gap
            self._gap_at = self._now()  # the gap's recovery in time starts again from here
            self._hold(self._gap)
        self._refused_last = True
        self._set_window(max(1.0, window))

    def _danger(self) -> float:
        """Refusals the calls still waiting carry, each, on average (the refused one included)."""
        return self._carried / (self._waiting + self.in_flight + 1)

    def _pacing_gap(self) -> float:
        """The gap now: it shrinks with time since it last changed, ever faster.

        Slower while the calls carry more than `CAUTION` refusals each (see `CAUTION_HALF_LIFE`).
        """
        half_life = GAP_HALF_LIFE * (1.0 + CAUTION_HALF_LIFE * max(0.0, self._danger() - CAUTION))
        quiet = (self._now() - self._gap_at) / half_life
        return self._gap * math.pow(0.5, quiet * quiet * quiet)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _set_window(self, window: float) -> None:
        self.window = min(window, float(self.max_window))
        if not self.closed:
            self._cap = int(self.window)

    # -- the gate -------------------------------------------------------------

    def pause(self, seconds: float, *, paced: bool = True) -> None:
        """Hold every new request for *seconds*, as a server asked, unless a longer pause is on.

        Args:
            seconds: The pause, in seconds.
            paced: Reopen the gate paced (one request at a time, at a rate learned from what
                the server accepted) rather than with the whole window.
        """
        if (held := self._hold(seconds)) > 0:
            self._asked = self._asked or paced
            self.pauses += 1
            self.paused_seconds += held

    def _hold(self, seconds: float, *, jitter: bool = True) -> float:
        """Close the gate for *seconds* unless it is closed for longer; the seconds it added."""
        if seconds <= 0 or self.closed:
            return 0.0
        loop = asyncio.get_running_loop()
        now = loop.time()  # read once: the seconds added are then those asked
        until = now + seconds
        if until <= self._paused_until:
            return 0.0
        added = until - max(self._paused_until, now)
        self._paused_until = until
        self._jitter = min(MAX_RESUME_JITTER, seconds / 4) if jitter else 0.0
        if self._reopen is not None:
            self._reopen.cancel()
        self._reopen = loop.call_at(until, self._open)
        return added

    def _learn_pace(self) -> None:
        """A server-asked pause: learn the rate to reopen the gate at from what was accepted.

        The first pause leaves the pace to be set at the reopening (the rate accepted until
        then, doubling); a pause while paced (the first 429 of a pause: the others of the
        same burst add nothing) at or past the rate refused last cuts it to `PACE_CUT` of
        the rate refused.
        """
        if self._pace and not self._asked:
            rate = self._pace_now()
            if not self._pace_doubling and rate < self._pace_refused:
                # Refused below the rate refused last, which a rate's limit does not do: the
                # server asks waits at random (or others took the room for a moment). The pace
                # stands, and goes on growing through the pause.
                return
            self._pace_refused = rate
            # Doubling, the pace of one doubling earlier was taken (or what was accepted
            # since the reopening, if more); growing slowly, the pace refused, but no more
            # than what was accepted since the reopening (the burst makes both a little high).
            if self._pace_doubling:
                rate = max(rate / 2, self._accepted_rate())
            else:
                rate = min(rate, self._accepted_rate())
            self._pace = rate * PACE_CUT
            self._pace_doubling = False
            self._pace_cut = True

    def _accepted_rate(self) -> float:
        """Requests per second the server accepted since the mark (the last reopening)."""
        now = self._now()
        start = now if self._mark is None else self._mark
        return (self._accepted - self._mark_accepted) / max(now - start, 1e-3)

    def _pace_now(self) -> float:
        """The paced rate now, in requests per second: it grows with time since it was set."""
        quiet = self._now() - self._pace_at
        if self._pace_doubling:
            return self._pace * math.pow(2.0, quiet / PACE_DOUBLING)
        rate = self._pace * (1.0 + PACE_GROWTH * quiet)
        if quiet > PACE_PATIENCE:
            rate *= math.pow(2.0, quiet - PACE_PATIENCE)
        return rate

    def _paced(self) -> None:
        """A permit went out while paced: the gate stays closed for one interval."""
        rate = self._pace_now()
        if rate >= MAX_PACE:
            self._pace = 0.0  # the pace no longer holds anything back
            return
        self._hold(1.0 / rate, jitter=False)

    def _open(self) -> None:
        self._reopen = None
        if self._asked:
            # The end of a server-asked pause: reopen paced, not with the whole window.
            self._asked = False
            now = self._now()
            if not self._pace:
                self._pace = max(self._accepted_rate(), 1.0)
                self._pace_doubling, self._pace_cut = True, True
            if self._pace_cut:
                self._pace_cut = False
                self._pace_at = now  # a pace set grows from the reopening, not the pause
            self._mark, self._mark_accepted = now, self._accepted
            self._wake()
        else:
            self._wake(self._jitter)

    def _wake(self, jitter: float = 0.0) -> None:
        while self._waiters and self.in_flight < self._cap and self._reopen is None:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # Handed over, not merely woken: no newcomer can take it meanwhile.
                self._waiting -= 1
                waiter.set_result((self._take(), jitter))

    def close(self) -> None:
        """Refuse every waiting and future call, and drop the pending reopen timer."""
        self.closed = True
        self._sleeps.end()
        self._cap = 0  # the fast path then turns every caller to `acquire`, which refuses
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self._waiting = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(client_closed())
