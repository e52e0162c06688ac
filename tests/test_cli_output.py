"""What the command line writes for other programs: ids one a line that ``--from-file`` reads
back as they were, rows that a reader who stops reading cannot hold up, and ``--from-file -``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from browserbase_async.cli import _app
from browserbase_async.testing import FakeBrowserbase

# Ids a server could send that would not survive a line of their own: each would become two
# lines, a shorter id, a comment or a blank line in a file fed back to --from-file.
ODD_IDS = ("s-nl\ninjected", "s-tab\there", " s-space", "#s-hash", "s-ls\u2028x", "s-cr\r", "")


def _read_back(text: str, tmp_path: Path) -> list[str]:
    """The ids that ``release --from-file`` reads from *text*."""
    source = tmp_path / "ids.txt"
    source.write_text(text, encoding="utf-8", newline="")
    return _app._read_ids(str(source))


@pytest.mark.off_spec  # ids no server should send: what a file of ids must survive
@pytest.mark.parametrize(
    "command",
    [("list",), ("release", "--all", "--dry-run"), ("release", "--dry-run", "s-plain", *ODD_IDS)],
    ids=["list", "--all --dry-run", "--dry-run IDS"],
)
def test_an_id_that_would_not_read_back_is_never_printed_raw(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    listed = command[-1] != ODD_IDS[-1]
    odd = [session_id for session_id in ODD_IDS if session_id or not listed]  # no empty id listed
    with FakeBrowserbase.in_thread() as fake:
        fake.add_session("s-plain")
        for session_id in odd if listed else ():
            fake.add_session(session_id, region="us\twest")
        connection = ["--api-key", fake.api_key, "--base-url", fake.base_url]
        ran = CliRunner().invoke(_app.cli, [*command, *connection])
    assert ran.exit_code == 0, ran.output
    lines = ran.stdout.splitlines()
    if command[0] == "list":
        assert all(len(line.split("\t")) == 5 for line in lines), lines  # one row a session
        lines = [line.split("\t")[0] for line in lines]
    # One line a session: the plain id as it is, the others as JSON strings.
    assert sorted(lines) == sorted(["s-plain", *map(json.dumps, odd)])
    # Fed back, no line becomes another id: each odd one is one invalid id, never released.
    read_back = _read_back("".join(f"{line}\n" for line in lines), tmp_path)
    assert sorted(read_back) == sorted(lines)
    warning = ran.stderr.splitlines()[0]
    assert warning.startswith(f"browserbase-async: {len(odd)} session ids printed as JSON strings")


def test_the_failed_out_file_holds_each_failed_id_on_one_line(tmp_path: Path) -> None:
    # `release $'a\nb'`: an invalid id; written raw, the file would release "a" and "b".
    failed = tmp_path / "failed.txt"
    offline = ["--api-key", "k", "--base-url", "http://127.0.0.1:9", "--quiet"]
    args = ["release", *offline, "--failed-out", str(failed), "s-a\ns-b", "#s-c"]
    ran = CliRunner().invoke(_app.cli, args)
    assert ran.exit_code == 1, ran.output
    assert failed.read_text().splitlines() == [json.dumps("s-a\ns-b"), json.dumps("#s-c")]
    assert _read_back(failed.read_text(), tmp_path) == [json.dumps("s-a\ns-b"), '"#s-c"']


def test_from_file_reads_every_id_before_it_releases_one(tmp_path: Path) -> None:
    # docs/cli.md: the ids are read to the end first (cli.md's total, its progress bar and
    # --failed-out need them all), so one file can be read, and then rewritten, by one run.
    ids = tmp_path / "ids.txt"
    with FakeBrowserbase.in_thread() as fake:
        ids.write_text("".join(f"{sid}\n" for sid in [*fake.add_sessions(3), "s-gone"]))
        connection = ["--api-key", fake.api_key, "--base-url", fake.base_url]
        args = ["release", *connection, "--from-file", str(ids), "--failed-out", str(ids)]
        ran = CliRunner().invoke(_app.cli, args)
    assert ran.exit_code == 1, ran.output
    assert ran.stderr.startswith("released 3 of 4 sessions, 1 failed (1 not found)")
    assert ids.read_text() == "s-gone\n"
