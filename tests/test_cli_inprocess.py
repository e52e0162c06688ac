"""The command line's edges, run in this process with click's runner: no subprocess to wait for."""

from __future__ import annotations

import signal
from collections.abc import Iterable

import pytest
from click.testing import CliRunner

from browserbase_async import APIConnectionError
from browserbase_async._errors import for_status
from browserbase_async.cli import _app
from browserbase_async.cli._output import failure_kind


def test_an_insecure_base_url_is_one_line_and_exit_2() -> None:
    ran = CliRunner().invoke(
        _app.cli, ["release", "--api-key", "k", "--base-url", "http://example.com", "s-1"]
    )
    assert ran.exit_code == 2
    assert ran.output.startswith("browserbase-async: error: refusing to send the API key")
    assert "Traceback" not in ran.output


def test_ctrl_c_outside_a_release_is_exit_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(coroutine: object) -> int:
        coroutine.close()  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(_app.asyncio, "run", interrupted)
    ran = CliRunner().invoke(_app.cli, ["list", "--api-key", "k"])
    assert ran.exit_code == 130
    assert ran.output == ""


def test_an_ignored_ctrl_c_stays_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # A job started in the background by a script ignores Ctrl-C: the command leaves it so.
    during: list[object] = []

    def write_id_rows(_file: object, _rows: Iterable[object]) -> None:
        during.append(signal.getsignal(signal.SIGINT))

    monkeypatch.setattr(_app, "write_id_rows", write_id_rows)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ran = CliRunner().invoke(_app.cli, ["release", "--api-key", "k", "--dry-run", "s-1"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ran.exit_code == 0, ran.output
    assert during == [signal.SIG_IGN]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (for_status(400, {}, b""), "refused (400)"),
        (for_status(409, {}, b""), "refused (409)"),
        (for_status(502, {}, b""), "server error"),
        (for_status(429, {}, b""), "rate limited"),
        (APIConnectionError("reset"), "connection failed"),
        (RuntimeError("closed"), "RuntimeError"),
    ],
)
def test_failure_kinds(error: BaseException, kind: str) -> None:
    assert failure_kind(error) == kind
