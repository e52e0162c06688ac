from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from browserbase_async import APIResponseValidationError, Region, Session, SessionStatus
from browserbase_async._converter import (
    structure_session,
    structure_sessions,
    unstructure_session,
)
from browserbase_async._models import bare_session

from .helpers import session_json


def test_camel_case_keys_become_fields() -> None:
    session = structure_session(
        session_json(contextId="c-1", userMetadata={"job": "x"}, endedAt=None)
    )
    assert session.id == "s-1"
    assert session.project_id == "p-1"
    assert session.context_id == "c-1"
    assert session.user_metadata == {"job": "x"}
    assert session.ended_at is None
    assert session.status is SessionStatus.RUNNING
    assert session.region is Region.US_WEST_2
    assert session.updated_at == datetime(2026, 11, 28, 9, 0, 1, 500000, tzinfo=UTC)


def test_optional_fields_may_be_absent() -> None:
    data = session_json()
    del data["expiresAt"]
    session = structure_session(data)
    assert session.expires_at is None
    assert session.context_id is None
    assert session.user_metadata is None


def test_unknown_keys_are_ignored() -> None:
    session = structure_session(session_json(connectUrl="wss://x", brandNewField=[1, 2]))
    assert session.id == "s-1"


@given(
    st.text(
        alphabet=st.characters(whitelist_categories=("Lu", "Nd"), max_codepoint=127) | st.just("_"),
        min_size=1,
        max_size=20,
    ).filter(lambda v: v not in {s.value for s in SessionStatus})
)
def test_unknown_status_is_kept_raw(value: str) -> None:
    session = structure_session(session_json(status=value))
    assert session.status == value
    assert not session.is_terminal


def test_unknown_region_is_kept_raw() -> None:
    assert structure_session(session_json(region="sa-east-1")).region == "sa-east-1"


def test_enums_compare_to_strings() -> None:
    session = structure_session(session_json(status="COMPLETED"))
    assert session.status == "COMPLETED"
    assert session.is_terminal
    assert str(SessionStatus.COMPLETED) == "COMPLETED"


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)


@given(moments, st.sampled_from(["seconds", "milliseconds", "microseconds"]), st.booleans())
def test_datetimes_in_every_iso_form_become_utc(
    moment: datetime, timespec: str, zulu: bool
) -> None:
    text = moment.isoformat(timespec=timespec)
    if zulu and moment.utcoffset() == timedelta(0):
        text = text.replace("+00:00", "Z")
    parsed = structure_session(session_json(createdAt=text)).created_at
    assert parsed.tzinfo is UTC
    expected = moment.replace(microsecond=0) if timespec == "seconds" else moment
    if timespec == "milliseconds":
        expected = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert parsed == expected


def test_nanosecond_fractions_and_lowercase_are_read() -> None:
    session = structure_session(session_json(createdAt="2026-11-28t09:00:00.123456789z"))
    assert session.created_at == datetime(2026, 11, 28, 9, 0, 0, 123456, tzinfo=UTC)


def test_a_datetime_without_offset_is_utc() -> None:
    session = structure_session(session_json(createdAt="2026-11-28T09:00:00"))
    assert session.created_at == datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)
    assert session.created_at.tzinfo is UTC


@given(
    st.builds(
        Session,
        id=st.text(min_size=1),
        created_at=moments,
        updated_at=moments,
        project_id=st.text(),
        started_at=moments,
        status=st.sampled_from(SessionStatus) | st.text(min_size=1),
        proxy_bytes=st.integers(min_value=0),
        keep_alive=st.booleans(),
        region=st.sampled_from(Region) | st.text(min_size=1),
        ended_at=st.none() | moments,
        expires_at=st.none() | moments,
        context_id=st.none() | st.text(),
        user_metadata=st.none() | st.dictionaries(st.text(), st.integers() | st.text()),
    )
)
def test_round_trip(session: Session) -> None:
    again = structure_session(unstructure_session(session))
    assert again == session


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"createdAt": None}, "created_at"),
        ({"proxyBytes": None}, "proxy_bytes"),
        ({"proxyBytes": "12"}, "proxy_bytes"),
        ({"keepAlive": "false"}, "keep_alive"),
        ({"proxyBytes": True}, "proxy_bytes"),
        ({"createdAt": "yesterday"}, "created_at"),
        ({"startedAt": 1764320400}, "started_at"),
        ({"region": ["us-west-2"]}, "region"),
        ({"userMetadata": "not an object"}, "user_metadata"),
    ],
)
def test_a_drifted_field_the_library_does_not_act_on_is_none(
    change: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="browserbase_async")
    session = structure_session(session_json(**change))
    assert (session.id, session.status) == ("s-1", SessionStatus.RUNNING)
    assert getattr(session, field) is None
    assert session.project_id == "p-1"  # the others as sent
    if next(iter(change.values())) is not None:
        assert next(iter(change)) in caplog.text


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"status": 3}, "status"),
        ({"status": None}, "status"),
        ({"id": None}, "id"),
        ({"id": 12}, "id"),
    ],
)
def test_a_bad_id_or_status_is_a_validation_error(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(APIResponseValidationError, match=needle) as caught:
        structure_session(session_json(**change))
    assert caught.value.body


def test_only_id_and_status_are_needed() -> None:
    data = {"id": "s-1", "status": "COMPLETED"}
    session = structure_session(data)
    assert session == bare_session("s-1", SessionStatus.COMPLETED)
    assert session.started_at is None
    for key in data:
        with pytest.raises(APIResponseValidationError, match=f"\\$.{key}: missing"):
            structure_session({k: v for k, v in data.items() if k != key})


def test_not_an_object() -> None:
    with pytest.raises(APIResponseValidationError, match="JSON object"):
        structure_session(["s-1"])


def test_a_list_of_sessions() -> None:
    assert [s.id for s in structure_sessions([session_json(), session_json(id="s-2")])] == [
        "s-1",
        "s-2",
    ]
    with pytest.raises(APIResponseValidationError, match="array"):
        structure_sessions({"sessions": []})


def test_a_listing_keeps_every_session_it_can_read(caplog: pytest.LogCaptureFixture) -> None:
    listed = structure_sessions(
        [
            session_json(id="a", startedAt=None),
            {"status": "RUNNING"},
            "not a session",
            session_json(id="b", proxyBytes=None, startedAt="garbage"),
        ]
    )
    assert [(s.id, s.started_at) for s in listed] == [("a", None), ("b", None)]
    assert caplog.text.count("skipped") == 2


def test_excerpt_is_short() -> None:
    with pytest.raises(APIResponseValidationError) as caught:
        structure_session(session_json(userMetadata={"blob": "x" * 10_000}, status=7))
    assert len(caught.value.body) <= 200


def test_a_moment_before_what_utc_can_hold_becomes_the_earliest() -> None:
    # 0001-01-01T00:30+01:00 is in year 0 in UTC, which datetime cannot hold.
    session = structure_session(session_json(createdAt="0001-01-01T00:30:00+01:00"))
    assert session.created_at == datetime.min.replace(tzinfo=UTC)
