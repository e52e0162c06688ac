"""The ``browserbase-async`` command line (needs the ``cli`` extra: click and rich)."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command line; exit with its code."""
    try:
        from ._app import cli
    except ImportError as exc:  # pragma: no cover - only without the extra
        sys.stderr.write(
            f"browserbase-async: error: the command line needs its extra "
            f"(pip install 'browserbase-async[cli]'): {exc}\n"
        )
        sys.exit(2)
    cli()
