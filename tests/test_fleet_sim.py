"""The flow control's promises for fleets, through the simulator of `bench/fleet_sim.py`.

Each test runs the real `FlowControl` of several clients on a virtual clock (no real time
passes, and the same seed gives the same run), and asserts outcomes: shares, sessions closed,
refusals. Nothing here is timed; the figures against the issue's targets live in `bench/`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from browserbase_async._flow import FIRST_GAP, GAP_GROWTH, FlowControl
from browserbase_async._transport import Response


def _load(name: str) -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sim = _load("fleet_sim")
ClientSpec, ServerModel, simulate = sim.ClientSpec, sim.ServerModel, sim.simulate


def test_the_virtual_clock_moves_only_when_every_task_waits() -> None:
    loop = sim.VirtualTimeLoop()
    try:

        async def nap() -> float:
            await asyncio.sleep(3600.0)
            return asyncio.get_running_loop().time()

        assert loop.run_until_complete(nap()) == pytest.approx(3600.0)
    finally:
        loop.close()


def test_a_stuck_simulation_says_so() -> None:
    loop = sim.VirtualTimeLoop()

    async def forever() -> None:
        await asyncio.get_running_loop().create_future()  # nothing will ever set it

    try:
        with pytest.raises(RuntimeError, match="stuck"):
            loop.run_until_complete(forever())
    finally:
        loop.close()


def test_the_same_seed_gives_the_same_run() -> None:
    model = ServerModel(max_in_flight=10, latency=0.02)
    fleet = [ClientSpec(60), ClientSpec(60, way="gather")]
    assert simulate(model, fleet, seed=7) == simulate(model, fleet, seed=7)


def test_the_fair_finish_of_a_fluid_fleet() -> None:
    model = ServerModel(max_in_flight=10, latency=0.1)  # 100 sessions a second
    fleet = [ClientSpec(100), ClientSpec(50, start=0.5)]
    # Alone for 0.5 s (50 done), then halves: the joiner's 50 take 1 s, as do the first's 50.
    assert sim.fair_finish(fleet, model) == pytest.approx([1.5, 1.0])
    # A client's own concurrency caps it where the server does not.
    assert sim.fair_finish([ClientSpec(32, concurrency=4)], ServerModel()) == pytest.approx(
        [32 / (4 / 0.051)]
    )


@pytest.mark.parametrize("way", ["many", "gather"])
def test_clients_sharing_a_limit_converge_to_equal_shares_and_fill_it(way: str) -> None:
    model = ServerModel(max_in_flight=25)
    outcome = simulate(model, [ClientSpec(500, way=way)] * 4, seed=1)
    assert outcome.failed == 0
    assert outcome.used >= 0.8  # the limit kept nearly full
    assert outcome.jain >= 0.9
    assert outcome.slowest <= 1.35  # no client far behind its fair share
    assert outcome.requests_per_session <= 1.1


def test_a_client_that_joins_gets_its_share() -> None:
    model = ServerModel(max_in_flight=25)
    fleet = [ClientSpec(600), *[ClientSpec(200, start=1.0)] * 3]
    outcome = simulate(model, fleet, seed=0)
    assert outcome.failed == 0
    # Within a little over twice its fair time (the issue asks 1.5x: not met, see
    # docs/performance.md), and the fleet's whole run within 1.7x the ideal.
    assert outcome.slowest <= 2.25
    assert outcome.wall <= 1.7 * outcome.ideal


def test_a_client_the_first_burst_crushed_is_not_kept_crawling() -> None:
    # 8 clients start together on 50 in flight (80 requests at once); in this run, one of the
    # short ones was refused a few times within a millisecond, paced before any round trip,
    # and kept at a request every tenth of a second for 5 s: 2.8x its fair time.
    model, fleet = sim.SCENARIOS["leave-8-in-flight-50"]
    outcome = simulate(model, fleet, seed=9)
    assert outcome.failed == 0
    assert outcome.slowest <= 2.0


def test_with_more_clients_than_places_no_client_starves() -> None:
    model = ServerModel(max_in_flight=4)
    outcome = simulate(model, [ClientSpec(10)] * 16, seed=0)
    # Each client paces below one request per round trip, and gets through; while the gaps
    # are learned, a session may run out of its 429s (max_rate_limited).
    assert outcome.failed <= 2
    # The issue asks 2x: missed (2.98 here; 2.11 before pacing turned cautious, which costs
    # this crowd's slowest client and keeps every call of the larger crowds within its 429s:
    # see docs/performance.md, "Crowds").
    assert outcome.slowest <= 3.1


@pytest.mark.parametrize("name", ["crowd-100-per-second-20", "crowd-100-in-flight-8"])
def test_a_crowd_paces_itself_so_that_no_call_runs_out_of_its_429s(name: str) -> None:
    # A hundred clients on a limit of 20 a second (or 8 in flight): each needs a gap of
    # seconds between its requests. Before pacing turned cautious, the gap's decay in time
    # held it under a second, 83 % of the sends were refused, and 117 of 600 calls failed.
    model, clients = sim.SCENARIOS[name]
    outcome = simulate(model, clients, seed=0)
    assert outcome.failed == 0
    assert outcome.slowest <= 2.0  # no client starves (1.80 and 1.63 here)


def test_a_call_refused_again_and_again_makes_the_pace_cautious() -> None:
    # One call, refused until the window is one and pacing starts, then on: it carries every
    # refusal, so each one running lengthens the gap by more than GAP_GROWTH; and, the calls
    # carrying a refusal each, a lone refusal between successes lengthens it too.
    loop = sim.VirtualTimeLoop()
    flow = FlowControl(100, 60.0, 30.0, loop.time)
    refused, accepted = Response(429, {}, b""), Response(200, {}, b"")

    async def send(answer: Response) -> float:
        permit = flow.try_acquire() or await flow.acquire()
        flow.release(permit, answer)
        return flow._paused_until - loop.time()  # the gate's hold: the gap now

    async def run() -> tuple[float, float, float, float]:
        while not flow._gap:
            first = await send(refused)
        second = await send(refused)
        held = await send(accepted)
        lone = await send(refused)
        return first, second, held, lone

    try:
        first, second, held, lone = loop.run_until_complete(run())
    finally:
        loop.close()
    assert first == pytest.approx(FIRST_GAP)
    assert second > 10 * FIRST_GAP * GAP_GROWTH  # the plain rule: FIRST_GAP * GAP_GROWTH
    assert held > 0
    assert lone > 0  # held again for a gap; the plain rule: no hold at all


def test_the_pace_recovers_with_time_after_a_storm() -> None:
    # Every request refused for 2 s, then a server that takes everything: the gap that the
    # storm built wears off with time, not only per success, so that the rest closes fast.
    model = ServerModel(storm_until=2.0)
    outcome = simulate(model, [ClientSpec(600)], seed=0)
    closed_after_storm = 600 - outcome.failed
    assert closed_after_storm > 0
    assert outcome.wall <= 2.0 + 3.0  # 600 at 32 in flight take 1 s once open


def test_a_retry_after_of_zero_or_in_the_past_is_a_bare_refusal() -> None:
    for header in ("0", sim.PAST_DATE):
        model = ServerModel(max_per_second=50.0, latency=0.001, retry_after=header)
        outcome = simulate(model, [ClientSpec(150, way="gather")], seed=0)
        assert outcome.failed == 0  # paced, not hammered into RateLimitError
        assert outcome.requests_per_session <= 1.7
        assert outcome.wall <= 1.2 * 150 / 50


def test_unknown_ids_use_the_window_as_live_ones_do() -> None:
    live = simulate(ServerModel(), [ClientSpec(400)], seed=0)
    unknown = simulate(ServerModel(not_found=True), [ClientSpec(400)], seed=0)
    assert unknown.wall == pytest.approx(live.wall, rel=0.05)


def test_random_refusals_do_not_stop_a_client() -> None:
    outcome = simulate(ServerModel(random_429=0.03), [ClientSpec(300)], seed=0)
    assert outcome.failed == 0


def test_the_simulator_drives_the_real_flow_control() -> None:
    # No copy of the algorithm: the class every SessionsAPI uses.
    assert sim.FlowControl is FlowControl
    assert sim.Response is Response


async def paused(
    flow: FlowControl, *, accepted: int, retry_after: str, after: float
) -> list[asyncio.Task[tuple[int, int]]]:
    """Ten requests sent; after *after* seconds, *accepted* of them answered 200 and the rest
    429 asking *retry_after*; then as many calls as the (cut) window waiting for a permit."""
    first = [flow.try_acquire() for _ in range(10)]
    await asyncio.sleep(after)
    refused = Response(429, {"retry-after": retry_after}, b"")
    for number, permit in enumerate(first):
        assert permit is not None
        flow.release(permit, Response(200, {}, b"") if number < accepted else refused)
    window = int(flow.window)
    assert window >= 4
    return [asyncio.create_task(flow.acquire()) for _ in range(window)]


def test_after_a_server_asked_pause_the_gate_reopens_paced() -> None:
    loop = sim.VirtualTimeLoop()
    flow = FlowControl(100, 60.0, 30.0, loop.time)

    async def run() -> list[int]:
        waiting = await paused(flow, accepted=5, retry_after="1", after=0.0)
        granted = []
        for moment in (0.5, 1.0 + 1e-6, 1.5):
            await asyncio.sleep(moment - loop.time())
            granted.append(sum(task.done() for task in waiting))
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return granted

    try:
        during, reopened, later = loop.run_until_complete(run())
    finally:
        loop.close()
    assert during == 0  # held, as the server asked
    assert reopened == 1  # one at the reopening, not the whole window
    assert later > 1  # then more, at the pace the server accepted


def test_after_a_short_server_asked_pause_the_gate_reopens_with_the_window() -> None:
    loop = sim.VirtualTimeLoop()
    flow = FlowControl(100, 60.0, 30.0, loop.time)

    async def run() -> tuple[int, int, int]:
        # After 0.5 s (virtual): a rate accepted of 18 a second, for a pace to learn.
        waiting = await paused(flow, accepted=9, retry_after="0.05", after=0.5)
        window = len(waiting)
        await asyncio.sleep(0.04)
        during = sum(task.done() for task in waiting)
        await asyncio.sleep(0.05)  # past the pause and its resume jitter (a quarter of it)
        reopened = sum(task.done() for task in waiting)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return during, reopened, window

    try:
        during, reopened, window = loop.run_until_complete(run())
    finally:
        loop.close()
    assert during == 0  # held, as the server asked
    assert reopened == window  # a short pause reopens with the whole window: no pace


def test_a_pause_below_the_rate_refused_last_leaves_the_pace() -> None:
    # A rate's limit refuses at or past the rate it refused before, never below it: a 429
    # that asks a wait while the pace is below that rate is the server's chance, and the pace
    # stands. Cut at each such pause, it sank for good where waits came at random.
    loop = sim.VirtualTimeLoop()
    flow = FlowControl(100, 60.0, 30.0, loop.time)
    refused = Response(429, {"retry-after": "1"}, b"")

    async def refuse_one() -> None:
        permit = await flow.acquire()
        flow.release(permit, refused)

    async def run() -> tuple[float, float]:
        first = [flow.try_acquire() for _ in range(10)]
        await asyncio.sleep(0.5)
        for number, permit in enumerate(first):
            assert permit is not None
            flow.release(permit, Response(200, {}, b"") if number < 5 else refused)
        await asyncio.sleep(2.0)  # reopened, paced, doubling
        await refuse_one()  # a pause while paced: the pace is cut below the rate refused
        await asyncio.sleep(1.5)
        before = flow._pace_now()
        await refuse_one()  # refused again, below that rate
        await asyncio.sleep(1.5)
        return before, flow._pace_now()

    try:
        before, after = loop.run_until_complete(run())
    finally:
        loop.close()
    assert after >= before  # not cut: it went on growing through the pause


def test_random_429s_asking_a_short_wait_cost_no_more_than_bare_ones() -> None:
    # The demo's realistic faults: 3 % of answers a 429 that asks 50 ms. Each pause used to
    # cut a pace that measured only its own sending, and the client sank to a few requests a
    # second (32.8x the ideal here; the demo's 1,000 releases took 104 s instead of 4 s).
    bare = simulate(ServerModel(random_429=0.03), [ClientSpec(600)], seed=0)
    asking = simulate(ServerModel(random_429=0.03, retry_after="0.05"), [ClientSpec(600)], seed=0)
    assert asking.failed == 0
    # What it may cost more is the pauses it was asked for, 50 ms per 429, and no more.
    refused = round((asking.requests_per_session - 1.0) * 600)
    assert asking.wall <= bare.wall + 0.05 * refused


def test_a_retry_after_of_one_spends_few_refusals_after_a_pause() -> None:
    # 50 a second whose 429s say "Retry-After: 1": a gate that reopened with the whole window
    # spent the bucket's burst in one go and was refused again at once (1.39 requests per
    # session, 0.09 of the rate used); paced, the next pause comes rarely.
    model, clients = sim.SCENARIOS["retry-after-1-50-per-second"]
    outcome = simulate(model, clients, seed=0)
    assert outcome.failed == 0
    assert outcome.requests_per_session <= 1.05
    assert outcome.used >= 0.5


def test_the_real_benchs_limit_per_second_has_its_twin_in_the_simulator() -> None:
    # The real bench closes 600 sessions against the fake, not the 6,000 of the simulator's
    # long fleets: its start weighs ten times more, so it is simulated as it runs.
    real = _load("fleet").SCENARIOS["fleet-per-second"]
    model, clients = sim.SCENARIOS["bench-4-per-second-200"]
    assert [client.sessions for client in clients] == real["clients"]
    assert model.max_per_second == real["max_per_second"]
    assert model.latency == real["latency"]
    assert model.jitter == 0.0  # the fake sleeps its latency exactly
    outcome = simulate(model, clients, seed=0)
    assert outcome.failed == 0


def test_a_fleet_at_a_limit_per_second_stays_paced_through_a_shallow_spell() -> None:
    # 8 clients on 200 a second, each getting about half a request per round trip: a client
    # that left pacing at its first success climbed to three or four places and was refused
    # again (1.37 requests per session; now 1.28); a shallow spell lasts its minimum.
    model, clients = sim.SCENARIOS["fleet-8-per-second-200"]
    outcome = simulate(model, clients, seed=0)
    assert outcome.failed == 0
    assert outcome.requests_per_session <= 1.30
    assert outcome.jain >= 0.95
