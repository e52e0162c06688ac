"""Opt-in pytest fixtures for code that uses browserbase_async.

Enable them in a ``conftest.py``::

    pytest_plugins = ["browserbase_async.testing.pytest_plugin"]

They need pytest-asyncio. ``fake_browserbase`` is a started `FakeBrowserbase`;
``browserbase_api`` is a `SessionsAPI` pointed at it, with retries that do not
sleep, closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from browserbase_async._client import SessionsAPI
from browserbase_async._retry import RetryPolicy

from ._fake import FakeBrowserbase

FAST_RETRIES = RetryPolicy(initial_delay=0.001, max_delay=0.002)
"""Retries as the defaults make them, but with backoff sleeps of a millisecond or two."""


@pytest_asyncio.fixture
async def fake_browserbase() -> AsyncIterator[FakeBrowserbase]:
    """A started `FakeBrowserbase` on 127.0.0.1, stopped after the test."""
    async with FakeBrowserbase() as fake:
        yield fake


@pytest_asyncio.fixture
async def browserbase_api(fake_browserbase: FakeBrowserbase) -> AsyncIterator[SessionsAPI]:
    """A `SessionsAPI` for ``fake_browserbase``, with millisecond backoff."""
    async with SessionsAPI(
        fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST_RETRIES
    ) as api:
        yield api
