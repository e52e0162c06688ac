"""``browserbase-async demo --scrape``: the whole life of many sessions, on a full plan."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from browserbase_async.cli import _app
from browserbase_async.cli._scrape import ScrapeFigures, run_scrape


@pytest.mark.asyncio
async def test_the_scrape_demo_leaves_nothing_running_and_finds_every_lost_answer() -> None:
    figures = await run_scrape(workers=40, browsers=5, use=0.0, seed=3, lost_rate=0.2)
    assert figures.ok
    assert figures.created == figures.released == 40
    assert figures.left_running == 0
    assert figures.lost > 0
    assert figures.recovered == figures.lost
    assert figures.flow_refusals == 0
    assert figures.flow_pauses == 0
    assert "left RUNNING on the server 0" in "\n".join(figures.lines())


def test_the_scrape_demo_from_the_command_line() -> None:
    ran = CliRunner().invoke(
        _app.cli, ["demo", "--scrape", "--workers", "12", "--browsers", "3", "--use", "0"]
    )
    assert ran.exit_code == 0, ran.output
    assert "created 12" in ran.output
    assert "left RUNNING on the server 0" in ran.output


def test_a_scrape_that_leaked_says_so() -> None:
    leaky = ScrapeFigures(
        workers=2, browsers=1, use=0.0, elapsed=1.0, ideal=1.0, created=2, waited=0,
        waited_seconds=0.0, refused=0, lost=0, recovered=0, released=1, left_running=1,
        failures={"APIConnectionError": 1}, flow_refusals=0, flow_pauses=0,
    )  # fmt: skip
    assert not leaky.ok
    assert "failed: 1 APIConnectionError" in "\n".join(leaky.lines())


# -- the shell fake's plan options -------------------------------------------------------------


@pytest.mark.parametrize("args", [["--max-browsers", "0"], ["--creates-per-minute", "x"]])
def test_the_shell_fakes_plan_options_are_checked(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from browserbase_async.testing.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "--" in capsys.readouterr().err


def test_the_shell_fake_takes_a_plan() -> None:
    from browserbase_async.testing.__main__ import parse_options

    serving = parse_options(["--max-browsers", "25", "--creates-per-minute", "50"])
    assert serving.plan.max_browsers == 25
    assert serving.plan.creates_per_minute == 50
    assert "25 browsers (creates) and 50 creates a minute" in serving.describe()
