"""The vendor's OpenAPI description (tests/spec/), and the check of every answer the fake sends."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Final

import jsonschema

from browserbase_async.testing import Exchange

SPEC: Final[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "spec" / "browserbase-openapi.json").read_text()
)
ROUTES: Final = {
    "list": ("/v1/sessions", "get"),
    "create": ("/v1/sessions", "post"),
    "retrieve": ("/v1/sessions/{id}", "get"),
    "update": ("/v1/sessions/{id}", "post"),
}
CHECKER: Final = jsonschema.Draft7Validator.FORMAT_CHECKER


def resolved(node: Any) -> Any:
    """The schema with every local ``$ref`` replaced by what it points to."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = SPEC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolved(target)
        return {key: resolved(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(item) for item in node]
    return node


@cache
def operation(path: str, method: str) -> dict[str, Any]:
    """The operation's description, resolved."""
    return resolved(SPEC["paths"][path][method])  # type: ignore[no-any-return]


@cache
def _answer_validator(route: str, status: int) -> jsonschema.Draft7Validator | None:
    responses = operation(*ROUTES[route])["responses"]
    if str(status) not in responses:
        return None
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    return jsonschema.Draft7Validator(schema, format_checker=CHECKER)


def validate(instance: object, schema: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` unless *instance* fits *schema*."""
    jsonschema.Draft7Validator(schema, format_checker=CHECKER).validate(instance)


def check_answer(exchange: Exchange) -> None:
    """Hold an answer of the fake to the description: a described status's schema, else an
    error of the API's shape (``statusCode``, ``error``, ``message``).

    Raises:
        AssertionError, jsonschema.ValidationError: It does not fit.
    """
    body = json.loads(exchange.response_body)
    validator = _answer_validator(exchange.route, exchange.status)
    if validator is not None:
        validator.validate(body)
        return
    assert exchange.status >= 400, f"{exchange.route} answered {exchange.status}, not described"
    assert isinstance(body, dict), body
    assert body.get("statusCode") == exchange.status, body
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("message"), str), body
