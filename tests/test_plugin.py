"""The opt-in pytest plugin, used as a user's project uses it: a test project of its own."""

from __future__ import annotations

import pytest

from browserbase_async.testing.pytest_plugin import _ini, loop_scope_mismatch

pytest_plugins = ["pytester"]

STRICT_AND_WARNINGS_AS_ERRORS = (
    "-p",
    "no:cacheprovider",
    "-W",
    "error",
    "-o",
    "asyncio_mode=strict",
)


def test_the_fixtures_from_a_project_of_its_own(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["browserbase_async.testing.pytest_plugin"]\n')
    pytester.makepyfile(
        """
        import pytest

        from browserbase_async import SessionsAPI


        @pytest.mark.asyncio
        async def test_release(fake_browserbase, browserbase_api) -> None:
            (sid,) = fake_browserbase.add_sessions(1)
            assert isinstance(browserbase_api, SessionsAPI)
            assert browserbase_api.base_url == fake_browserbase.base_url
            assert browserbase_api.retry.initial_delay == 0.001
            session = await browserbase_api.release(sid)
            assert session.status == "COMPLETED"
            assert fake_browserbase.status(sid) == "COMPLETED"


        @pytest.mark.asyncio
        async def test_each_test_gets_its_own_fake(fake_browserbase) -> None:
            assert fake_browserbase.sessions == {}
            assert fake_browserbase.received.total == 0
        """
    )
    result = pytester.runpytest_inprocess(
        *STRICT_AND_WARNINGS_AS_ERRORS, "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=2)


def test_the_fault_marker_takes_a_plan_and_nothing_else(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["browserbase_async.testing.pytest_plugin"]\n')
    pytester.makepyfile(
        """
        import pytest

        from browserbase_async.testing import FaultPlan


        @pytest.mark.asyncio
        @pytest.mark.browserbase_faults(plan=FaultPlan(error_rate=0.5))
        async def test_by_keyword(fake_browserbase) -> None:
            assert fake_browserbase.faults.error_rate == 0.5


        @pytest.mark.asyncio
        @pytest.mark.browserbase_faults({"error_rate": 0.5})
        async def test_not_a_plan(fake_browserbase) -> None:
            pass
        """
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--strict-markers",
        "-o",
        "asyncio_mode=strict",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*browserbase_faults takes a FaultPlan, got {'error_rate': 0.5}*"])


LOOP_SCOPED_TESTS = """
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_release(fake_browserbase, browserbase_api) -> None:
    (sid,) = fake_browserbase.add_sessions(1)
    assert (await browserbase_api.release(sid)).status == "COMPLETED"
"""


def run_loop_scoped(pytester: pytest.Pytester, fixture_loop_scope: str) -> pytest.RunResult:
    """Run `LOOP_SCOPED_TESTS` as a project whose fixtures use *fixture_loop_scope*."""
    pytester.makeconftest('pytest_plugins = ["browserbase_async.testing.pytest_plugin"]\n')
    pytester.makepyfile(LOOP_SCOPED_TESTS)
    return pytester.runpytest_inprocess(
        *STRICT_AND_WARNINGS_AS_ERRORS,
        "-o",
        f"asyncio_default_fixture_loop_scope={fixture_loop_scope}",
        # Were the fake left on an idle loop, the release would wait for this timeout.
        "-o",
        "timeout=20",
    )


def test_a_test_on_another_loop_than_the_fixtures_fails_at_once(pytester: pytest.Pytester) -> None:
    result = run_loop_scoped(pytester, "function")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*fake_browserbase is served on the function-scoped event loop, but this test runs on "
            "the module-scoped one*set asyncio_default_fixture_loop_scope = module*"
        ]
    )


def test_a_test_on_the_fixtures_loop_scope_runs(pytester: pytest.Pytester) -> None:
    run_loop_scoped(pytester, "module").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "settings", "wrong"),
    [
        ({}, {}, False),
        ({"loop_scope": "module"}, {"asyncio_default_fixture_loop_scope": "module"}, False),
        ({"scope": "module"}, {"asyncio_default_fixture_loop_scope": "fixture-scope"}, True),
        ({}, {"asyncio_default_test_loop_scope": "session"}, True),
    ],
)
def test_the_loop_scopes_are_compared_as_pytest_asyncio_sets_them(
    marker: dict[str, str], settings: dict[str, str], wrong: bool
) -> None:
    problem = loop_scope_mismatch(marker, settings.get)
    assert (problem is not None) is wrong


def test_an_unknown_setting_reads_as_unset(pytestconfig: pytest.Config) -> None:
    assert _ini(pytestconfig, "no_such_setting") is None
    assert _ini(pytestconfig, "asyncio_default_fixture_loop_scope") == "function"
