"""Lifecycle benchmark: sessions created, used and released on a plan with fewer browsers.

    python bench/lifecycle.py              # 3 rounds of each scenario (pip install -e '.[bench]')
    python bench/lifecycle.py --rounds 5
    python bench/lifecycle.py --quick      # a tiny run that only checks everything works

The fake runs in a process of its own (``python -m browserbase_async.testing
--max-browsers B``), a fresh one for each run; the ways alternate round after round.

``scrape``: W workers, each in ``async with api.session():``, use the browser
U seconds. The yardstick is the ideal, ceil(W / B) x (U + one round trip per
create and per release, measured alone before the run), and ``oracle``: a client
told the plan (a semaphore of B around create, use, release), never refused.

``releases``: ``release_many`` of N running sessions on a plan kept full (B more
sessions run through the run), alone (``alone``), and while C ``session()``
blocks wait for a browser in the same client (``creates-wait``): a create's 429
must not slow the releases.

The table gives the median wall time over the yardstick, and the create 429s
per session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from browserbase_async import SessionsAPI

SCRAPE = {"workers": 200, "browsers": 25, "use": 0.05}
RELEASES = {"sessions": 1000, "browsers": 25, "creates": 50}
QUICK_SCRAPE = {"workers": 20, "browsers": 5, "use": 0.01}
QUICK_RELEASES = {"sessions": 60, "browsers": 5, "creates": 5}


@contextlib.asynccontextmanager
async def server(browsers: int, sessions: int) -> AsyncIterator[tuple[str, str]]:
    """A shell fake in its own process; yield its base URL and key."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "browserbase_async.testing",
        "--max-browsers",
        str(browsers),
        "--sessions",
        str(sessions),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    url = (await process.stdout.readline()).decode().strip().split("=", 1)[1]
    key = (await process.stdout.readline()).decode().strip().split("=", 1)[1]
    try:
        yield url, key
    finally:
        process.terminate()
        await process.wait()


async def round_trip(api: SessionsAPI) -> float:
    """One round trip: the quickest of a few creates and releases, halved."""
    quickest = float("inf")
    for _ in range(5):
        started = time.monotonic()
        session = await api.create()
        await api.release(session.id)
        quickest = min(quickest, (time.monotonic() - started) / 2)
    return quickest


async def scrape(way: str, workers: int, browsers: int, use: float) -> dict[str, float]:
    async with server(browsers, 0) as (url, key), SessionsAPI(key, base_url=url) as api:
        rtt = await round_trip(api)
        plan = asyncio.Semaphore(browsers)

        async def in_session() -> None:
            async with api.session():
                await asyncio.sleep(use)

        async def told() -> None:
            async with plan:
                session = await api.create()
                await asyncio.sleep(use)
                await api.release(session.id)

        work = in_session if way == "session" else told
        started = time.monotonic()
        await asyncio.gather(*(work() for _ in range(workers)))
        elapsed = time.monotonic() - started
        ideal = -(-workers // browsers) * (use + 2 * rtt)
        return {"elapsed": elapsed, "ideal": ideal, "refused": api._lifecycle.counts.refused}


async def releases(way: str, sessions: int, browsers: int, creates: int) -> dict[str, float]:
    # As many sessions again as the plan's browsers stay running through the run: the plan is
    # full from start to end, and the waiting creates meet nothing but 429s while it runs.
    async with (
        server(browsers, sessions + browsers) as (url, key),
        SessionsAPI(key, base_url=url) as api,
    ):
        listed = [session.id for session in await api.list(status="RUNNING")]
        ids, held = listed[:sessions], listed[sessions:]

        async def in_session() -> None:
            async with api.session(wait_for_slot=60):
                pass

        waiting = [
            asyncio.create_task(in_session())
            for _ in range(creates if way == "creates-wait" else 0)
        ]
        started = time.monotonic()
        report = await api.release_many(ids)
        elapsed = time.monotonic() - started
        await api.release_many(held)
        await asyncio.gather(*waiting)
        assert report.ok, report.failed[:3]
        return {
            "elapsed": elapsed,
            "requests": report.stats.requests / sessions,
            "refused": api._lifecycle.counts.refused,
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    spec: dict[str, Any] = QUICK_SCRAPE if args.quick else SCRAPE
    runs: dict[str, list[dict[str, float]]] = {"session": [], "oracle": []}
    for _ in range(rounds):
        for way in runs:
            runs[way].append(await scrape(way, **spec))
    print(
        f"scrape: {spec['workers']} workers, a plan of {spec['browsers']} browsers, "
        f"each session used {spec['use'] * 1000:.0f} ms; {rounds} rounds"
    )
    oracle = statistics.median(run["elapsed"] for run in runs["oracle"])
    for way, done in runs.items():
        elapsed = statistics.median(run["elapsed"] for run in done)
        ideal = statistics.median(run["ideal"] for run in done)
        refused = statistics.median(run["refused"] for run in done) / spec["workers"]
        print(
            f"  {way:8} {elapsed:6.3f} s  x{elapsed / ideal:.2f} the ideal  "
            f"x{elapsed / oracle:.2f} the oracle  create 429s per session {refused:.2f}"
        )
    rel: dict[str, Any] = QUICK_RELEASES if args.quick else RELEASES
    runs = {"alone": [], "creates-wait": []}
    for _ in range(rounds):
        for way in runs:
            runs[way].append(await releases(way, **rel))
    print(
        f"releases: {rel['sessions']} running sessions on a full plan of {rel['browsers']}, "
        f"alone and while {rel['creates']} creates wait; {rounds} rounds"
    )
    alone = statistics.median(run["elapsed"] for run in runs["alone"])
    for way, done in runs.items():
        elapsed = statistics.median(run["elapsed"] for run in done)
        requests = statistics.median(run["requests"] for run in done)
        refused = statistics.median(run["refused"] for run in done)
        print(
            f"  {way:12} {elapsed:6.3f} s  x{elapsed / alone:.2f} alone  "
            f"{requests:.2f} requests per release (creates too)  create 429s {refused:.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
