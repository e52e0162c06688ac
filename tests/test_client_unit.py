"""The request each call sends, checked at the seam with aioresponses: no server at all."""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import Mock

import aiohttp
import pytest
import pytest_asyncio
from aioresponses import aioresponses
from yarl import URL

from browserbase_async import (
    APIConnectionError,
    APIResponseValidationError,
    AuthenticationError,
    RetryPolicy,
    Session,
    SessionsAPI,
    SessionStatus,
)

from .helpers import session_json

pytestmark = pytest.mark.asyncio

KEY = "bb_live_SECRET_never_show_me"
BASE = "https://api.browserbase.com"


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's new ``stream_writer``.

    Workaround for pnuckowski/aioresponses#289 until a release carries its fix.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
            kwargs.setdefault("stream_writer", Mock(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr("aioresponses.core.ClientResponse", _Response)
    with aioresponses() as mock:
        yield mock


@pytest_asyncio.fixture
async def api() -> AsyncIterator[SessionsAPI]:
    async with SessionsAPI(KEY, retry=RetryPolicy(max_attempts=1)) as client:
        yield client


def sent(mocked: Any, method: str, url: str) -> list[Any]:
    return mocked.requests[(method, URL(url))]  # type: ignore[no-any-return]


async def test_release_sends_request_release_with_the_key(mocked: Any, api: SessionsAPI) -> None:
    mocked.post(f"{BASE}/v1/sessions/s-1", payload=session_json(status="COMPLETED"))
    session = await api.release("s-1")
    assert isinstance(session, Session)
    assert session.status is SessionStatus.COMPLETED
    (call,) = sent(mocked, "POST", f"{BASE}/v1/sessions/s-1")
    assert call.kwargs["headers"]["X-BB-API-Key"] == KEY
    assert call.kwargs["headers"]["Content-Type"] == "application/json"
    assert json.loads(call.kwargs["data"]) == {"status": "REQUEST_RELEASE"}


async def test_project_id_per_call_then_client(mocked: Any) -> None:
    url = f"{BASE}/v1/sessions/s-1"
    mocked.post(url, payload=session_json(), repeat=True)
    async with SessionsAPI(KEY, project_id="p-client") as api:
        await api.update("s-1")
        await api.update("s-1", project_id="p-call")
        await api.release("s-1")
    bodies = [json.loads(call.kwargs["data"]) for call in sent(mocked, "POST", url)]
    assert bodies == [
        {"status": "REQUEST_RELEASE", "projectId": "p-client"},
        {"status": "REQUEST_RELEASE", "projectId": "p-call"},
        {"status": "REQUEST_RELEASE", "projectId": "p-client"},
    ]


async def test_update_refuses_an_unknown_status(api: SessionsAPI) -> None:
    with pytest.raises(ValueError, match="REQUEST_RELEASE"):
        await api.update("s-1", status="STOP")


async def test_retrieve_and_list(mocked: Any, api: SessionsAPI) -> None:
    mocked.get(f"{BASE}/v1/sessions/s-1", payload=session_json())
    assert (await api.retrieve("s-1")).id == "s-1"
    mocked.get(re.compile(r".*/v1/sessions\?.*"), payload=[session_json(), session_json(id="s-2")])
    sessions = await api.list(status=SessionStatus.RUNNING, q="user_metadata['job']:'a'")
    assert [s.id for s in sessions] == ["s-1", "s-2"]
    (url,) = [url for method, url in mocked.requests if url.query]
    assert url.query == {"status": "RUNNING", "q": "user_metadata['job']:'a'"}
    (call,) = mocked.requests[("GET", url)]
    assert call.kwargs["data"] is None


async def test_list_accepts_the_status_string_and_refuses_nonsense(
    mocked: Any, api: SessionsAPI
) -> None:
    mocked.get(f"{BASE}/v1/sessions?status=COMPLETED", payload=[])
    assert await api.list(status="COMPLETED") == []
    with pytest.raises(ValueError, match="RUNNING"):
        await api.list(status="running-ish")


async def test_a_bad_id_sends_nothing(mocked: Any, api: SessionsAPI) -> None:
    for call in (api.release, api.retrieve, api.update):
        with pytest.raises(ValueError, match="session id"):
            await call("../projects")
    assert not mocked.requests


async def test_the_key_is_never_shown(mocked: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{BASE}/v1/sessions/s-1"
    mocked.post(url, status=503, payload={"message": "busy"})
    mocked.post(url, status=401, payload={"message": "bad key"})
    policy = RetryPolicy(initial_delay=0.0, max_attempts=2)
    async with SessionsAPI(KEY, retry=policy) as api:
        assert KEY not in repr(api)
        assert KEY not in str(api)
        with pytest.raises(AuthenticationError) as caught:
            await api.release("s-1")
        assert KEY not in repr(api._transport)
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)
    assert KEY not in repr(caught.value.headers)
    assert KEY not in repr(caught.value.body)
    assert caplog.records, "the retry is logged"
    assert all(KEY not in record.getMessage() for record in caplog.records)


async def test_connection_errors_are_wrapped(mocked: Any, api: SessionsAPI) -> None:
    mocked.post(f"{BASE}/v1/sessions/s-1", exception=aiohttp.ClientOSError(111, "refused"))
    with pytest.raises(APIConnectionError, match="refused"):
        await api.release("s-1")


async def test_an_answer_that_is_not_utf8_is_not_json(mocked: Any, api: SessionsAPI) -> None:
    mocked.get(f"{BASE}/v1/sessions/s-1", body=b'{"id": "\xff"}')
    with pytest.raises(APIResponseValidationError, match="not JSON") as caught:
        await api.retrieve("s-1")
    assert '{"id": "\ufffd"}' in str(caught.value.body)


async def test_a_closed_client_refuses_calls() -> None:
    api = SessionsAPI(KEY)
    await api.aclose()
    await api.aclose()
    assert "closed" in repr(api)
    with pytest.raises(RuntimeError, match="closed"):
        await api.retrieve("s-1")
    with pytest.raises(RuntimeError, match="closed"):
        async with api:
            pass


async def test_a_callers_session_is_used_and_left_open(mocked: Any) -> None:
    mocked.get(f"{BASE}/v1/sessions/s-1", payload=session_json())
    async with aiohttp.ClientSession() as http:
        async with SessionsAPI(KEY, http_session=http) as api:
            await api.retrieve("s-1")
        assert not http.closed


async def test_an_unclosed_client_warns() -> None:
    api = SessionsAPI(KEY)
    session = api._transport._session()  # opened, as a first call would
    with pytest.warns(ResourceWarning, match="not closed"):
        api.__del__()  # as the GC would
    await session.close()
    api.__del__()  # closed now: silent


async def test_constructor_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="BROWSERBASE_API_KEY"):
        SessionsAPI()
    monkeypatch.setenv("BROWSERBASE_API_KEY", "from-env")
    monkeypatch.setenv("BROWSERBASE_BASE_URL", "http://127.0.0.1:9")
    api = SessionsAPI()
    assert api.base_url == "http://127.0.0.1:9"
    assert api._transport.api_key == "from-env"
    with pytest.raises(ValueError, match="allow_insecure_http"):
        SessionsAPI(base_url="http://api.example.com")
    with pytest.raises(ValueError, match="timeout"):
        SessionsAPI(timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        SessionsAPI(max_connections=0)
    assert SessionsAPI(timeout=None).timeout is None


async def test_a_nan_retry_after_leaves_the_backoff_in_place(
    mocked: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A server's "Retry-After: nan" once read as a wait: the retry went out at once, with no
    # backoff and no pause (NaN is below no cap and opens no gate).
    caplog.set_level(logging.INFO, logger="browserbase_async")
    url = f"{BASE}/v1/sessions/s-1"
    mocked.post(url, status=503, headers={"Retry-After": "nan"}, payload={"message": "busy"})
    mocked.post(url, payload=session_json(id="s-1", status="COMPLETED"))
    async with SessionsAPI(KEY, retry=RetryPolicy(initial_delay=0.001)) as api:
        assert (await api.release("s-1")).status == SessionStatus.COMPLETED
        assert api.flow_stats().pauses == 0
    (retried,) = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert "next in" in retried, retried
