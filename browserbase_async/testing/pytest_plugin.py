"""Opt-in pytest fixtures for code that uses browserbase_async.

Enable them in a ``conftest.py``::

    pytest_plugins = ["browserbase_async.testing.pytest_plugin"]

They need pytest-asyncio. ``fake_browserbase`` is a started `FakeBrowserbase`;
``browserbase_api`` is a `SessionsAPI` pointed at it, with retries that do not
sleep, closed after the test. Give the fake a fault plan with a marker::

    @pytest.mark.browserbase_faults(FaultPlan(error_rate=0.2, seed=1))
    async def test_my_cleanup(browserbase_api): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from browserbase_async._client import SessionsAPI
from browserbase_async._retry import RetryPolicy

from ._fake import FakeBrowserbase, FaultPlan

FAST_RETRIES = RetryPolicy(initial_delay=0.001, max_delay=0.002)
"""Retries as the defaults make them, but with backoff sleeps of a millisecond or two."""


MARKER = "browserbase_faults"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers", f"{MARKER}(plan): the FaultPlan of the fake_browserbase fixture"
    )


@pytest_asyncio.fixture
async def fake_browserbase(request: pytest.FixtureRequest) -> AsyncIterator[FakeBrowserbase]:
    """A started `FakeBrowserbase` on 127.0.0.1, stopped after the test.

    Its fault plan is the one given by the test's ``browserbase_faults`` marker, if any.
    """
    marker = request.node.get_closest_marker(MARKER)
    plan = None
    if marker is not None:
        plan = marker.args[0] if marker.args else marker.kwargs.get("plan")
        if not isinstance(plan, FaultPlan):
            raise TypeError(f"@pytest.mark.{MARKER} takes a FaultPlan, got {plan!r}")
    async with FakeBrowserbase(faults=plan) as fake:
        yield fake


@pytest_asyncio.fixture
async def browserbase_api(fake_browserbase: FakeBrowserbase) -> AsyncIterator[SessionsAPI]:
    """A `SessionsAPI` for ``fake_browserbase``, with millisecond backoff."""
    async with SessionsAPI(
        fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST_RETRIES
    ) as api:
        yield api
