"""Test helpers: `FakeBrowserbase`, a loopback fake of the sessions API, and its fault plans.

For pytest, opt in to the fixtures with
``pytest_plugins = ["browserbase_async.testing.pytest_plugin"]`` in a ``conftest.py``.
"""

from ._fake import DEFAULT_API_KEY, Exchange, FakeBrowserbase, Fault, FaultPlan, Received

__all__ = ["DEFAULT_API_KEY", "Exchange", "FakeBrowserbase", "Fault", "FaultPlan", "Received"]
