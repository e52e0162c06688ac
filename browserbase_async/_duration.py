"""Durations as people write them (``90s``, ``30m``, ``1.5h``, ``2d``).

Read by the command line (``--older-than``, ``--watch``) and by the shell fake
(``python -m browserbase_async.testing --aged 5:2h``); it needs no extra, so it
lives below both, and neither imports the other.
"""

from __future__ import annotations

import math
import re
from typing import Final

_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_SECONDS_PER: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Read a duration: a number with a unit ``s``, ``m``, ``h`` or ``d``; bare, seconds.

    Returns:
        Seconds.

    Raises:
        ValueError: *text* is not a duration; the message names it and the form expected.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    seconds = float(match[1]) * _SECONDS_PER[match[2]] if match else math.nan
    if not math.isfinite(seconds):
        raise ValueError(
            f"{text!r} is not a duration: a number with a unit s, m, h or d "
            "(90s, 30m, 1.5h, 2d); a bare number is seconds"
        )
    return seconds
