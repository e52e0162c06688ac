"""Fleet simulator: K clients, each with the real `FlowControl`, sharing one server's limit.

    python bench/fleet_sim.py                       # every scenario, 10 seeds, a table (minutes)
    python bench/fleet_sim.py --scenarios fleet-4-in-flight-25 --seeds 5
    python bench/fleet_sim.py --plot docs/fleet.png # and the plot of the docs
    python bench/fleet_sim.py --quick               # a tiny run that only checks it works

Deterministic and fast: every client runs on one event loop whose clock is virtual (a selector
that, asked to wait, moves the clock on instead of sleeping), so a fleet of 100 clients over a
minute of traffic takes seconds, and the same seed gives the same run. Each client is a
`browserbase_async._flow.FlowControl`, the class every `SessionsAPI` uses (no copy of it),
driven as `Requester.attempt` (`_request.py`) drives it: take a permit, send, hand the permit
back with the answer, and on a 429 try again at once (the window, or the gate, is the
backoff), up to the retry policy's ``max_rate_limited`` refusals. The server model has a limit
on requests in flight or a token bucket per second, a service time with jitter, a network round
trip, 429s at random, and an optional ``Retry-After`` on its 429s.

Figures per scenario, each the median over the seeds (`SEEDS` by default) with the worst seed's
in brackets:

- ``used``: the share of the limit used between the moments 10 % and 90 % of all the sessions
  were closed (requests in flight at the server over the limit, averaged over time; for a
  limit per second, the sessions closed per second over the rate);
- ``jain``: Jain's index over the clients' throughputs, each divided by its fair throughput
  (the max-min fair share of a fluid model of the same fleet, so that a client that joins late
  or has less to do is judged against what it should get);
- ``slowest``: the largest ratio of a client's time to finish over its fair time (the fluid
  model's), the clients' own start included;
- ``req/session``: requests the server received per session; ``failed``: sessions not closed.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import random
import selectors
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from browserbase_async._flow import FlowControl  # noqa: E402
from browserbase_async._retry import DEFAULT_MAX_DELAY, DEFAULT_MAX_RATE_LIMITED  # noqa: E402
from browserbase_async._transport import Response  # noqa: E402

PAST_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
"""A ``Retry-After`` HTTP-date in the past, as a client whose clock runs ahead reads it."""


# -- virtual time -----------------------------------------------------------------------------


class _VirtualSelector(selectors.BaseSelector):
    """A selector with nothing to select: asked to wait, it moves the virtual clock on."""

    def __init__(self) -> None:
        self.now = 0.0
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("the simulation is stuck: nothing is scheduled and nobody is ready")
        self.now += max(0.0, timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when every task waits: a run takes no real time."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


# -- the model --------------------------------------------------------------------------------


@attrs.frozen
class ServerModel:
    """The server a fleet shares.

    Args:
        max_in_flight: Requests served at once; more are refused (429) at once.
        max_per_second: Requests served per second (a token bucket of ``burst``); more refused.
        burst: The bucket's size; ``None``: a tenth of a second's worth, at least one (the fake's).
        latency: Seconds a served request takes at the server.
        jitter: The service time is drawn uniformly within ``latency * (1 +- jitter)``.
        rtt: Seconds of network round trip added to every answer, refusals included.
        random_429: The probability that any request is refused, whatever the load.
        retry_after: The ``Retry-After`` header of every 429 (``None``: none).
        not_found: Answer 404 instead of 200 (unknown ids): a success for the window.
        storm_until: Refuse every request until this many seconds into the run (a storm).
    """

    max_in_flight: int | None = None
    max_per_second: float | None = None
    burst: float | None = None
    latency: float = 0.05
    jitter: float = 0.2
    rtt: float = 0.001
    random_429: float = 0.0
    retry_after: str | None = None
    not_found: bool = False
    storm_until: float = 0.0

    def capacity(self) -> float:
        """Sessions per second the server can close."""
        rates = [math.inf]
        if self.max_in_flight is not None:
            rates.append(self.max_in_flight / self.latency if self.latency else math.inf)
        if self.max_per_second is not None:
            rates.append(self.max_per_second)
        if rates == [math.inf]:
            return math.inf
        return min(rates)


@attrs.frozen
class ClientSpec:
    """One client of the fleet.

    Args:
        sessions: Sessions it closes.
        start: Seconds after the start of the run at which it starts (joins).
        way: ``"many"`` (``concurrency`` workers, as ``release_many``) or ``"gather"``
            (every session at once, as a gather of ``release()`` or of guards).
        concurrency: Workers of a ``"many"`` client.
        max_connections: The client's largest window.
    """

    sessions: int
    start: float = 0.0
    way: str = "many"
    concurrency: int = 32
    max_connections: int = 100


@attrs.define
class _Server:
    model: ServerModel
    rng: random.Random
    in_flight: int = 0
    tokens: float = 0.0
    tokens_at: float = 0.0
    requests: int = 0
    refused: int = 0
    area: float = 0.0
    changed_at: float = 0.0
    areas: list[tuple[float, float]] = attrs.Factory(list)
    closed_at: list[float] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.tokens = self.burst()

    def burst(self) -> float:
        rate = self.model.max_per_second or 0.0
        return self.model.burst or max(1.0, rate / 10)

    def _account(self, now: float) -> None:
        self.area += self.in_flight * (now - self.changed_at)
        self.changed_at = now
        self.areas.append((now, self.area))

    def _admit(self, now: float) -> bool:
        model = self.model
        if now < model.storm_until:
            return False
        if model.random_429 and self.rng.random() < model.random_429:
            return False
        if model.max_in_flight is not None and self.in_flight >= model.max_in_flight:
            return False
        if model.max_per_second is not None:
            self.tokens = min(
                self.burst(), self.tokens + (now - self.tokens_at) * model.max_per_second
            )
            self.tokens_at = now
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
        return True

    async def answer(self) -> Response:
        model, loop = self.model, asyncio.get_running_loop()
        self.requests += 1
        await asyncio.sleep(model.rtt / 2)
        if not self._admit(loop.time()):
            self.refused += 1
            await asyncio.sleep(model.rtt / 2)
            headers = {} if model.retry_after is None else {"retry-after": model.retry_after}
            return Response(429, headers, b"")
        self._account(loop.time())
        self.in_flight += 1
        spread = model.latency * model.jitter
        await asyncio.sleep(model.latency + self.rng.uniform(-spread, spread))
        self._account(loop.time())
        self.in_flight -= 1
        self.closed_at.append(loop.time())
        await asyncio.sleep(model.rtt / 2)
        return Response(404 if model.not_found else 200, {}, b"")

    def mean_in_flight(self, start: float, end: float) -> float:
        """Requests served at once, averaged over ``[start, end]``."""
        return (self._area_at(end) - self._area_at(start)) / max(end - start, 1e-12)

    def _area_at(self, moment: float) -> float:
        # Interpolate the running integral; the in-flight count is a step function.
        low, high = 0, len(self.areas)
        while low < high:
            middle = (low + high) // 2
            if self.areas[middle][0] <= moment:
                low = middle + 1
            else:
                high = middle
        if low == 0:
            return 0.0
        when, area = self.areas[low - 1]
        level = self.areas[low][1] - area if low < len(self.areas) else 0.0
        span = self.areas[low][0] - when if low < len(self.areas) else 1.0
        return area + (level / span * (moment - when) if span > 0 else 0.0)


@attrs.define
class _ClientRun:
    spec: ClientSpec
    flow: FlowControl
    finished: float = math.nan
    closed: int = 0
    failed: int = 0
    windows: list[tuple[float, float]] = attrs.Factory(list)


async def _release(client: _ClientRun, server: _Server) -> None:
    flow, refusals = client.flow, 0
    while True:
        # As Requester.attempt (_request.py): the fast path, or a place in the queue.
        permit = flow.try_acquire() or await flow.acquire()
        response = await server.answer()
        flow.release(permit, response)
        if response.status != 429:
            client.closed += 1
            return
        refusals += 1
        if refusals > DEFAULT_MAX_RATE_LIMITED:
            client.failed += 1
            return


async def _run_client(client: _ClientRun, server: _Server) -> None:
    spec, loop = client.spec, asyncio.get_running_loop()
    await asyncio.sleep(spec.start)
    began = loop.time()
    if spec.way == "many":
        left = iter(range(spec.sessions))

        async def worker() -> None:
            for _ in left:
                await _release(client, server)

        await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.sessions))))
    elif spec.way == "gather":
        await asyncio.gather(*(_release(client, server) for _ in range(spec.sessions)))
    else:
        raise ValueError(f"way must be 'many' or 'gather', not {spec.way!r}")
    client.finished = loop.time() - began


async def _sample(clients: list[_ClientRun], every: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        for client in clients:
            client.windows.append((loop.time(), client.flow.window))
        await asyncio.sleep(every)


@attrs.frozen
class Outcome:
    """The figures of one simulated run (see the module's docstring)."""

    used: float
    jain: float
    slowest: float
    requests_per_session: float
    failed: int
    wall: float
    ideal: float
    finished: tuple[float, ...]
    fair: tuple[float, ...]
    windows: tuple[tuple[tuple[float, float], ...], ...] = ()


def simulate(
    server: ServerModel,
    clients: Iterable[ClientSpec],
    *,
    seed: int = 0,
    sample_every: float | None = None,
) -> Outcome:
    """Run one fleet against one server on a virtual clock; return its figures.

    Args:
        server: The server's model.
        clients: The fleet.
        seed: Seed of every draw (the server's jitter and refusals, the flow's resume jitter).
        sample_every: Seconds between samples of each client's window (``None``: none).
    """
    specs = list(clients)
    rng = random.Random(seed)
    loop = VirtualTimeLoop()
    state = random.getstate()
    random.seed(seed)  # the flow's own jitter draws from the module's generator
    try:
        the_server = _Server(server, rng)
        runs = [
            _ClientRun(spec, FlowControl(spec.max_connections, 60.0, DEFAULT_MAX_DELAY, loop.time))
            for spec in specs
        ]

        async def main() -> None:
            sampler = asyncio.create_task(_sample(runs, sample_every)) if sample_every else None
            await asyncio.gather(*(_run_client(run, the_server) for run in runs))
            if sampler is not None:
                sampler.cancel()

        loop.run_until_complete(main())
    finally:
        random.setstate(state)
        loop.close()
    return _figures(server, the_server, runs)


def _figures(model: ServerModel, server: _Server, runs: list[_ClientRun]) -> Outcome:
    specs = [run.spec for run in runs]
    fair = fair_finish(specs, model)
    finished = [run.finished for run in runs]
    total = sum(spec.sessions for spec in specs)
    closed = sorted(server.closed_at)
    first, last = closed[int(0.1 * len(closed))], closed[int(0.9 * len(closed)) - 1]
    if model.capacity() == math.inf:
        used = math.nan  # no limit to use
    elif model.max_in_flight is not None and (
        model.max_per_second is None or model.capacity() == model.max_in_flight / model.latency
    ):
        used = server.mean_in_flight(first, last) / model.max_in_flight
    else:
        used = (int(0.9 * len(closed)) - int(0.1 * len(closed))) / (
            max(last - first, 1e-12) * model.capacity()
        )
    shares = [
        (spec.sessions / took) / (spec.sessions / should)
        for spec, took, should in zip(specs, finished, fair, strict=True)
    ]
    jain = sum(shares) ** 2 / (len(shares) * sum(share * share for share in shares))
    slowest = max(took / should for took, should in zip(finished, fair, strict=True))
    wall = max(spec.start + took for spec, took in zip(specs, finished, strict=True))
    ideal = max(spec.start + should for spec, should in zip(specs, fair, strict=True))
    return Outcome(
        used=used,
        jain=jain,
        slowest=slowest,
        requests_per_session=server.requests / total,
        failed=sum(run.failed for run in runs),
        wall=wall,
        ideal=ideal,
        finished=tuple(finished),
        fair=tuple(fair),
        windows=tuple(tuple(run.windows) for run in runs),
    )


def fair_finish(specs: list[ClientSpec], model: ServerModel) -> list[float]:
    """Each client's time to finish under a fluid max-min fair share of the server's capacity.

    A client's own ceiling is ``min(concurrency, max_connections)`` requests in flight (its
    sessions, for a gather), each taking the service time and the round trip: it matters when
    the server's limit does not bind (no limit at all, for instance).
    """
    capacity = model.capacity()
    caps = [
        min(spec.sessions if spec.way == "gather" else spec.concurrency, spec.max_connections)
        / (model.latency + model.rtt)
        for spec in specs
    ]
    left = {i: float(spec.sessions) for i, spec in enumerate(specs)}
    events = sorted((spec.start, i) for i, spec in enumerate(specs))
    heapq.heapify(events)
    active: set[int] = set()
    now, done = 0.0, [math.nan] * len(specs)
    while left:
        while events and events[0][0] <= now + 1e-12:
            active.add(heapq.heappop(events)[1])
        if not active:
            now = events[0][0]
            continue
        rates, room, waiting = {}, capacity, sorted(active, key=lambda i: caps[i])
        for place, i in enumerate(waiting):
            rates[i] = min(caps[i], room / (len(waiting) - place))
            room -= rates[i]
        step = min(left[i] / rates[i] for i in active)
        if events:
            step = min(step, events[0][0] - now)
        for i in list(active):
            left[i] -= rates[i] * step
            if left[i] <= 1e-9:
                done[i] = now + step - specs[i].start
                del left[i]
                active.discard(i)
        now += step
    return done


# -- the scenarios ----------------------------------------------------------------------------


def _fleet(k: int, sessions: int, **client: Any) -> list[ClientSpec]:
    return [ClientSpec(sessions, **client) for _ in range(k)]


def _scenarios() -> dict[str, tuple[ServerModel, list[ClientSpec]]]:
    found: dict[str, tuple[ServerModel, list[ClientSpec]]] = {}
    # A limit in flight, 50 ms: each fleet closes about 150 round trips' worth of sessions.
    for k, limit in ((2, 25), (4, 25), (8, 50), (32, 200), (100, 500), (4, 5), (2, 500)):
        connections = max(100, limit)
        found[f"fleet-{k}-in-flight-{limit}"] = (
            ServerModel(max_in_flight=limit),
            _fleet(k, 150 * limit // k, concurrency=connections, max_connections=connections),
        )
    # A limit per second, 20 ms: about 30 s of the limit's work.
    for k, rate in ((2, 20.0), (4, 200.0), (8, 200.0), (32, 2000.0), (100, 2000.0)):
        found[f"fleet-{k}-per-second-{rate:g}"] = (
            ServerModel(max_per_second=rate, latency=0.02),
            _fleet(k, int(30 * rate) // k),
        )
    # The real bench's fleet-per-second (bench/fleet.py), as its fake serves it: 4 processes of
    # 150, so 3 s of the limit's work, where the start's refusals weigh ten times what they do
    # in 30 s; the fake sleeps a fixed latency (no jitter); a round trip between two Python
    # processes on loopback takes about 2 ms.
    found["bench-4-per-second-200"] = (
        ServerModel(max_per_second=200.0, latency=0.02, jitter=0.0, rtt=0.002),
        _fleet(4, 150),
    )
    # The real bench's fleet-in-flight (4 x 250 on 25 in flight, 50 ms) as it runs: the fake's
    # fixed latency, and the clients reading "go" a few milliseconds apart (0 to 12 ms measured).
    # A fixed service time keeps the fleet in lockstep: places free at the same moments each
    # cycle, and whoever sends first in the cycle takes them (see docs/performance.md).
    apart = [ClientSpec(250, start=start) for start in (0.0, 0.002, 0.005, 0.010)]
    found["bench-4-in-flight-25"] = (ServerModel(max_in_flight=25, jitter=0.0, rtt=0.002), apart)
    # The same with the simulator's usual 20 % jitter in the service time.
    found["bench-4-in-flight-25-jitter"] = (ServerModel(max_in_flight=25, rtt=0.002), apart)
    # More clients than places: each must pace itself below one request per round trip.
    found["crowd-16-in-flight-4"] = (ServerModel(max_in_flight=4), _fleet(16, 10))
    found["crowd-32-in-flight-5"] = (ServerModel(max_in_flight=5), _fleet(32, 25))
    found["crowd-100-in-flight-8"] = (ServerModel(max_in_flight=8), _fleet(100, 20))
    found["crowd-100-per-second-20"] = (
        ServerModel(max_per_second=20.0, latency=0.02),
        _fleet(100, 6),
    )
    # Gathers, as scrapers write them, and a mix.
    found["gather-4-in-flight-25"] = (
        ServerModel(max_in_flight=25),
        _fleet(4, 250, way="gather"),
    )
    found["mix-4-in-flight-25"] = (
        ServerModel(max_in_flight=25),
        _fleet(2, 250, way="gather") + _fleet(2, 250),
    )
    # One alone, three join 1 s later; then half a fleet leaves early (fewer sessions).
    found["join-1+3-in-flight-25"] = (
        ServerModel(max_in_flight=25),
        [ClientSpec(600), *_fleet(3, 200, start=1.0)],
    )
    found["leave-8-in-flight-50"] = (
        ServerModel(max_in_flight=50),
        _fleet(4, 300) + _fleet(4, 1200),
    )
    # One client, no limit: random 429s, unknown ids.
    for share in (0.0, 0.03, 0.10):
        found[f"random-{share:.0%}-429"] = (
            ServerModel(random_429=share),
            [ClientSpec(600)],
        )
    # The demo's realistic faults: 3 % of answers a 429 that asks a wait of 50 ms, no limit.
    found["random-3%-429-asking-50-ms"] = (
        ServerModel(random_429=0.03, retry_after="0.05"),
        [ClientSpec(600)],
    )
    # A 2 s storm of 429s, then a server that takes everything: the pace must recover in time.
    found["storm-2s-then-open"] = (ServerModel(storm_until=2.0), [ClientSpec(600)])
    found["unknown-ids-404"] = (ServerModel(not_found=True), [ClientSpec(1000, concurrency=32)])
    # A 50 / s limit whose 429s carry a Retry-After of 0, a past date, or 1 s.
    for name, header in (("0", "0"), ("past", PAST_DATE), ("1", "1")):
        found[f"retry-after-{name}-50-per-second"] = (
            ServerModel(max_per_second=50.0, latency=0.001, retry_after=header),
            [ClientSpec(300, way="gather")],
        )
    return found


SCENARIOS = _scenarios()
SEEDS = 10
"""Seeds per scenario by default: a fleet's run is chaotic (one event earlier or later sends
it elsewhere), and 3 seeds hid a client kept crawling at 2.8x its fair time in the 10th."""
QUICK = ("fleet-4-in-flight-25", "crowd-32-in-flight-5", "random-10%-429", "join-1+3-in-flight-25")


def worst(outcomes: list[Outcome]) -> Outcome:
    """The seed whose slowest client did worst."""
    return max(outcomes, key=lambda outcome: outcome.slowest)


def row(name: str, clients: list[ClientSpec], outcomes: list[Outcome]) -> str:
    """A table row: each figure's median over the seeds, and its worst in brackets."""

    def figure(value: Callable[[Outcome], float], pick: Callable[..., float], form: str) -> str:
        values = [value(outcome) for outcome in outcomes]
        return f"{statistics.median(values):{form}} ({pick(values):{form}})"

    return (
        f"| {name} | {len(clients)} | {figure(lambda o: o.used, min, '.2f')} |"
        f" {figure(lambda o: o.jain, min, '.3f')} | {figure(lambda o: o.slowest, max, '.2f')} |"
        f" {figure(lambda o: o.wall / o.ideal, max, '.2f')} |"
        f" {figure(lambda o: o.requests_per_session, max, '.2f')} |"
        f" {max(o.failed for o in outcomes)} | {worst(outcomes).wall:.1f} |"
    )


def plot(path: str, names: list[str]) -> None:
    """Each client's window against time, one panel per scenario (the first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(names), 1, figsize=(9, 2.6 * len(names)))
    axes = [axes] if len(names) == 1 else list(axes)
    for axis, name in zip(axes, names, strict=True):
        model, clients = SCENARIOS[name]
        outcome = simulate(model, clients, seed=0, sample_every=0.01)
        for number, series in enumerate(outcome.windows[:8]):
            done = clients[number].start + outcome.finished[number]
            kept = [point for point in series if point[0] <= done]
            axis.plot([p[0] for p in kept], [p[1] for p in kept], lw=0.9)
        if model.max_in_flight is not None:
            fair = model.max_in_flight / len(clients)
            axis.axhline(fair, color="k", ls="--", lw=0.8, label="equal share of the limit")
            axis.legend(loc="upper right", fontsize=8)
        axis.set_title(
            f"{name}: used {outcome.used:.2f} of the limit, Jain {outcome.jain:.3f},"
            f" slowest {outcome.slowest:.2f}x its fair time",
            fontsize=9,
        )
        axis.set_ylabel("window")
    axes[-1].set_xlabel("virtual seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--quick", action="store_true", help="four scenarios, one seed")
    parser.add_argument("--plot", metavar="PNG")
    args = parser.parse_args()
    names = list(QUICK) if args.quick else args.scenarios.split(",")
    seeds = 1 if args.quick else args.seeds
    print(
        "| scenario | clients | used | Jain | slowest / fair |"
        " wall / ideal | requests per session | failed (most) | wall s (worst) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        model, clients = SCENARIOS[name]
        outcomes = [simulate(model, clients, seed=seed) for seed in range(seeds)]
        print(row(name, clients, outcomes), flush=True)
    if args.plot:
        plot(
            args.plot,
            ["fleet-4-in-flight-25", "join-1+3-in-flight-25", "crowd-32-in-flight-5"],
        )


if __name__ == "__main__":
    main()
