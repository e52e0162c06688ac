"""The test suite on every Python that pyproject.toml claims: ``nox -s tests``.

`.ci/run` runs one session per interpreter it finds on the machine (``tests-3.12`` ...), and
says so loudly for one it does not find. The README's own test command runs the suite on the
default Python, as before.
"""

from __future__ import annotations

import nox

PYTHONS = ["3.11", "3.12", "3.13"]

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install the package with its test extra, then run the suite as the README does."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)
