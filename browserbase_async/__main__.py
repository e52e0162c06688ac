"""``python -m browserbase_async``: the command line."""

from .cli import main

main()
