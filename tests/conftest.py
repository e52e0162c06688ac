"""Shared fixtures; the FakeBrowserbase ones come from our opt-in plugin, as users get them
(loaded by the root ``conftest.py``)."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from browserbase_async import RetryPolicy, SessionsAPI
from browserbase_async.testing import Exchange, FakeBrowserbase

from .schema import check_answer

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.002)

# Hypothesis's own timing checks (200 ms an example, a slow draw) are timing targets: a
# machine loaded by other work fails them by chance. Its examples are what it checks.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # A run started in the background by a script (`bash .ci/run &`) ignores SIGINT, and its
    # children inherit that: the commands that the tests stop with Ctrl-C would never see it.
    # Python's own handler is reset to the default at exec, as a terminal's run has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

ApiFactory = Callable[..., AbstractAsyncContextManager[SessionsAPI]]


@pytest.fixture
def make_api(fake_browserbase: FakeBrowserbase) -> ApiFactory:
    """Open a SessionsAPI on the fake, with millisecond backoff unless told otherwise."""

    @asynccontextmanager
    async def make(**kwargs: Any) -> AsyncIterator[SessionsAPI]:
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("base_url", fake_browserbase.base_url)
        async with SessionsAPI(fake_browserbase.api_key, **kwargs) as api:
            yield api

    return make


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BROWSERBASE_API_KEY", "BROWSERBASE_BASE_URL", "BROWSERBASE_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        # Both spellings: urllib reads either, the lower case first.
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def retry_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="browserbase_async")
    return caplog


@pytest.fixture(autouse=True)
def _every_answer_of_the_fake_fits_the_spec(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hold every answer any fake sends during a test (but those a scripted `Fault` made on
    purpose) to the vendor's description in tests/spec/; a misfit fails the test. A test
    marked ``off_spec`` seeds the fake with what the description forbids, on purpose."""
    if request.node.get_closest_marker("off_spec") is not None:
        yield
        return
    misfits: list[str] = []

    def observe(exchange: Exchange) -> None:
        if exchange.scripted:
            return
        try:
            check_answer(exchange)
        except Exception as exc:
            misfits.append(f"{exchange.method} {exchange.path} {exchange.status}: {exc}")

    FakeBrowserbase.observers.append(observe)
    try:
        yield
    finally:
        FakeBrowserbase.observers.remove(observe)
    assert not misfits, "the fake answered off the spec:\n" + "\n".join(misfits[:5])
