"""Flow benchmark: closing sessions against a server that refuses beyond its limit.

    python bench/flow.py                  # every scenario, 3 rounds (pip install -e '.[bench]')
    python bench/flow.py --rounds 5 --plot docs/flow.png
    python bench/flow.py --old REV        # and the client as it was at git revision REV
    python bench/flow.py --quick          # a tiny run that only checks everything works

A `FakeBrowserbase` runs in a process of its own, with a limit on requests in flight or on
requests per second, answering 429 beyond it at once and without a hint; every other request
takes a fixed time. Each way of closing the sessions runs in a fresh client process, against a
fresh server, round after round, the ways alternating:

- ``oracle``: ``release_many(concurrency=L)``, a client told the limit, never refused: the
  yardstick for a limit on requests in flight (it pays this harness's own cost per round trip);
- ``many``: ``release_many`` at its default concurrency (64 in the step scenario, so that it
  can follow the limit up to 50);
- ``gather``: one ``asyncio.gather`` of ``release()`` for every session, as scrapers write it;
- ``guards``: one coroutine per session, each in its own ``async with api.guard(id):``.

For a limit per second the yardstick is N / R. The table gives, per scenario and way, the
sessions closed (by the server's own count), the median wall time over the yardstick, and the
requests the server received per session. The server samples its requests in flight every
5 ms; ``--plot`` draws them against its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE_EVERY = 0.005
WAYS = ("oracle", "many", "gather", "guards")

SCENARIOS: dict[str, dict[str, Any]] = {
    "in-flight": {"n": 1000, "max_in_flight": 25, "latency": 0.05, "oracle": 25},
    "per-second": {"n": 600, "max_per_second": 200.0, "latency": 0.02, "ideal": 3.0},
    # Limits below one request per round trip: the window sits at one, and pacing takes over.
    "slow": {"n": 100, "max_per_second": 20.0, "latency": 0.02, "ideal": 5.0},
    "instant": {"n": 300, "max_per_second": 200.0, "latency": 0.0, "ideal": 1.5},
    "step": {
        "n": 2000,
        "max_in_flight": 25,
        "step_to": 50,
        "latency": 0.05,
        "oracle": 50,
        "concurrency": 64,
    },
}
QUICK: dict[str, dict[str, Any]] = {
    "in-flight": {"n": 60, "max_in_flight": 5, "latency": 0.01, "oracle": 5},
    "per-second": {"n": 60, "max_per_second": 200.0, "latency": 0.01, "ideal": 0.3},
    "slow": {"n": 10, "max_per_second": 20.0, "latency": 0.02, "ideal": 0.5},
    "instant": {"n": 30, "max_per_second": 200.0, "latency": 0.0, "ideal": 0.15},
    "step": {
        "n": 80,
        "max_in_flight": 5,
        "step_to": 10,
        "latency": 0.01,
        "oracle": 10,
        "concurrency": 16,
    },
}


# -- the server process ---------------------------------------------------------------------


async def serve(spec: dict[str, Any]) -> None:
    """Serve a fake with *spec*'s limit; print its URL; on a line of stdin, print figures."""
    import attrs

    from browserbase_async.testing import FakeBrowserbase, FaultPlan

    plan = FaultPlan(
        latency=spec["latency"],
        max_in_flight=spec.get("max_in_flight"),
        max_per_second=spec.get("max_per_second"),
    )
    n = spec["n"]
    async with FakeBrowserbase(api_key="bench-key", faults=plan) as fake:
        ids = [fake.add_session(f"s-{i}") for i in range(n)]
        series: list[tuple[float, int, int]] = []
        stepped_at: float | None = None
        started: float | None = None

        async def sample() -> None:
            nonlocal stepped_at, started
            while True:
                now = time.monotonic()
                if fake.received.total and started is None:
                    started = now
                if started is not None:
                    limit = fake.faults.max_in_flight or 0
                    series.append((now - started, fake._in_flight, limit))
                if "step_to" in spec and stepped_at is None:
                    closed = sum(fake.status(i) != "RUNNING" for i in ids)
                    if closed >= n // 2:
                        fake.faults = attrs.evolve(fake.faults, max_in_flight=spec["step_to"])
                        stepped_at = now - (started or now)
                await asyncio.sleep(SAMPLE_EVERY)

        sampler = asyncio.create_task(sample())
        print(fake.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        sampler.cancel()
        closed = sum(fake.status(i) != "RUNNING" for i in ids)
        figures = {
            "closed": closed,
            "requests": fake.received.total,
            "refused": fake.received.answers[429],
            "stepped_at": stepped_at,
            "series": series,
        }
        print(json.dumps(figures), flush=True)


# -- the client process ---------------------------------------------------------------------


async def run_way(way: str, url: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Close every session one way; return the wall time and the client's figures."""
    from browserbase_async import SessionsAPI

    ids = [f"s-{i}" for i in range(spec["n"])]
    windows: list[tuple[float, float]] = []
    async with SessionsAPI("bench-key", base_url=url) as api:
        stats = getattr(api, "flow_stats", None)

        async def watch() -> None:
            while stats is not None:
                windows.append((time.perf_counter() - started, stats().window))
                await asyncio.sleep(SAMPLE_EVERY)

        started = time.perf_counter()
        watcher = asyncio.create_task(watch())
        if way == "oracle":
            await api.release_many(ids, concurrency=spec["oracle"])
        elif way == "many" and "concurrency" in spec:
            await api.release_many(ids, concurrency=spec["concurrency"])
        elif way == "many":
            await api.release_many(ids)
        elif way == "gather":
            await asyncio.gather(*(api.release(i) for i in ids), return_exceptions=True)
        else:

            async def guarded(session_id: str) -> None:
                async with api.guard(session_id):
                    await asyncio.sleep(0)

            await asyncio.gather(*(guarded(i) for i in ids), return_exceptions=True)
        wall = time.perf_counter() - started
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return {"wall": wall, "windows": windows}


# -- the orchestration ----------------------------------------------------------------------


def one_run(scenario: str, spec: dict[str, Any], way: str, pythonpath: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        url = server.stdout.readline().strip()
        client = subprocess.run(
            [sys.executable, __file__, "--client", way, url, json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if client.returncode:
            raise RuntimeError(f"the {way} client failed:\n{client.stderr}")
        server.stdin.write("done\n")
        server.stdin.flush()
        figures = json.loads(server.stdout.readline())
    except BaseException:
        server.kill()
        raise
    finally:
        server.wait(timeout=30)
    return {"scenario": scenario, "way": way, **json.loads(client.stdout), **figures}


def old_tree(revision: str, keep: list[tempfile.TemporaryDirectory[str]]) -> str:
    """A worktree of *revision*, for its client; the server is always the current fake."""
    folder = tempfile.TemporaryDirectory()
    keep.append(folder)
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", folder.name, revision],
        check=True,
        capture_output=True,
    )
    return folder.name


def yardstick(spec: dict[str, Any], runs: list[dict[str, Any]]) -> float:
    if "ideal" in spec:
        return float(spec["ideal"])
    return statistics.median(run["wall"] for run in runs if run["way"] == "oracle")


def table(results: list[dict[str, Any]], scenarios: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scenario | way | sessions closed | wall / ideal | requests per session |",
        "|---|---|---:|---:|---:|",
    ]
    for name, spec in scenarios.items():
        runs = [run for run in results if run["scenario"] == name]
        ideal = yardstick(spec, runs)
        for way in dict.fromkeys(run["way"] for run in runs):
            mine = [run for run in runs if run["way"] == way]
            closed = min(run["closed"] for run in mine)
            wall = statistics.median(run["wall"] for run in mine) / ideal
            per = statistics.median(run["requests"] / spec["n"] for run in mine)
            lines.append(f"| {name} | {way} | {closed} of {spec['n']} | {wall:.2f} | {per:.2f} |")
    return "\n".join(lines)


def step_delay(run: dict[str, Any], new_limit: int) -> float | None:
    """Seconds from the step until the server first holds 90 % of the new limit."""
    stepped = run.get("stepped_at")
    if stepped is None:
        return None
    for moment, in_flight, _ in run["series"]:
        if moment >= stepped and in_flight >= 0.9 * new_limit:
            return float(moment - stepped)
    return None


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Requests in flight at the server in the step scenario, one panel per client version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {}
    for run in results:
        if run["scenario"] == "step" and run["way"].startswith("many"):
            shown.setdefault(run["label"], run)  # the first round of each
    figure, axes = plt.subplots(len(shown), 1, figsize=(9, 2.8 * len(shown)), sharex=True)
    axes = [axes] if len(shown) == 1 else list(axes)
    names = {"new": "the client-wide window", "old": "the old halving window (per run)"}
    for axis, (label, run) in zip(axes, shown.items(), strict=True):
        moments = [point[0] for point in run["series"]]
        counts = [point[1] for point in run["series"]]
        # The server sees answers leave in waves; the mean over one latency shows the level.
        span = max(1, round(SCENARIOS["step"]["latency"] / SAMPLE_EVERY))
        smooth = [
            sum(counts[max(0, i - span + 1) : i + 1]) / min(i + 1, span) for i in range(len(counts))
        ]
        axis.plot(moments, counts, lw=0.5, alpha=0.35, color="tab:blue")
        axis.plot(moments, smooth, lw=1.4, color="tab:blue", label="in flight (mean over 50 ms)")
        axis.plot(moments, [point[2] for point in run["series"]], "k--", lw=1, label="limit")
        axis.set_title(
            f"release_many(concurrency=64), {names.get(label, label)}: {run['wall']:.2f} s,"
            f" {run['requests'] / run['closed']:.2f} requests per session",
            fontsize=10,
        )
        axis.set_ylabel("requests in flight")
        axis.set_ylim(0, 60)
        axis.legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel("seconds from the first request")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def describe(name: str, spec: dict[str, Any]) -> str:
    """A scenario in a few words, for ``--help``: sessions, limit, time per request."""
    if "max_in_flight" in spec:
        limit = f"{spec['max_in_flight']} in flight"
        if "step_to" in spec:
            limit += f", then {spec['step_to']}"
    else:
        limit = f"{spec['max_per_second']:g} / s"
    latency = f"{spec['latency'] * 1000:g} ms" if spec["latency"] else "at once"
    return f"{name} ({spec['n']:,} sessions, {limit}, {latency})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every way (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny scenarios, one round: a smoke run"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, of: "
        + "; ".join(describe(name, spec) for name, spec in SCENARIOS.items())
        + " (default: all)",
    )
    parser.add_argument(
        "--ways", default=",".join(WAYS), help=f"comma-separated, of: {', '.join(WAYS)}"
    )
    parser.add_argument("--old", metavar="REV", help="also run the client of git revision REV")
    parser.add_argument("--plot", metavar="PNG", help="draw the step scenario's in-flight curve")
    parser.add_argument("--out", metavar="JSON", help="write every run here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(json.loads(args.serve)))
        return
    if args.client:
        way, url, spec = args.client
        print(json.dumps(asyncio.run(run_way(way, url, json.loads(spec)))))
        return
    chosen = QUICK if args.quick else SCENARIOS
    scenarios = {name: chosen[name] for name in args.scenarios.split(",")}
    ways = args.ways.split(",")
    trees = {"new": str(ROOT)}
    keep: list[tempfile.TemporaryDirectory[str]] = []
    if args.old:
        trees["old"] = old_tree(args.old, keep)
    results: list[dict[str, Any]] = []
    try:
        for round_number in range(1 if args.quick else args.rounds):
            for name, spec in scenarios.items():
                for label, tree in trees.items():
                    for way in ways:
                        if way == "oracle" and (label == "old" or "oracle" not in spec):
                            continue
                        run = one_run(name, spec, way, tree)
                        run["label"] = label
                        if label == "old":
                            run["way"] = f"{way} (old)"
                        results.append(run)
                        print(
                            f"round {round_number + 1} {name:10} {run['way']:14}"
                            f" {run['wall']:6.2f} s  {run['closed']:5} closed"
                            f"  {run['requests'] / spec['n']:.2f} req/session",
                            file=sys.stderr,
                        )
    finally:
        for folder in keep:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", folder.name],
                check=False,
                capture_output=True,
            )
    print(table(results, scenarios))
    # A --quick step is too short for the window to climb: its delay would say nothing.
    if "step" in scenarios and not args.quick:
        for run in results:
            if run["scenario"] == "step" and run["way"] != "oracle":
                delay = step_delay(run, scenarios["step"]["step_to"])
                if delay is None:
                    print(f"step {run['way']}: the run ended before 90 % of the new limit")
                else:
                    print(f"step {run['way']}: 90 % of the new limit in flight after {delay:.2f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
