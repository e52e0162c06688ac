"""``browserbase-async demo --scrape``: the whole life of many sessions, against a full plan.

Workers each open ``api.session()``, use the browser a moment, and leave; the
embedded fake has fewer browsers than there are workers, and loses some
create answers. The figures printed say what the run met, and the fake's own
count says that no session is left running.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Final

import attrs
import click

from .._client import SessionsAPI
from .._retry import RetryPolicy

DEFAULT_WORKERS: Final = 200
DEFAULT_BROWSERS: Final = 25
DEFAULT_USE: Final = 0.05
"""Seconds each worker uses its browser."""
LOST_CREATE_RATE: Final = 0.05
ERROR_RATE: Final = 0.02
"""5xx answers to any request, the session untouched."""
ROUND_TRIPS: Final = 9
"""Round trips timed before the run, for the ideal time (the quickest counts)."""
SCRAPE_RETRY: Final = RetryPolicy(max_attempts=5, initial_delay=0.05, max_delay=1.0)


@attrs.frozen
class ScrapeFigures:
    """What one run of the scrape demo met; seconds as floats."""

    workers: int
    browsers: int
    use: float
    elapsed: float
    ideal: float
    created: int
    waited: int
    waited_seconds: float
    refused: int
    lost: int
    recovered: int
    released: int
    left_running: int
    failures: dict[str, int]
    flow_refusals: int
    flow_pauses: int

    @property
    def ok(self) -> bool:
        """Every worker's session was created and released, and none is left running."""
        return not self.failures and self.left_running == 0 and self.released == self.created

    def lines(self) -> list[str]:
        """The figures, as the demo prints them."""
        per_wait = self.waited_seconds / self.waited if self.waited else 0.0
        failed = ", ".join(f"{n} {kind}" for kind, n in sorted(self.failures.items())) or "none"
        return [
            f"demo --scrape: {self.workers} workers in api.session(), a plan of "
            f"{self.browsers} browsers, each session used {self.use * 1000:.0f} ms",
            f"created {self.created}; {self.waited} waited for a free browser "
            f"({per_wait:.2f} s on average); create 429s {self.refused} "
            f"({self.refused / max(self.workers, 1):.2f} per session)",
            f"create answers lost {self.lost}, found by their tag {self.recovered}",
            f"released {self.released}; left RUNNING on the server {self.left_running}; "
            f"failed: {failed}",
            f"took {self.elapsed:.2f} s; ideal {self.ideal:.2f} s; "
            f"ratio {self.elapsed / self.ideal:.2f}",
            f"the releases' window: {self.flow_refusals} 429s, {self.flow_pauses} pauses "
            "(a create's 429 is not theirs)",
        ]


async def run_scrape(
    *, workers: int, browsers: int, use: float, seed: int, lost_rate: float = LOST_CREATE_RATE
) -> ScrapeFigures:
    """Run the scrape demo against an embedded fake; return its figures."""
    from ..testing import FakeBrowserbase, FaultPlan

    plan = FaultPlan(
        max_browsers=browsers,
        lost_create_rate=lost_rate,
        error_rate=ERROR_RATE if lost_rate else 0.0,
        seed=seed,
    )
    async with FakeBrowserbase(faults=plan) as fake:
        async with SessionsAPI(fake.api_key, base_url=fake.base_url, retry=SCRAPE_RETRY) as api:
            round_trip = await _round_trip(api)
            measured = set(fake.sessions)
            failures: collections.Counter[str] = collections.Counter()

            async def worker(number: int) -> None:
                try:
                    async with api.session(user_metadata={"worker": str(number)}):
                        await asyncio.sleep(use)  # the scraping, as far as the demo goes
                except Exception as exc:
                    failures[type(exc).__name__] += 1

            before, started = api.flow_stats(), time.monotonic()
            await asyncio.gather(*(worker(number) for number in range(workers)))
            elapsed = time.monotonic() - started
            counts, flow = api._lifecycle.counts, api.flow_stats().since(before)
        sessions = [s for sid, s in fake.sessions.items() if sid not in measured]
        rounds = -(-workers // browsers)
        return ScrapeFigures(
            workers=workers,
            browsers=browsers,
            use=use,
            elapsed=elapsed,
            # Each browser serves its share of the sessions one after another: a create's
            # round trip, the use, a release's round trip.
            ideal=rounds * (use + 2 * round_trip),
            created=len(sessions),
            waited=counts.waited,
            waited_seconds=counts.waited_seconds,
            refused=counts.refused,
            lost=fake.received.answers["lost"],
            recovered=counts.recovered,
            released=sum(session["status"] == "COMPLETED" for session in sessions),
            left_running=sum(session["status"] == "RUNNING" for session in sessions),
            failures=dict(failures),
            flow_refusals=flow.rate_limited,
            flow_pauses=flow.pauses,
        )


async def _round_trip(api: SessionsAPI) -> float:
    """One round trip to the fake: the quickest of a few creates and releases, halved."""
    quickest = float("inf")
    for _ in range(ROUND_TRIPS):
        started = time.monotonic()
        session = await api.create()
        await api.release(session.id)
        quickest = min(quickest, (time.monotonic() - started) / 2)
    return quickest


async def scrape_demo(*, workers: int, browsers: int, use: float, seed: int) -> int:
    """Run the scrape demo; print its figures on stderr; 0 if nothing leaked, else 1."""
    click.echo(
        f"demo --scrape: {workers} workers, a fake plan of {browsers} browsers, "
        f"{LOST_CREATE_RATE:.0%} of create answers lost...",
        err=True,
    )
    figures = await run_scrape(workers=workers, browsers=browsers, use=use, seed=seed)
    for line in figures.lines():
        click.echo(line, err=True)
    return 0 if figures.ok else 1
