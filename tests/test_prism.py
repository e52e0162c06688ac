"""Against a Prism mock of the vendor's OpenAPI description (run by .ci/prism).

Prism answers random data valid under the description, and refuses requests that break it
(422, or 401 without the key): a pass means our requests are valid and our model accepts
whatever the description allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from browserbase_async import AuthenticationError, RetryPolicy, Session, SessionsAPI, SessionStatus
from browserbase_async._converter import structure_session, structure_sessions

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


def assert_is_what_was_sent(session: Session, sent: dict[str, Any]) -> None:
    """Every field of *session* against the JSON Prism answered."""
    assert session.id == sent["id"]
    assert session.project_id == sent["projectId"]
    assert session.status == sent["status"]
    assert session.region == sent["region"]
    assert session.proxy_bytes == sent["proxyBytes"]
    assert session.keep_alive == sent["keepAlive"]
    assert session.context_id == sent.get("contextId")
    assert session.user_metadata == sent.get("userMetadata")
    for field, key in [
        ("created_at", "createdAt"),
        ("updated_at", "updatedAt"),
        ("started_at", "startedAt"),
        ("ended_at", "endedAt"),
        ("expires_at", "expiresAt"),
    ]:
        moment = getattr(session, field)
        if sent.get(key) is None:
            assert moment is None, field
        else:
            assert moment is not None, field
            assert moment.tzinfo is not None, field
            # The same instant as the string Prism sent, whatever its offset or precision.
            text = sent[key].replace("Z", "+00:00").replace("z", "+00:00")
            expected = datetime.fromisoformat(text)
            if expected.tzinfo is None:
                expected = expected.replace(tzinfo=UTC)
            assert moment == expected, field


async def answered(api: SessionsAPI, method: str, path: str, body: bytes | None = None) -> Any:
    """What Prism answers to one request, as JSON (Prism makes up new data every time)."""
    response = await api._transport.request(method, path, body=body)
    assert response.status < 300, response.body[:200]
    return json.loads(response.body)


async def test_release(api: SessionsAPI) -> None:
    body = json.dumps({"status": "REQUEST_RELEASE"}).encode()
    sent = await answered(api, "POST", "/v1/sessions/a-session", body)
    assert_is_what_was_sent(structure_session(sent), sent)
    assert isinstance(await api.release("a-session"), Session)


async def test_update_with_a_project_id(api: SessionsAPI) -> None:
    body = json.dumps({"status": "REQUEST_RELEASE", "projectId": "a-project"}).encode()
    sent = await answered(api, "POST", "/v1/sessions/a-session", body)
    assert_is_what_was_sent(structure_session(sent), sent)
    assert isinstance(await api.update("a-session", project_id="a-project"), Session)


async def test_retrieve(api: SessionsAPI) -> None:
    sent = await answered(api, "GET", "/v1/sessions/a-session")
    assert_is_what_was_sent(structure_session(sent), sent)
    assert isinstance(await api.retrieve("a-session"), Session)


@pytest.mark.parametrize("status", [None, *SessionStatus])
async def test_list_with_each_filter(api: SessionsAPI, status: SessionStatus | None) -> None:
    sessions = await api.list(status=status, q="user_metadata['job']:'crawl'")
    assert all(isinstance(session, Session) for session in sessions)
    sent = await answered(api, "GET", "/v1/sessions")
    for session, item in zip(structure_sessions(sent), sent, strict=True):
        assert_is_what_was_sent(session, item)


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
