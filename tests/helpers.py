"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any


def session_json(**overrides: Any) -> dict[str, Any]:
    """A valid Session as the API sends it, with *overrides* applied."""
    data: dict[str, Any] = {
        "id": "s-1",
        "createdAt": "2026-11-28T09:00:00Z",
        "updatedAt": "2026-11-28T09:00:01.5Z",
        "projectId": "p-1",
        "startedAt": "2026-11-28T09:00:00.123456+00:00",
        "expiresAt": "2026-11-28T15:00:00Z",
        "status": "RUNNING",
        "proxyBytes": 0,
        "keepAlive": False,
        "region": "us-west-2",
    }
    data.update(overrides)
    return data
