from __future__ import annotations

import json

import pytest

from browserbase_async import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from browserbase_async._errors import excerpt, for_status


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (503, InternalServerError),
        (599, InternalServerError),
        (418, APIStatusError),
        (302, APIStatusError),
    ],
)
def test_status_maps_to_its_exception(status: int, kind: type[APIStatusError]) -> None:
    error = for_status(status, {"x-request-id": "r1"}, b"")
    assert type(error) is kind
    assert error.status_code == status
    assert error.headers == {"x-request-id": "r1"}


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_success_is_none(status: int) -> None:
    assert for_status(status, {}, b"whatever") is None


def test_the_server_message_is_in_the_text() -> None:
    body = json.dumps({"statusCode": 404, "error": "Not Found", "message": "Session not found"})
    error = for_status(404, {}, body.encode())
    assert str(error) == "404 Not Found: Session not found"
    assert error is not None
    assert error.body == {"statusCode": 404, "error": "Not Found", "message": "Session not found"}


def test_error_key_when_no_message() -> None:
    error = for_status(400, {}, b'{"error": "bad things"}')
    assert str(error) == "400 Bad Request: bad things"


def test_a_json_body_without_message() -> None:
    error = for_status(400, {}, b"[1, 2]")
    assert str(error) == "400 Bad Request: [1, 2]"


def test_a_text_body_is_cut_short() -> None:
    error = for_status(502, {}, b"<html>" + b"x" * 5000 + b"</html>")
    assert error is not None
    assert len(str(error)) < 260
    assert isinstance(error.body, str)


def test_an_unknown_status_code() -> None:
    assert str(for_status(599, {}, b"")) == "599 Unknown Status"


@pytest.mark.parametrize("before", [0, 150, 185, 197])
def test_an_excerpt_never_shows_a_signing_key_even_cut_across_it(before: int) -> None:
    # Masked after the cut (cheap on a long body): a value the cut breaks off is masked too.
    text = "x" * before + ' "signingKey": "SECRET-KEY", "u": "wss://h/?signingKey=SECRET-KEY"'
    shown = excerpt(text + " y" * 300)
    assert "SECRET" not in shown
    assert "SECR" not in shown


def test_excerpt_folds_whitespace() -> None:
    assert excerpt("a\n  b\tc") == "a b c"
    assert excerpt("y" * 500).endswith("…")
