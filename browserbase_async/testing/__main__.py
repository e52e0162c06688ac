"""Serve a `FakeBrowserbase` from a shell: ``python -m browserbase_async.testing``.

It prints ``BROWSERBASE_BASE_URL=...`` and ``BROWSERBASE_API_KEY=...``, one a
line, ready to ``export``, then serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Final

import attrs

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
    count = _count(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"a limit is 1 or more, got {count}")
    return count


def main(argv: list[str] | None = None) -> int:
    """Parse the options, serve until Ctrl-C, and return the exit code."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a fake Browserbase sessions API on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=_port, default=0, help="port to listen on (0: any free)")
    parser.add_argument(
        "--sessions",
        type=_count,
        default=DEFAULT_SESSIONS,
        help=f"running sessions to create (default {DEFAULT_SESSIONS})",
    )
    parser.add_argument(
        "--faults", action="store_true", help="a realistic mix of 5xx, 429s and lost answers"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    parser.add_argument(
        "--max-browsers",
        type=_positive,
        help="the plan's concurrent browsers: a create beyond them gets 429 + Retry-After",
    )
    parser.add_argument(
        "--creates-per-minute",
        type=_positive,
        help="the plan's creates in any 60 s: more get 429 + Retry-After",
    )
    args = parser.parse_args(argv)
    plan = FaultPlan.realistic(seed=args.seed) if args.faults else FaultPlan(seed=args.seed)
    plan = attrs.evolve(
        plan, max_browsers=args.max_browsers, creates_per_minute=args.creates_per_minute
    )
    try:
        asyncio.run(_serve(plan, args.port, args.sessions))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    except OSError as exc:  # the port is taken, or not ours to take
        print(f"{PROG}: error: cannot listen on port {args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


async def _serve(plan: FaultPlan, port: int, sessions: int) -> None:
    async with FakeBrowserbase(faults=plan, port=port) as fake:
        fake.add_sessions(sessions)
        print(f"BROWSERBASE_BASE_URL={fake.base_url}")
        print(f"BROWSERBASE_API_KEY={fake.api_key}", flush=True)
        print(f"serving {sessions} running sessions; Ctrl-C to stop", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
