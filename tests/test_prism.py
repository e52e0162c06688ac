"""Against a Prism mock of the vendor's OpenAPI description (run by .ci/prism).

Prism answers random data valid under the description, and refuses requests that break it
(422, or 401 without the key): a pass means our requests are valid and our model accepts
whatever the description allows.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from browserbase_async import AuthenticationError, RetryPolicy, Session, SessionsAPI, SessionStatus

from .test_cli import run_cli

PRISM_URL = os.environ.get("PRISM_URL", "")

pytestmark = [
    pytest.mark.prism,
    pytest.mark.asyncio,
    pytest.mark.skipif(not PRISM_URL, reason="no PRISM_URL: .ci/prism starts Prism and sets it"),
]


@pytest_asyncio.fixture
async def api() -> AsyncIterator[SessionsAPI]:
    async with SessionsAPI(
        "prism-key", base_url=PRISM_URL, retry=RetryPolicy(max_attempts=1)
    ) as client:
        yield client


async def test_release(api: SessionsAPI) -> None:
    assert isinstance(await api.release("a-session"), Session)


async def test_update_with_a_project_id(api: SessionsAPI) -> None:
    assert isinstance(await api.update("a-session", project_id="a-project"), Session)


async def test_retrieve(api: SessionsAPI) -> None:
    assert isinstance(await api.retrieve("a-session"), Session)


@pytest.mark.parametrize("status", [None, *SessionStatus])
async def test_list_with_each_filter(api: SessionsAPI, status: SessionStatus | None) -> None:
    sessions = await api.list(status=status, q="user_metadata['job']:'crawl'")
    assert all(isinstance(session, Session) for session in sessions)


async def test_a_bulk_release_of_a_few_hundred(api: SessionsAPI) -> None:
    ids = [f"session-{n}" for n in range(300)]
    report = await api.release_many(ids, concurrency=16)
    assert report.ok, [str(result.error) for result in report.failed[:3]]
    assert [result.session_id for result in report.results] == ids


async def test_prism_refuses_a_request_without_the_key() -> None:
    async with SessionsAPI("k", base_url=PRISM_URL) as api:
        api._transport._get_headers.pop("X-BB-API-Key")
        with pytest.raises(AuthenticationError):
            await api.retrieve("a-session")


async def test_the_cli_list_json_and_release() -> None:
    env = {"BROWSERBASE_API_KEY": "prism-key", "BROWSERBASE_BASE_URL": PRISM_URL}
    listed = await run_cli(None, "list", "--json", env=env)
    assert listed.code == 0, listed.err
    released = await run_cli(None, "release", "one", "two", "three", env=env)
    assert released.code == 0, released.err
    assert "released 3 of 3 sessions" in released.err
