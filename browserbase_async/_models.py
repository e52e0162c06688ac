"""The Session model, as the API describes it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

import attrs


class SessionStatus(enum.StrEnum):
    """The life-cycle state of a session. ``ERROR``, ``TIMED_OUT`` and ``COMPLETED`` are final."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    ERROR = "ERROR"
    TIMED_OUT = "TIMED_OUT"
    COMPLETED = "COMPLETED"


class Region(enum.StrEnum):
    """Where a session's browser runs."""

    US_WEST_2 = "us-west-2"
    US_EAST_1 = "us-east-1"
    EU_CENTRAL_1 = "eu-central-1"
    AP_SOUTHEAST_1 = "ap-southeast-1"


TERMINAL_STATUSES: Final = frozenset(
    {SessionStatus.COMPLETED, SessionStatus.ERROR, SessionStatus.TIMED_OUT}
)


@attrs.frozen
class Session:
    """One browser session, as the API returns it.

    Only ``id`` and ``status`` are essential: every other field is ``None``
    when the server leaves it out, sends ``null``, or sends a value the schema
    does not allow (a drift of the server's schema never fails a call; the
    mismatch is logged at DEBUG). ``status`` and ``region`` are enum members,
    or the raw string when the server sends a value this version does not
    know yet; both compare equal to their string value
    (``session.status == "COMPLETED"``). Datetimes are timezone-aware, in UTC.
    """

    id: str
    created_at: datetime | None
    updated_at: datetime | None
    project_id: str | None
    started_at: datetime | None
    status: SessionStatus | str
    proxy_bytes: int | None
    keep_alive: bool | None
    region: Region | str | None
    ended_at: datetime | None = None
    expires_at: datetime | None = None
    context_id: str | None = None
    user_metadata: dict[str, Any] | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the session has ended (``COMPLETED``, ``ERROR`` or ``TIMED_OUT``)."""
        return self.status in TERMINAL_STATUSES


def bare_session(session_id: str, status: SessionStatus | str) -> Session:
    """A `Session` of which only the id and the status are known; every other field ``None``."""
    return Session(session_id, None, None, None, None, status, None, None, None)


@attrs.frozen(kw_only=True)
class CreatedSession(Session):
    """A session as `SessionsAPI.create` made it: a `Session`, and how to connect to it.

    The signing key, and the connect URL that carries it, are secrets: they
    are left out of ``repr()`` (and so of logs and error messages).

    Attributes:
        connect_url: The WebSocket URL to connect to the browser (CDP).
        selenium_remote_url: The HTTP URL for Selenium's ``Remote`` driver.
        signing_key: The key to sign Selenium's requests with.
    """

    connect_url: str = attrs.field(repr=False)
    selenium_remote_url: str
    signing_key: str = attrs.field(repr=False)
