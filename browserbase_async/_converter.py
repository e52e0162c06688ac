"""The one cattrs converter: camelCase JSON to the snake_case model and back.

Hooks are strict about JSON types (a ``"false"`` string is not a bool) and
tolerant about what the API may add later (unknown keys are ignored, unknown
enum values are kept as their raw string). Only ``id`` and ``status`` are
essential: a field the library does not act on whose value the schema does not
allow is read as ``None`` (and logged at DEBUG), so that a drift of the
server's schema never turns every answer into a failure.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._errors import APIResponseValidationError, excerpt, printable
from ._models import Region, Session, SessionStatus

logger: Final = logging.getLogger("browserbase_async")

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _structure_datetime(value: object, _: type) -> datetime | None:
    # Every datetime of a Session is optional: null is None.
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        # RFC 3339 allows a lower-case "t" and "z"; fromisoformat does not.
        parsed = datetime.fromisoformat(value.upper())
    if parsed.tzinfo is UTC:
        return parsed
    if parsed.tzinfo is None:
        # A date-time without an offset is read as UTC, as the API means it.
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # A moment in the first hours of year 1 at a positive offset is before what
        # datetime can hold in UTC; the earliest moment it can hold is the honest stand-in.
        return datetime.min.replace(tzinfo=UTC)


def _unstructure_datetime(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _strict(kind: type[_T], *, optional: bool = False) -> Callable[[object, type], _T | None]:
    def structure(value: object, _: type) -> _T | None:
        # bool is an int in Python, never in JSON.
        if type(value) is kind or (optional and value is None):
            return value
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")

    return structure


def _tolerant_enum(
    enum_type: type[_E], *, optional: bool = False
) -> Callable[[object, type], _E | str | None]:
    members: dict[object, _E] = {member.value: member for member in enum_type}

    def structure(value: object, _: type) -> _E | str | None:
        if not isinstance(value, str):
            if optional and value is None:
                return None
            raise TypeError(f"expected a string, got {type(value).__name__}")
        # A value added to the API after this release must not fail the call.
        return members.get(value, value)

    return structure


_ESSENTIAL: Final = ("id", "status")
"""The only fields a Session cannot do without: the library acts on nothing else."""


def _renames() -> dict[str, Any]:
    return {field.name: override(rename=_camel(field.name)) for field in attrs.fields(Session)}


def _build() -> cattrs.Converter:
    converter = cattrs.Converter()
    # The optional fields, each with one function: cattrs' general Optional path costs
    # more than the parse.
    converter.register_structure_hook(datetime | None, _structure_datetime)
    converter.register_unstructure_hook(datetime, _unstructure_datetime)
    for kind in (str, int, bool):
        converter.register_structure_hook(kind, _strict(kind))
        converter.register_structure_hook(kind | None, _strict(kind, optional=True))
    converter.register_structure_hook(SessionStatus | str, _tolerant_enum(SessionStatus))
    converter.register_structure_hook(Region | str | None, _tolerant_enum(Region, optional=True))
    renames = _renames()
    converter.register_structure_hook(
        Session, make_dict_structure_fn(Session, converter, **renames)
    )
    # Absent rather than null, as the API sends them: its description types them as strings.
    converter.register_unstructure_hook(
        Session,
        make_dict_unstructure_fn(Session, converter, _cattrs_omit_if_default=True, **renames),
    )
    return converter


converter: Final = _build()
_FIELDS: Final = tuple(
    (field.name, _camel(field.name), field.type)
    for field in attrs.fields(attrs.resolve_types(Session))
)
"""Each field of a Session: its name, its JSON key, its type."""
_NAMES: Final = tuple(name for name, _, _ in _FIELDS)
# The same hooks without cattrs' detailed validation: a quarter cheaper, and a valid Session
# (every answer but a broken one) needs nothing more. A failure is structured again by the
# converter's own hook, which names every bad field.
_structure_session_fast: Final = make_dict_structure_fn(
    Session,
    converter,
    _cattrs_detailed_validation=False,
    **_renames(),
)


def structure_session(data: object) -> Session:
    """Build a `Session` from decoded JSON, leniently on the fields the library does not act on.

    Raises:
        APIResponseValidationError: *data* is not a JSON object, or its ``id``
            or ``status`` is missing or not a string.
    """
    if type(data) is dict:
        try:
            return _structure_session_fast(data, Session)
        except Exception:  # a drifted field, or a missing essential one: read field by field
            pass
    return _structure_lenient(data)


def _structure_lenient(data: object) -> Session:
    if not isinstance(data, dict):
        raise APIResponseValidationError(
            f"expected a JSON object for Session, got {type(data).__name__}",
            body=json_excerpt(data),
        )
    problems = [
        f"$.{key}: {'missing' if key not in data else 'not a string'}"
        for key in _ESSENTIAL
        if not isinstance(data.get(key), str)
    ]
    if problems:
        raise APIResponseValidationError(
            f"the Session in the response is not valid: {'; '.join(problems)}",
            body=json_excerpt(data),
        )
    fields: dict[str, Any] = dict.fromkeys(_NAMES)
    for name, key, kind in _FIELDS:
        value = data.get(key)
        if value is None:
            continue
        try:
            fields[name] = converter.structure(value, kind)  # type: ignore[arg-type]
        except Exception as exc:
            logger.debug(
                "session %s: %s read as None, its value does not fit the schema (%s: %s)",
                printable(data["id"][:80]),
                key,
                type(exc).__name__,
                exc,
            )
    return Session(**fields)


def structure_sessions(data: object) -> list[Session]:
    """Build a list of `Session` from a decoded JSON array: every session it can read.

    An item that is not a readable Session (no ``id`` or ``status``) is
    skipped, with a warning.

    Raises:
        APIResponseValidationError: *data* is not an array.
    """
    if not isinstance(data, list):
        raise APIResponseValidationError(
            "expected a JSON array of sessions", body=json_excerpt(data)
        )
    sessions = []
    for item in data:
        try:
            sessions.append(structure_session(item))
        except APIResponseValidationError as exc:
            # One drifted session never fails the listing: the others are still worth having.
            logger.warning("a session of the listing was skipped: %s", exc)
    return sessions


def json_excerpt(data: object) -> str:
    """A short excerpt of decoded JSON, for a message; never an exception of its own."""
    try:
        return excerpt(json.dumps(data))
    except (ValueError, RecursionError):  # too deep to encode again
        return f"<a JSON {type(data).__name__} too deep to show>"


def unstructure_session(session: Session) -> dict[str, Any]:
    """Return the JSON form of *session*, with camelCase keys and ISO 8601 datetimes."""
    return converter.unstructure(session)  # type: ignore[no-any-return]
