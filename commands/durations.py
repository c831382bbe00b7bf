"""Durations as people write them on a command line: ``90s``, ``30m``, ``12h``, ``90d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,6})([smhdw])")


def parse_duration(text: str) -> timedelta | None:
    """The duration of ``text`` (a number and a unit), None if it is not one."""
    match = _DURATION.fullmatch(text.strip())
    return None if match is None else timedelta(seconds=int(match[1]) * UNITS[match[2]])
