"""update(extra_body=...) and the per-call timeout= of update, release, retrieve and list."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from browserbase_async import APITimeoutError, RetryPolicy, SessionsAPI
from browserbase_async.testing import FakeBrowserbase, Fault

from .conftest import ApiFactory
from .helpers import session_json
from .test_answers import serve

ONCE = RetryPolicy(max_attempts=1)


async def _echo_bodies(bodies: list[object]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        bodies.append(json.loads(await request.read()))
        # A field the model does not know yet: ignored, as ever.
        return web.json_response(session_json(status="COMPLETED", someNewField={"x": 1}))

    return answer


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("project_id", "expected"),
    [
        (None, {"status": "REQUEST_RELEASE", "keepAlive": False, "userMetadata": {"a": [1, 2]}}),
        (
            "p-9",
            {
                "status": "REQUEST_RELEASE",
                "projectId": "p-9",
                "keepAlive": False,
                "userMetadata": {"a": [1, 2]},
            },
        ),
    ],
)
async def test_extra_body_joins_the_body(
    project_id: str | None, expected: dict[str, object]
) -> None:
    bodies: list[object] = []
    async with (
        serve(await _echo_bodies(bodies)) as (url, _),
        SessionsAPI("k", base_url=url) as api,
    ):
        session = await api.update(
            "s-1",
            project_id=project_id,
            extra_body={"keepAlive": False, "userMetadata": {"a": [1, 2]}},
        )
    assert session.status == "COMPLETED"
    assert bodies == [expected]  # dicts compare without order


@pytest.mark.asyncio
async def test_an_empty_extra_body_sends_the_plain_release() -> None:
    bodies: list[object] = []
    async with (
        serve(await _echo_bodies(bodies)) as (url, _),
        SessionsAPI("k", base_url=url) as api,
    ):
        await api.update("s-1", extra_body={})
    assert bodies == [{"status": "REQUEST_RELEASE"}]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("extra_body", "message"),
    [
        ([("keepAlive", True)], "extra_body must be a mapping, got list"),
        ({"status": "RUNNING"}, "must not set 'status': pass it as status="),
        ({"projectId": "p"}, "must not set 'projectId': pass it as project_id="),
        ({1: "x"}, "extra_body keys must be str, got 1"),
        ({"when": object()}, "extra_body is not JSON"),
        ({"tags": {1, 2}}, "extra_body is not JSON"),
        ({"ratio": math.nan}, "extra_body is not JSON"),
    ],
)
async def test_a_bad_extra_body_is_refused_before_any_request(
    extra_body: object, message: str, fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            await api.update(sid, extra_body=extra_body)  # type: ignore[arg-type]
    assert fake_browserbase.received.total == 0


CALLS: dict[str, Callable[[SessionsAPI, str, object], Awaitable[object]]] = {
    "update": lambda api, sid, timeout: api.update(sid, timeout=timeout),  # type: ignore[arg-type]
    "release": lambda api, sid, timeout: api.release(sid, timeout=timeout),  # type: ignore[arg-type]
    "retrieve": lambda api, sid, timeout: api.retrieve(sid, timeout=timeout),  # type: ignore[arg-type]
    "list": lambda api, sid, timeout: api.list(timeout=timeout),  # type: ignore[arg-type]
}
ROUTES = {"update": "update", "release": "update", "retrieve": "retrieve", "list": "list"}


@pytest.mark.asyncio
@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_per_call_timeout_fires_where_the_clients_would_not(
    call: str, fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    fake_browserbase.inject(Fault.hang(), route=ROUTES[call])  # type: ignore[arg-type]
    async with make_api(timeout=300.0, retry=ONCE) as api:
        with pytest.raises(APITimeoutError, match=r"no answer within 0\.05 s"):
            await CALLS[call](api, sid, 0.05)
        # The client's own timeout still holds for the next call.
        assert api.timeout == 300.0
        await CALLS[call](api, sid, 300.0)


@pytest.mark.asyncio
async def test_a_per_call_none_lifts_the_clients_timeout(
    fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api(timeout=0.1, retry=ONCE) as api:
        fake_browserbase.hold()
        call = asyncio.ensure_future(api.retrieve(sid, timeout=None))
        await fake_browserbase.wait_for_in_flight(1)
        await asyncio.sleep(0.3)  # past the client's 0.1 s: a limit, were there one, has fired
        fake_browserbase.let_go()
        assert (await call).id == sid


@pytest.mark.asyncio
@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("bad", [0, -1.0, math.nan, "5", True])
async def test_a_bad_per_call_timeout_is_refused(
    call: str, bad: object, fake_browserbase: FakeBrowserbase, make_api: ApiFactory
) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    async with make_api() as api:
        with pytest.raises(ValueError, match="timeout must be > 0 seconds or None"):
            await CALLS[call](api, sid, bad)
    assert fake_browserbase.received.total == 0


def test_help_shows_where_the_clients_timeout_applies() -> None:
    import inspect

    assert "= USE_CLIENT_DEFAULT" in str(inspect.signature(SessionsAPI.retrieve))


@pytest.mark.asyncio
async def test_an_extra_body_nested_too_deeply_is_a_value_error(
    fake_browserbase: FakeBrowserbase,
) -> None:
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    (sid,) = fake_browserbase.add_sessions(1)
    async with SessionsAPI(fake_browserbase.api_key, base_url=fake_browserbase.base_url) as api:
        with pytest.raises(ValueError, match="nested too deeply"):
            await api.update(sid, extra_body={"userMetadata": deep})
    assert fake_browserbase.received.total == 0
