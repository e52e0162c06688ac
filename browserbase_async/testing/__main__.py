"""Serve a `FakeBrowserbase` from a shell: ``python -m browserbase_async.testing``.

It prints ``BROWSERBASE_BASE_URL=...`` and ``BROWSERBASE_API_KEY=...``, one a
line, ready to ``export``, then serves until Ctrl-C or SIGTERM. Its options rehearse
a plan's limits (``--max-in-flight``, ``--per-second``, ``--max-browsers``,
``--creates-per-minute``), a slow server (``--latency``, ``--latency-jitter``)
and old sessions for the reaper (``--aged N:AGE``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs

from .._duration import parse_duration
from ._fake import FakeBrowserbase, FaultPlan

PROG: Final = "python -m browserbase_async.testing"
DEFAULT_SESSIONS: Final = 10


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def _count(text: str) -> int:
    count = int(text)
    if count < 0:
        raise argparse.ArgumentTypeError(f"a count is 0 or more, got {count}")
    return count


def _positive(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"a limit is 1 or more, got {count}")
    return count


def _rate(text: str) -> float:
    rate = float(text)
    if not rate > 0 or rate == float("inf"):
        raise argparse.ArgumentTypeError(f"a rate is a number above 0, got {text!r}")
    return rate


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is a number from 0 to 1, got {text!r}")
    return share


def _aged(text: str) -> tuple[int, float]:
    count, colon, age = text.partition(":")
    if not colon or not count.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not N:AGE, a number of sessions and an age (for instance 5:2h)"
        )
    try:
        return int(count), parse_duration(age)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


@attrs.frozen
class Serving:
    """What to serve: the plan, the port, and the sessions to seed, by age in seconds."""

    plan: FaultPlan
    port: int
    sessions: int
    aged: tuple[tuple[int, float], ...]
    faults: bool = False

    def describe(self) -> str:
        """One line on standard error: what is served, and how to stop it."""
        parts = [f"{self.sessions} running sessions"]
        parts += [f"{count} started {age:g} s ago" for count, age in self.aged]
        limits = []
        if self.plan.max_in_flight is not None:
            limits.append(f"{self.plan.max_in_flight} in flight")
        if self.plan.max_per_second is not None:
            limits.append(f"{self.plan.max_per_second:g} per second")
        if self.plan.max_browsers is not None:
            limits.append(f"{self.plan.max_browsers} browsers (creates)")
        if self.plan.creates_per_minute is not None:
            limits.append(f"{self.plan.creates_per_minute} creates a minute")
        if limits:
            parts.append("429 past " + " and ".join(limits))
        if self.faults:
            parts.append("random 5xx, 429s and lost answers")
        if self.plan.latency:
            spread = self.plan.latency_jitter
            parts.append(
                f"{self.plan.latency:g} s a request" + (f" +- {spread:.0%}" if spread else "")
            )
        return f"serving {', '.join(parts)}; Ctrl-C to stop"


def parse_options(argv: list[str] | None = None) -> Serving:
    """Read the command line into what to serve.

    Raises:
        SystemExit: A bad option (exit code 2, argparse's message).
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a fake Browserbase sessions API on 127.0.0.1 until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--port", type=_port, default=0, help="port to listen on (0: any free)")
    parser.add_argument(
        "--sessions",
        type=_count,
        default=DEFAULT_SESSIONS,
        help=f"running sessions to create, started now (default {DEFAULT_SESSIONS})",
    )
    parser.add_argument(
        "--aged",
        type=_aged,
        action="append",
        default=[],
        metavar="N:AGE",
        help="N more running sessions started AGE ago (30m, 2h, 1d); may be repeated",
    )
    parser.add_argument(
        "--faults", action="store_true", help="a realistic mix of 5xx, 429s and lost answers"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    parser.add_argument(
        "--max-in-flight",
        type=_positive,
        metavar="N",
        help="a plan's limit: answer 429 at once past N requests in flight",
    )
    parser.add_argument(
        "--per-second",
        type=_rate,
        metavar="R",
        help="a plan's limit: answer 429 at once past R requests a second",
    )
    parser.add_argument(
        "--latency",
        type=_seconds,
        metavar="SECONDS",
        help="time taken over each request it serves (0.05, 0.05s, 1m; bare: seconds)",
    )
    parser.add_argument(
        "--latency-jitter",
        type=_share,
        metavar="SHARE",
        help="spread each request's latency within latency x (1 +- SHARE), 0 to 1 (default 0)",
    )
    parser.add_argument(
        "--max-browsers",
        type=_positive,
        metavar="N",
        help="a plan's limit: answer a create 429 + Retry-After while N sessions run",
    )
    parser.add_argument(
        "--creates-per-minute",
        type=_positive,
        metavar="N",
        help="a plan's limit: answer a create 429 + Retry-After past N creates in any 60 s",
    )
    args = parser.parse_args(argv)
    plan = FaultPlan.realistic(seed=args.seed) if args.faults else FaultPlan(seed=args.seed)
    plan = attrs.evolve(
        plan,
        max_in_flight=args.max_in_flight,
        max_per_second=args.per_second,
        latency=plan.latency if args.latency is None else args.latency,
        latency_jitter=(
            plan.latency_jitter if args.latency_jitter is None else args.latency_jitter
        ),
        max_browsers=args.max_browsers,
        creates_per_minute=args.creates_per_minute,
    )
    return Serving(plan, args.port, args.sessions, tuple(args.aged), args.faults)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, serve until Ctrl-C or SIGTERM, and return the exit code."""
    serving = parse_options(argv)
    try:
        asyncio.run(_serve(serving))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, or not ours to take
        print(
            f"{PROG}: error: cannot listen on port {serving.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    print("stopped", file=sys.stderr)
    return 0


async def _serve(serving: Serving) -> None:
    stop = asyncio.Event()
    # SIGTERM (systemd, Docker, a test's teardown) stops it as Ctrl-C does.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with FakeBrowserbase(faults=serving.plan, port=serving.port) as fake:
        fake.add_sessions(serving.sessions)
        now = datetime.now(UTC)
        for count, age in serving.aged:
            fake.add_sessions(count, started_at=now - timedelta(seconds=age))
        print(f"BROWSERBASE_BASE_URL={fake.base_url}")
        print(f"BROWSERBASE_API_KEY={fake.api_key}", flush=True)
        print(serving.describe(), file=sys.stderr, flush=True)
        await stop.wait()


if __name__ == "__main__":
    sys.exit(main())
