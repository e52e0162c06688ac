"""Small builders shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

LOOP_TURNS = 200_000
"""Turns of the loop `until` gives a condition before it says the condition never held."""


async def until(reached: Callable[[], bool]) -> None:
    """Yield to the loop until *reached()* holds: no clock, only turns of the loop."""
    for _ in range(LOOP_TURNS):
        if reached():
            return
        await asyncio.sleep(0)
    raise AssertionError("never reached")


def the_task_running(name: str) -> asyncio.Task[Any]:
    """The one task whose coroutine's qualified name ends with *name* (a library's inner task)."""
    (task,) = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").endswith(name)
    ]
    return task


def load_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make each reading of the running loop's clock a millisecond past the last: a machine
    whose other work takes the processor between any two lines, by construction."""
    loop = asyncio.get_running_loop()
    clock = loop.time
    readings = iter(range(1, 1 << 62))
    monkeypatch.setattr(loop, "time", lambda: clock() + next(readings) / 1000)


def session_json(**overrides: Any) -> dict[str, Any]:
    """A valid Session as the API sends it, with *overrides* applied."""
    data: dict[str, Any] = {
        "id": "s-1",
        "createdAt": "2026-11-28T09:00:00Z",
        "updatedAt": "2026-11-28T09:00:01.5Z",
        "projectId": "p-1",
        "startedAt": "2026-11-28T09:00:00.123456+00:00",
        "expiresAt": "2026-11-28T15:00:00Z",
        "status": "RUNNING",
        "proxyBytes": 0,
        "keepAlive": False,
        "region": "us-west-2",
    }
    data.update(overrides)
    return data
