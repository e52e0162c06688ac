"""Runs every Python example of README.md and docs/ against a fake Browserbase (Sybil)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

from browserbase_async.testing import FakeBrowserbase

# Here, at the root, so that the docs' examples and the tests both get the fixtures and marker.
pytest_plugins = ["browserbase_async.testing.pytest_plugin"]


def _start_fake(namespace: dict[str, Any]) -> None:
    stack = ExitStack()
    fake = stack.enter_context(FakeBrowserbase.in_thread())
    fake.add_session("a-session-id")
    fake.add_session("another-session-id")
    for _ in range(20):
        fake.add_session(user_metadata={"job": "nightly-crawl"})
    saved = {name: os.environ.get(name) for name in ("BROWSERBASE_API_KEY", "BROWSERBASE_BASE_URL")}
    os.environ["BROWSERBASE_API_KEY"] = fake.api_key
    os.environ["BROWSERBASE_BASE_URL"] = fake.base_url
    stack.callback(_restore, saved)
    namespace["_stack"] = stack
    namespace["fake"] = fake


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _stop_fake(namespace: dict[str, Any]) -> None:
    namespace["_stack"].close()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    setup=_start_fake,
    teardown=_stop_fake,
).pytest()
