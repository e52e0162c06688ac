"""Sleeps that a closing client ends at once: backoffs, polls, a resume's jitter."""

from __future__ import annotations

import asyncio

import attrs

from ._errors import client_closed


@attrs.define(eq=False)
class Sleeps:
    """The sleeps under way for one client, so that closing it ends them all at once."""

    _sleepers: set[asyncio.Future[None]] = attrs.field(init=False, factory=set, repr=False)

    async def sleep(self, seconds: float) -> None:
        """Sleep *seconds*, unless `end` is called meanwhile.

        Args:
            seconds: How long to sleep, in seconds.

        Raises:
            RuntimeError: The client closed during the sleep (`end`).
        """
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, sleeper)
        self._sleepers.add(sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleepers.discard(sleeper)

    def end(self) -> None:
        """End every sleep under way: each raises the closed-client `RuntimeError`."""
        for sleeper in self._sleepers:
            if not sleeper.done():
                sleeper.set_exception(client_closed())
        self._sleepers.clear()


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)
