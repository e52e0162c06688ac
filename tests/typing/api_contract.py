"""The public API as a type contract: mypy --strict checks this file, nothing runs it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import assert_type

from browserbase_async import (
    APIStatusError,
    BulkReleaseAborted,
    BulkReleaseReport,
    CreatedSession,
    Region,
    ReleaseResult,
    RetryPolicy,
    Session,
    SessionsAPI,
    SessionStatus,
)


async def contract() -> None:
    async with SessionsAPI("key", retry=RetryPolicy(max_attempts=5), timeout=None) as api:
        session = await api.release("s-1")
        assert_type(session, Session)
        assert_type(await api.update("s-1", project_id="p"), Session)
        assert_type(await api.retrieve("s-1"), Session)
        assert_type(await api.list(status=SessionStatus.RUNNING, q=None), list[Session])
        assert_type(await api.list(status="RUNNING"), list[Session])
        assert_type(session.created_at, datetime | None)
        assert_type(session.started_at, datetime | None)
        assert_type(session.ended_at, datetime | None)
        assert_type(session.status, SessionStatus | str)
        assert_type(session.region, Region | str | None)
        assert_type(await api.release_many(await api.list()), BulkReleaseReport)
        assert_type(await api.retrieve(session), Session)
        report = await api.release_many(["a", "b"], concurrency=8)
        assert_type(report, BulkReleaseReport)
        assert_type(report.failed, list[ReleaseResult])
        assert_type(report.results[0].error, Exception | None)
        assert_type(api.release_iter(iter(["a"])), AsyncGenerator[ReleaseResult, None])
        assert_type(await api.release_all(q="user_metadata['a']:'b'"), BulkReleaseReport)
        assert_type(await api.release("s-1", wait=True, wait_timeout=5.0), Session)
        async with api.guard("s-1"):
            pass
        created = await api.create(timeout=600, user_metadata={"job": "a"}, wait_for_slot=30.0)
        assert_type(created, CreatedSession)
        assert_type(created.connect_url, str)
        async with api.session(region=Region.US_EAST_1, proxies=True) as opened:
            assert_type(opened, CreatedSession)
            assert_type(opened.signing_key, str)
    network = SessionsAPI("key", proxy="http://proxy:3128", ssl="/etc/ssl/ca.pem")
    assert_type(network.server_now(), datetime)
    assert_type((await network.release_all(status=None)).already_ended, list[Session])
    await network.aclose()
    try:
        pass
    except APIStatusError as exc:
        assert_type(exc.status_code, int)
    except BulkReleaseAborted as aborted:
        assert_type(aborted.report, BulkReleaseReport)
