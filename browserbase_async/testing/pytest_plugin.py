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

from collections.abc import AsyncIterator, Callable, Mapping

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
    _check_loop_scope(request)
    marker = request.node.get_closest_marker(MARKER)
    plan = None
    if marker is not None:
        plan = marker.args[0] if marker.args else marker.kwargs.get("plan")
        if not isinstance(plan, FaultPlan):
            raise TypeError(f"@pytest.mark.{MARKER} takes a FaultPlan, got {plan!r}")
    async with FakeBrowserbase(faults=plan) as fake:
        yield fake


def _check_loop_scope(request: pytest.FixtureRequest) -> None:
    """Fail at once when the test's event loop is not the one that will serve the fake."""
    marker = request.node.get_closest_marker("asyncio")
    problem = loop_scope_mismatch(
        {} if marker is None else marker.kwargs, lambda name: _ini(request.config, name)
    )
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def loop_scope_mismatch(
    marker_kwargs: Mapping[str, object], ini: Callable[[str], str | None]
) -> str | None:
    """Say why the fake would never answer the test, or ``None`` when it will.

    The fake is served on the loop of its fixture (``asyncio_default_fixture_loop_scope``);
    a test on a loop of another scope would find that loop idle, and wait on every request.

    Args:
        marker_kwargs: The arguments of the test's ``asyncio`` marker.
        ini: Reads a pytest setting (``None`` when unset or unknown).
    """
    test_scope = (
        marker_kwargs.get("loop_scope")
        or marker_kwargs.get("scope")
        or ini("asyncio_default_test_loop_scope")
        or "function"
    )
    fixture_scope = ini("asyncio_default_fixture_loop_scope")
    if fixture_scope in (None, "fixture-scope"):
        fixture_scope = "function"  # the scope of our fixtures
    if test_scope == fixture_scope:
        return None
    return (
        f"fake_browserbase is served on the {fixture_scope}-scoped event loop, but this "
        f"test runs on the {test_scope}-scoped one, where the fake would never answer: "
        f"set asyncio_default_fixture_loop_scope = {test_scope} in the pytest "
        f"configuration, or run the test with loop_scope={fixture_scope!r}"
    )


def _ini(config: pytest.Config, name: str) -> str | None:
    try:
        value = config.getini(name)
    except ValueError:  # an option this pytest-asyncio does not know
        return None
    return str(value) if value else None


@pytest_asyncio.fixture
async def browserbase_api(fake_browserbase: FakeBrowserbase) -> AsyncIterator[SessionsAPI]:
    """A `SessionsAPI` for ``fake_browserbase``, with millisecond backoff."""
    async with SessionsAPI(
        fake_browserbase.api_key, base_url=fake_browserbase.base_url, retry=FAST_RETRIES
    ) as api:
        yield api
