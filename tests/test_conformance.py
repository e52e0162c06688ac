"""The client and the fake, held to the vendor's OpenAPI description (tests/spec/)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis_jsonschema import from_schema

from browserbase_async import RetryPolicy, SessionsAPI, SessionStatus
from browserbase_async._converter import converter, structure_session, structure_sessions
from browserbase_async._models import Session
from browserbase_async.testing import FakeBrowserbase, Fault
from browserbase_async.testing._fake import create_body_problem

from .schema import ROUTES, SPEC, operation, resolved, validate

SESSION = resolved(SPEC["components"]["schemas"]["Session"])


# -- spec-generated data ------------------------------------------------------


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(from_schema(SESSION))
def test_every_session_the_spec_allows_is_structured(data: dict[str, Any]) -> None:
    session = structure_session(data)
    assert session.id == data["id"]
    assert session.created_at.tzinfo is not None
    assert session.status in set(SessionStatus)
    assert session.proxy_bytes == data["proxyBytes"]
    assert (session.ended_at is None) == ("endedAt" not in data)
    assert session.user_metadata == data.get("userMetadata")
    # The fast path (no detailed validation) and the converter's own hook agree.
    assert session == converter.structure(data, Session)


# Each item is a Session, which the property above explores at length: here the list's own
# shape matters, and up to five items keep the drawing cheap (it was a tenth of the suite).
LISTED = operation("/v1/sessions", "get")["responses"]["200"]["content"]["application/json"]
LIST = {**LISTED["schema"], "maxItems": 5}


@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
@given(from_schema(LIST))
def test_every_list_the_spec_allows_is_structured(data: list[dict[str, Any]]) -> None:
    assert [session.id for session in structure_sessions(data)] == [item["id"] for item in data]


# -- the fake obeys the spec --------------------------------------------------


def check_exchange(
    route: str, query: dict[str, str], request: bytes, status: int, body: bytes
) -> None:
    spec = operation(*ROUTES[route])
    for parameter in spec.get("parameters", []):
        if parameter["in"] == "query" and parameter["name"] in query:
            validate(query[parameter["name"]], parameter["schema"])
    if "requestBody" in spec:
        validate(
            json.loads(request or b"{}"),
            spec["requestBody"]["content"]["application/json"]["schema"],
        )
    if str(status) in spec["responses"]:
        schema = spec["responses"][str(status)]["content"]["application/json"]["schema"]
        validate(json.loads(body), schema)
    else:
        assert status >= 400, f"{route} answered {status}, which the spec does not describe"
        assert "message" in json.loads(body)


@pytest.mark.asyncio
async def test_the_fake_and_the_client_speak_the_spec() -> None:
    async with FakeBrowserbase(record_exchanges=True) as fake:
        fake.add_sessions(5, user_metadata={"job": "a"})
        fake.add_session("ended", status="COMPLETED", context_id="ctx-1")
        fake.add_session("failed", status="ERROR")
        async with aiohttp.ClientSession() as http:
            created = await http.post(
                f"{fake.base_url}/v1/sessions",
                json={"projectId": "p", "keepAlive": True, "userMetadata": {"job": "b"}},
                headers={"X-BB-API-Key": fake.api_key},
            )
            assert created.status == 201
            created.release()
        async with SessionsAPI(
            fake.api_key,
            base_url=fake.base_url,
            project_id="proj",
            retry=RetryPolicy(initial_delay=0),
        ) as api:
            await api.list()
            for status in SessionStatus:
                await api.list(status=status)
            await api.list(q="user_metadata['job']:'a'")
            await api.retrieve("ended")
            fake.inject(Fault.lose())
            await api.release_all(q="user_metadata['job']:'a'")
            await api.release("ended")
            await api.release("failed", wait=True)
            await api.release_many(["ended", "missing"])
            await api.create(
                keep_alive=True,
                timeout=60,
                region="eu-central-1",
                user_metadata={"job": "c"},
                browser_settings={"viewport": {"width": 1280, "height": 720}, "os": "linux"},
                proxies=[{"type": "external", "server": "http://proxy.invalid"}],
                extension_id="ext",
            )
            fake.inject(Fault.lose(), route="create")
            async with api.session(proxies=True):
                pass
    assert len(fake.received.exchanges) > 20
    for exchange in fake.received.exchanges:
        check_exchange(
            exchange.route,
            exchange.query,
            exchange.request_body,
            exchange.status,
            exchange.response_body,
        )


CREATE_BODY = operation("/v1/sessions", "post")["requestBody"]["content"]["application/json"][
    "schema"
]


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(from_schema(CREATE_BODY))
def test_the_fake_takes_every_create_body_the_spec_allows(body: dict[str, Any]) -> None:
    metadata = body.get("userMetadata")
    assume(metadata is None or len(json.dumps(metadata)) < 512)  # the docs' limit, not the spec's
    assert create_body_problem(body) is None
