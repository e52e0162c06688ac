"""Fleet benchmark: K client processes, each with its own `SessionsAPI`, sharing one limit.

    python bench/fleet.py                       # every scenario, 5 rounds (about 8 minutes)
    python bench/fleet.py --scenarios fleet-in-flight --rounds 3
    python bench/fleet.py --quick               # a tiny run that only checks everything works
    python bench/fleet.py --scenarios fleet-in-flight --ways many --sample 0.025 --out runs.json
                                                # and each client's window, every 25 ms

A `FakeBrowserbase` runs in a process of its own with the scenario's limit (requests in flight,
or per second), answering 429 beyond it at once; its 429s may carry a ``Retry-After`` (0, an
HTTP-date in the past, or 1 s), and it may refuse a share of all requests at random. Each
client is a process of its own with its own client; they start together (each gets "go" on
its stdin at once, after its imports), or some join later. The ways a client closes its
sessions:

- ``oracle``: ``release_many(concurrency=L // K)``: each client told its share of the limit;
- ``many``: ``release_many`` at its default concurrency;
- ``gather``: one ``asyncio.gather`` of ``release()`` for every session;
- ``guards``: one coroutine per session, each in its own ``async with api.guard(id):``;
- ``mix``: the clients take ``many``, ``gather`` and ``guards`` in turn.

Per scenario and way, over the rounds: the sessions closed (by the server's count; the fewest
of the rounds), the aggregate wall time (the last client's end, from "go") over the yardstick
(the oracle's median for a limit in flight, N / R for a limit per second, N x latency / L for
the joiners, the same run without the faults for random 429s and unknown ids), Jain's index
over the clients' throughputs, the slowest client's time over the fastest's, and the requests
the server received per session. Medians, and the worst round (``--rounds``; the issue's
targets are about every one of 5 rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAST_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
WAYS = ("oracle", "many", "gather", "guards", "mix")
SAMPLE_ENV = "BENCH_FLEET_SAMPLE"
"""The environment variable that asks each client process to sample its flow (``--sample``)."""

SCENARIOS: dict[str, dict[str, Any]] = {
    "fleet-in-flight": {
        "clients": [250] * 4,
        "max_in_flight": 25,
        "latency": 0.05,
        "ways": WAYS,
    },
    # The same with a service time that varies by 20 %, as a real server's does: the fixed
    # 50 ms above keeps the fleet in lockstep (see docs/performance.md).
    "fleet-in-flight-jitter": {
        "clients": [250] * 4,
        "max_in_flight": 25,
        "latency": 0.05,
        "latency_jitter": 0.2,
        "ways": WAYS,
    },
    "fleet-per-second": {
        "clients": [150] * 4,
        "max_per_second": 200.0,
        "latency": 0.02,
        "ways": ("many", "gather", "mix"),
    },
    "join": {
        "clients": [600, 200, 200, 200],
        "starts": [0.0, 1.0, 1.0, 1.0],
        "max_in_flight": 25,
        "latency": 0.05,
        "ways": ("many", "gather"),
    },
    "random-0%": {"clients": [600], "latency": 0.05, "ways": ("many",)},
    "random-3%": {"clients": [600], "latency": 0.05, "random_429": 0.03, "ways": ("many",)},
    "random-10%": {"clients": [600], "latency": 0.05, "random_429": 0.10, "ways": ("many",)},
    # The demo's realistic faults: 3 % of answers a 429 that asks a wait of 50 ms.
    "random-3%-asking-50-ms": {
        "clients": [600],
        "latency": 0.05,
        "random_429": 0.03,
        "retry_after": "0.05",
        "ways": ("many",),
    },
    "live-ids": {"clients": [1000], "latency": 0.05, "ways": ("many",)},
    "unknown-ids": {"clients": [1000], "latency": 0.05, "unknown": True, "ways": ("many",)},
    "retry-after-0": {
        "clients": [300],
        "max_per_second": 50.0,
        "latency": 0.001,
        "retry_after": "0",
        "ways": ("gather",),
    },
    "retry-after-past": {
        "clients": [300],
        "max_per_second": 50.0,
        "latency": 0.001,
        "retry_after": PAST_DATE,
        "ways": ("gather",),
    },
    "retry-after-1": {
        "clients": [300],
        "max_per_second": 50.0,
        "latency": 0.02,
        "retry_after": "1",
        "ways": ("gather",),
    },
}
BASELINES = {
    "random-3%": "random-0%",
    "random-10%": "random-0%",
    "random-3%-asking-50-ms": "random-0%",
    "unknown-ids": "live-ids",
}
QUICK: dict[str, dict[str, Any]] = {
    "fleet-in-flight": {
        "clients": [40] * 3,
        "max_in_flight": 6,
        "latency": 0.01,
        "ways": WAYS,
    },
    "join": {
        "clients": [40, 20],
        "starts": [0.0, 0.1],
        "max_in_flight": 6,
        "latency": 0.01,
        "ways": ("gather",),
    },
    "retry-after-0": {
        "clients": [30],
        "max_per_second": 100.0,
        "latency": 0.001,
        "retry_after": "0",
        "ways": ("gather",),
    },
}


# -- the server process ---------------------------------------------------------------------


async def serve(spec: dict[str, Any]) -> None:
    """Serve a fake with *spec*'s limit; print its URL; on a line of stdin, print figures."""
    from aiohttp import web

    from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

    header = spec.get("retry_after")

    class Fake(FakeBrowserbase):
        async def _answer(
            self, request: web.Request, route: str, act: Any, fault: Fault | None
        ) -> web.Response:
            answer = await super()._answer(request, route, act, fault)
            if header is not None and answer.status == 429:
                answer.headers["Retry-After"] = header
            return answer

    plan = FaultPlan(
        latency=spec["latency"],
        latency_jitter=spec.get("latency_jitter", 0.0),
        max_in_flight=spec.get("max_in_flight"),
        max_per_second=spec.get("max_per_second"),
        rate_limit_rate=spec.get("random_429", 0.0),
        seed=None,
    )
    total = sum(spec["clients"])
    async with Fake(api_key="bench-key", faults=plan) as fake:
        ids = [f"s-{i}" for i in range(total)]
        if not spec.get("unknown"):
            for session_id in ids:
                fake.add_session(session_id)
        print(fake.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        closed = sum(fake.status(i) != "RUNNING" for i in ids) if not spec.get("unknown") else 0
        print(
            json.dumps(
                {
                    "closed": closed,
                    "requests": fake.received.total,
                    "refused": fake.received.answers[429],
                    "not_found": fake.received.answers[404],
                }
            ),
            flush=True,
        )


# -- a client process -----------------------------------------------------------------------


async def run_client(
    way: str, url: str, first: int, count: int, start: float, concurrency: int | None
) -> dict[str, Any]:
    """Wait for "go" on stdin; after *start* s close sessions ``s-first..``; return figures."""
    from browserbase_async import SessionsAPI

    ids = [f"s-{i}" for i in range(first, first + count)]
    async with SessionsAPI("bench-key", base_url=url) as api:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.sleep(start)
        began = time.perf_counter()
        samples: list[tuple[float, float, int, int]] = []

        async def sample(every: float) -> None:
            while True:
                stats = api.flow_stats()
                moment = round(time.perf_counter() - began, 4)
                samples.append((moment, stats.window, stats.in_flight, stats.rate_limited))
                await asyncio.sleep(every)

        every = float(os.environ.get(SAMPLE_ENV) or 0)
        sampler = asyncio.create_task(sample(every)) if every else None
        if way == "oracle" or (way == "many" and concurrency):
            report = await api.release_many(ids, concurrency=concurrency or 1)
            ok = len(report.released)
        elif way == "many":
            ok = len((await api.release_many(ids)).released)
        elif way == "gather":
            outcomes = await asyncio.gather(*(api.release(i) for i in ids), return_exceptions=True)
            ok = sum(not isinstance(outcome, BaseException) for outcome in outcomes)
        else:

            async def guarded(session_id: str) -> None:
                async with api.guard(session_id):
                    await asyncio.sleep(0)

            ends = await asyncio.gather(*(guarded(i) for i in ids), return_exceptions=True)
            ok = sum(not isinstance(end, BaseException) for end in ends)
        wall = time.perf_counter() - began
        if sampler is not None:
            sampler.cancel()
        stats = api.flow_stats()
    figures: dict[str, Any] = {
        "wall": wall,
        "ok": ok,
        "requests": stats.requests,
        "refused": stats.rate_limited,
    }
    if every:
        # When it began by the machine's clock: how far apart the clients started.
        figures["began"] = time.time() - (time.perf_counter() - began)
        figures["samples"] = samples
    return figures


# -- the orchestration ----------------------------------------------------------------------


def _way_of(way: str, number: int) -> str:
    if way == "mix":
        return ("many", "gather", "guards")[number % 3]
    return way


def one_run(spec: dict[str, Any], way: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    clients: list[subprocess.Popen[str]] = []
    try:
        url = server.stdout.readline().strip()
        limit = spec.get("max_in_flight")
        k = len(spec["clients"])
        first = 0
        for number, count in enumerate(spec["clients"]):
            concurrency = max(1, limit // k) if way == "oracle" and limit else None
            start = spec.get("starts", [0.0] * k)[number]
            arguments = [_way_of(way, number), url, str(first), str(count), str(start)]
            arguments.append(str(concurrency or 0))
            clients.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--client", *arguments],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
            first += count
        for client in clients:
            assert client.stdout is not None
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("a client did not start")
        for client in clients:  # "go" to all, as close together as this loop goes
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        figures = []
        for client in clients:
            out, _ = client.communicate(timeout=300)
            if client.returncode:
                raise RuntimeError(f"a {way} client failed")
            figures.append(json.loads(out.strip().splitlines()[-1]))
        server.stdin.write("done\n")
        server.stdin.flush()
        served = json.loads(server.stdout.readline())
    except BaseException:
        for process in [server, *clients]:
            process.kill()
        raise
    finally:
        server.wait(timeout=30)
    starts = spec.get("starts", [0.0] * len(figures))
    walls = [start + figure["wall"] for start, figure in zip(starts, figures, strict=True)]
    rates = [count / figure["wall"] for count, figure in zip(spec["clients"], figures, strict=True)]
    judged = [rate for rate, start in zip(rates, starts, strict=True) if start == max(starts)]
    jain = sum(judged) ** 2 / (len(judged) * sum(rate * rate for rate in judged))
    own = [figure["wall"] for figure in figures]
    traced = {"clients": figures} if os.environ.get(SAMPLE_ENV) else {}
    return {
        "way": way,
        "wall": max(walls),
        "jain": jain,
        "spread": max(own) / min(own),
        **traced,
        "ok": sum(figure["ok"] for figure in figures),
        **served,
    }


def yardstick(name: str, spec: dict[str, Any], runs: list[dict[str, Any]]) -> float:
    total = sum(spec["clients"])
    mine = [run for run in runs if run["scenario"] == name]
    if any(run["way"] == "oracle" for run in mine):
        return float(statistics.median(run["wall"] for run in mine if run["way"] == "oracle"))
    if name in BASELINES:
        base = [run for run in runs if run["scenario"] == BASELINES[name]]
        if base:
            return float(statistics.median(run["wall"] for run in base))
    if name in BASELINES.values() and mine:
        return float(statistics.median(run["wall"] for run in mine))
    if "max_per_second" in spec:
        return float(total / spec["max_per_second"])
    if "max_in_flight" in spec:
        return float(total * spec["latency"] / spec["max_in_flight"])
    return float("nan")


def table(results: list[dict[str, Any]], scenarios: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scenario | way | sessions (fewest) | wall / yardstick, median (worst) |"
        " Jain, median (worst) | slowest / fastest (worst) | requests / session (worst) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, spec in scenarios.items():
        ideal = yardstick(name, spec, results)
        total = sum(spec["clients"])
        runs = [run for run in results if run["scenario"] == name]
        for way in dict.fromkeys(run["way"] for run in runs):
            mine = [run for run in runs if run["way"] == way]
            ratios = [run["wall"] / ideal for run in mine]
            jains = [run["jain"] for run in mine]
            per = [run["requests"] / total for run in mine]
            # Unknown ids are never closed: count the answers (404) each got instead.
            closed = min(run["not_found" if spec.get("unknown") else "closed"] for run in mine)
            said = "answered 404" if spec.get("unknown") else "closed"
            lines.append(
                f"| {name} | {way} | {closed} of {total} {said} |"
                f" {statistics.median(ratios):.2f} ({max(ratios):.2f}) |"
                f" {statistics.median(jains):.3f} ({min(jains):.3f}) |"
                f" {max(run['spread'] for run in mine):.2f} | {max(per):.2f} |"
            )
    return "\n".join(lines)


def _seconds(text: str) -> float:
    """A sampling interval: a number of seconds above 0 (an argparse type)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny scenarios, one round")
    parser.add_argument("--scenarios", help="comma-separated names (default: all)")
    parser.add_argument("--ways", help="only these ways (comma-separated)")
    parser.add_argument("--out", metavar="JSON", help="write every run here")
    parser.add_argument(
        "--sample",
        type=_seconds,
        metavar="SECONDS",
        help="each client records its window, requests in flight and 429s so far every SECONDS"
        " (in --out, each run's 'clients')",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(json.loads(args.serve)))
        return
    if args.client:
        way, url, first, count, start, concurrency = args.client
        figures = asyncio.run(
            run_client(way, url, int(first), int(count), float(start), int(concurrency) or None)
        )
        print(json.dumps(figures))
        return
    if args.sample:
        os.environ[SAMPLE_ENV] = str(args.sample)  # the client processes inherit it
    chosen = QUICK if args.quick else SCENARIOS
    names = args.scenarios.split(",") if args.scenarios else list(chosen)
    scenarios = {name: chosen[name] for name in names}
    results: list[dict[str, Any]] = []
    for round_number in range(1 if args.quick else args.rounds):
        for name, spec in scenarios.items():
            for way in spec["ways"]:
                if args.ways and way not in args.ways.split(","):
                    continue
                run = {"scenario": name, **one_run(spec, way)}
                results.append(run)
                print(
                    f"round {round_number + 1} {name:17} {way:7} {run['wall']:6.2f} s"
                    f"  closed {run['closed']:5}  Jain {run['jain']:.3f}"
                    f"  spread {run['spread']:.2f}"
                    f"  {run['requests'] / sum(spec['clients']):.2f} req/session",
                    file=sys.stderr,
                    flush=True,
                )
    print(table(results, scenarios))
    if args.out:
        Path(args.out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
