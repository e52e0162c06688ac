"""FakeBrowserbase's own behaviour, spoken to with raw aiohttp."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from browserbase_async.testing import FakeBrowserbase, Fault, FaultPlan

pytestmark = pytest.mark.asyncio


async def call(
    fake: FakeBrowserbase,
    method: str,
    path: str,
    *,
    key: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"X-BB-API-Key": fake.api_key if key is None else key}
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else (None if body is None else aiohttp.JsonPayload(body))
        async with http.request(method, fake.base_url + path, headers=headers, data=data) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


async def test_auth_is_checked(fake_browserbase: FakeBrowserbase) -> None:
    status, body = await call(fake_browserbase, "GET", "/v1/sessions", key="nope")
    assert status == 401
    assert "X-BB-API-Key" in body["message"]


async def test_create_retrieve_release(fake_browserbase: FakeBrowserbase) -> None:
    status, created = await call(
        fake_browserbase, "POST", "/v1/sessions", body={"userMetadata": {"job": "a"}}
    )
    assert status == 201
    assert {"connectUrl", "seleniumRemoteUrl", "signingKey"} <= created.keys()
    sid = created["id"]
    status, got = await call(fake_browserbase, "GET", f"/v1/sessions/{sid}")
    assert (status, got["status"], got["userMetadata"]) == (200, "RUNNING", {"job": "a"})
    status, ended = await call(
        fake_browserbase, "POST", f"/v1/sessions/{sid}", body={"status": "REQUEST_RELEASE"}
    )
    assert (status, ended["status"]) == (200, "COMPLETED")
    assert ended["endedAt"]
    status, again = await call(
        fake_browserbase, "POST", f"/v1/sessions/{sid}", body={"status": "REQUEST_RELEASE"}
    )
    assert status == 400
    assert "not running" in again["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"status": "STOP"},
        {"status": "REQUEST_RELEASE", "projectId": 5},
        {"status": "REQUEST_RELEASE", "extra": 1},
        ["REQUEST_RELEASE"],
    ],
)
async def test_update_bodies_are_validated(fake_browserbase: FakeBrowserbase, body: Any) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    status, answer = await call(fake_browserbase, "POST", f"/v1/sessions/{sid}", body=body)
    assert status == 400
    assert "REQUEST_RELEASE" in answer["message"]
    assert fake_browserbase.status(sid) == "RUNNING"


async def test_bodies_that_are_not_json(fake_browserbase: FakeBrowserbase) -> None:
    status, _ = await call(fake_browserbase, "POST", "/v1/sessions/x", raw=b"{nope")
    assert status == 400
    status, _ = await call(fake_browserbase, "POST", "/v1/sessions", raw=b"{nope")
    assert status == 400
    status, _ = await call(fake_browserbase, "POST", "/v1/sessions", body=[1])
    assert status == 400


async def test_unknown_sessions(fake_browserbase: FakeBrowserbase) -> None:
    assert (await call(fake_browserbase, "GET", "/v1/sessions/nope"))[0] == 404
    release = {"status": "REQUEST_RELEASE"}
    assert (await call(fake_browserbase, "POST", "/v1/sessions/nope", body=release))[0] == 404


async def test_list_filters(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.add_session("a", user_metadata={"job": "x", "n": "1"})
    fake_browserbase.add_session("b", user_metadata={"job": "y"})
    fake_browserbase.add_session("c", status="ERROR")
    ids = lambda body: sorted(s["id"] for s in body)  # noqa: E731
    assert ids((await call(fake_browserbase, "GET", "/v1/sessions"))[1]) == ["a", "b", "c"]
    _, running = await call(fake_browserbase, "GET", "/v1/sessions?status=RUNNING")
    assert ids(running) == ["a", "b"]
    q = "q=user_metadata['job']:'x'%20AND%20user_metadata['n']:'1'"
    assert ids((await call(fake_browserbase, "GET", f"/v1/sessions?{q}"))[1]) == ["a"]
    assert (await call(fake_browserbase, "GET", "/v1/sessions?status=DONE"))[0] == 400
    assert (await call(fake_browserbase, "GET", "/v1/sessions?q=job=x"))[0] == 400


async def test_scripted_faults_come_in_order(fake_browserbase: FakeBrowserbase) -> None:
    fake_browserbase.inject(Fault.status(503), Fault.json({"hello": 1}, 202), Fault.html())
    (sid,) = fake_browserbase.add_sessions(1)
    assert (await call(fake_browserbase, "GET", "/v1/sessions"))[0] == 503
    assert await call(fake_browserbase, "GET", "/v1/sessions") == (202, {"hello": 1})
    status, text = await call(fake_browserbase, "GET", f"/v1/sessions/{sid}")
    assert status == 200
    assert "<html>" in text
    assert fake_browserbase.received.answers == {503: 1, 202: 1, 200: 1}


async def test_random_faults_follow_their_rates() -> None:
    plan = FaultPlan(error_rate=0.25, rate_limit_rate=0.25, retry_after=2, seed=1)
    async with FakeBrowserbase(faults=plan) as fake:
        statuses = [(await call(fake, "GET", "/v1/sessions"))[0] for _ in range(200)]
    assert 25 < statuses.count(503) < 75
    assert 25 < statuses.count(429) < 75
    assert statuses.count(200) > 60


async def test_non_json_rate() -> None:
    async with FakeBrowserbase(faults=FaultPlan(non_json_rate=1.0)) as fake:
        status, text = await call(fake, "GET", "/v1/sessions")
    assert status == 200
    assert text.startswith("<html>")


async def test_latency_jitter_spreads_each_answers_wait_around_the_latency() -> None:
    fixed = FakeBrowserbase(faults=FaultPlan(latency=0.05, seed=3))
    spread = FakeBrowserbase(faults=FaultPlan(latency=0.05, latency_jitter=0.2, seed=3))
    assert {fixed._latency() for _ in range(100)} == {0.05}
    waits = [spread._latency() for _ in range(1000)]
    assert all(0.04 <= wait <= 0.06 for wait in waits)
    assert min(waits) < 0.042  # the whole range, not a point
    assert max(waits) > 0.058
    # Without jitter nothing is drawn: a seeded plan's faults come in the same order as ever.
    assert fixed._random.random() == FakeBrowserbase(faults=FaultPlan(seed=3))._random.random()


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
async def test_latency_jitter_outside_zero_to_one_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError, match="latency_jitter"):
        FaultPlan(latency=0.05, latency_jitter=jitter)


async def test_a_concurrency_limit_answers_429() -> None:
    async with FakeBrowserbase(faults=FaultPlan(max_in_flight=2)) as fake:
        fake.hold()
        held = [asyncio.create_task(call(fake, "GET", "/v1/sessions")) for _ in range(2)]
        await fake.wait_for_in_flight(2)
        # A third, while two are served: refused at once, not held.
        assert (await call(fake, "GET", "/v1/sessions"))[0] == 429
        fake.let_go()
        assert [status for status, _ in await asyncio.gather(*held)] == [200, 200]
        assert fake.received.peak_in_flight == 3
        assert fake.received.answers == {200: 2, 429: 1}


async def test_a_limit_per_second_answers_429_beyond_its_burst() -> None:
    # One every 100 s, in a bucket of two: two at once pass, the third is refused (however
    # slow the machine: the bucket refills no token within the test).
    async with FakeBrowserbase(faults=FaultPlan(max_per_second=0.01, rate_burst=2)) as fake:
        statuses = [(await call(fake, "GET", "/v1/sessions"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_sessions_end_after_the_release_delay() -> None:
    async with FakeBrowserbase(faults=FaultPlan(release_delay=0.05)) as fake:
        (sid,) = fake.add_sessions(1)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        status, answer = await call(
            fake, "POST", f"/v1/sessions/{sid}", body={"status": "REQUEST_RELEASE"}
        )
        # The answer is made before the fake's timer could fire: always RUNNING.
        assert (status, answer["status"]) == (200, "RUNNING")
        await fake.wait_for_status(sid, "COMPLETED")
        assert loop.time() - sent >= 0.05  # by the timer, not before
        assert fake.sessions[sid]["endedAt"] is not None


async def test_the_realistic_plan_makes_every_kind_of_fault() -> None:
    plan = FaultPlan.realistic(seed=1)
    fake = FakeBrowserbase(faults=plan)
    assert "not started" in repr(fake)
    async with fake:
        assert fake.base_url in repr(fake)
        statuses = [await _status_or_cut(fake) for _ in range(150)]
    await fake.close()  # a second close does nothing
    answers = fake.received.answers
    assert answers[503] > 0
    assert answers[429] > 0
    assert answers["lost"] > 0
    assert answers["dropped"] > 0
    assert statuses.count(200) > 0.8 * len(statuses)


async def _status_or_cut(fake: FakeBrowserbase) -> int:
    try:
        return (await call(fake, "GET", "/v1/sessions"))[0]
    except aiohttp.ClientError:
        return 0


async def test_the_waits_return_at_once_when_already_there(
    fake_browserbase: FakeBrowserbase,
) -> None:
    (sid,) = fake_browserbase.add_sessions(1, status="COMPLETED")
    await fake_browserbase.wait_for_status(sid, "COMPLETED")
    await fake_browserbase.wait_for_in_flight(0)
    await fake_browserbase.wait_for_requests(0)
    fake_browserbase.let_go()  # not holding: nothing to do
    abandoned = asyncio.create_task(fake_browserbase.wait_for_requests(1))
    await asyncio.sleep(0)
    abandoned.cancel()  # a waiter given up on is dropped, never woken
    fake_browserbase.hold()
    fake_browserbase.hold()  # holding already: the same hold
    waiting = asyncio.create_task(call(fake_browserbase, "GET", f"/v1/sessions/{sid}"))
    await fake_browserbase.wait_for_in_flight(1)
    fake_browserbase.let_go()
    assert (await waiting)[0] == 200


async def test_a_status_waiter_waits_for_its_own_session() -> None:
    async with FakeBrowserbase(faults=FaultPlan(release_delay=0.01)) as fake:
        first, second = fake.add_sessions(2)
        waiting = asyncio.create_task(fake.wait_for_status(second, "COMPLETED"))
        await call(fake, "POST", f"/v1/sessions/{first}", body={"status": "REQUEST_RELEASE"})
        await fake.wait_for_status(first, "COMPLETED")
        assert not waiting.done()
        await call(fake, "POST", f"/v1/sessions/{second}", body={"status": "REQUEST_RELEASE"})
        await waiting


# -- fidelity: the fake refuses what the API refuses, and matches as the API does -------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"region": "mars-1"}, "region"),
        ({"keepAlive": "no"}, "keepAlive"),
        ({"timeout": 5}, "timeout"),
        ({"timeout": 60.5}, "timeout"),
        ({"projectId": 42}, "projectId"),
        ({"userMetadata": "job"}, "userMetadata"),
        ({"userMetadata": {"big": "x" * 600}}, "512"),
        ({"proxies": "yes"}, "proxies"),
        ({"proxies": [{"type": "external"}]}, "server"),
        ({"proxies": [{"type": "browserbase", "geolocation": {}}]}, "country"),
        ({"browserSettings": {"viewport": {"width": "wide"}}}, "viewport.width"),
        ({"browserSettings": {"os": "beos"}}, "os"),
        ({"browserSettings": "fast"}, "browserSettings must be an object"),
        ({"browserSettings": {"context": {"persist": True}}}, "context.id"),
        ({"browserSettings": {"allowedDomains": [1]}}, "allowedDomains[0]"),
        ({"proxySettings": {"caCertificates": "all"}}, "caCertificates"),
        ([], "object"),
    ],
)
async def test_create_refuses_what_the_api_refuses(
    fake_browserbase: FakeBrowserbase, body: Any, named: str
) -> None:
    status, answer = await call(fake_browserbase, "POST", "/v1/sessions", body=body)
    assert status == 400
    assert answer["statusCode"] == 400
    assert answer["error"] == "Bad Request"
    assert named in answer["message"]
    assert fake_browserbase.sessions == {}


async def test_create_takes_every_field_the_api_describes(
    fake_browserbase: FakeBrowserbase,
) -> None:
    body = {
        "projectId": "p",
        "extensionId": "e",
        "keepAlive": True,
        "timeout": 21600,
        "region": "ap-southeast-1",
        "userMetadata": {"a": {"b": "c"}},
        "proxies": [
            {"type": "browserbase", "geolocation": {"country": "US", "state": "NY"}},
            {"type": "external", "server": "http://p", "username": "u", "password": "pw"},
            {"type": "none", "domainPattern": ".*"},
        ],
        "proxySettings": {"caCertificates": ["c1"]},
        "browserSettings": {
            "context": {"id": "ctx", "persist": True},
            "viewport": {"width": 1, "height": 2},
            "os": "linux",
            "allowedDomains": ["example.com"],
            "blockAds": True,
        },
    }
    status, created = await call(fake_browserbase, "POST", "/v1/sessions", body=body)
    assert status == 201
    assert created["region"] == "ap-southeast-1"
    assert created["projectId"] == "p"
    assert created["keepAlive"] is True
    _, retrieved = await call(fake_browserbase, "GET", f"/v1/sessions/{created['id']}")
    assert retrieved["signingKey"] == created["signingKey"]
    assert retrieved["connectUrl"] == created["connectUrl"]


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ("user_metadata['s']:'True'", ["string"]),
        ("user_metadata['n']:'1'", ["string"]),
        ("user_metadata['quote']:'it\\'s'", ["string"]),
        ("user_metadata['slash']:'a\\\\b'", ["string"]),
        ("user_metadata['deep']['er']:'x'", ["typed"]),
        ("user_metadata['deep']:'x'", []),
        ("user_metadata['missing']:'None'", []),
        ("user_metadata['s']:'True' AND user_metadata['n']:'1'", ["string"]),
    ],
)
async def test_q_compares_metadata_by_its_json_type(
    fake_browserbase: FakeBrowserbase, query: str, matches: list[str]
) -> None:
    fake_browserbase.add_session(
        "typed", user_metadata={"s": True, "n": 1, "deep": {"er": "x"}, "quote": None}
    )
    fake_browserbase.add_session(
        "string", user_metadata={"s": "True", "n": "1", "quote": "it's", "slash": "a\\b"}
    )
    status, found = await call(fake_browserbase, "GET", "/v1/sessions?" + urlencode({"q": query}))
    assert status == 200
    assert sorted(session["id"] for session in found) == matches


@pytest.mark.parametrize(
    "query",
    [
        "user_metadata['a']:'b' OR garbage",
        "user_metadata['a']:'a'b'c'",
        "user_metadata['a']:'b' AND",
        "user_metadata['a']:'open",
        "user_metadata['a':'b'",
        "user_metadata:'b'",
        "user_metadata['a']'b'",
        "user_metadata['a']:b",
        "metadata['a']:'b'",
        "",
    ],
)
async def test_q_refuses_what_is_not_a_query(fake_browserbase: FakeBrowserbase, query: str) -> None:
    status, answer = await call(fake_browserbase, "GET", "/v1/sessions?" + urlencode({"q": query}))
    assert status == 400
    assert "invalid query" in answer["message"]
