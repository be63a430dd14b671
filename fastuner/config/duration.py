"""Durations as people write them in fastuner.yaml: "90s", "90m", "8h", "2d", "1h30m", "1w"."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")
PATTERN = r"^([0-9]+(\.[0-9]+)?[smhdw])+$"


def parse_duration(value: Any) -> timedelta:
    """Parse "8h", "1h30m", "2d"; a timedelta passes through. Bare numbers are refused: the unit matters."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"expected a duration such as \"90m\", \"8h\" or \"2d\", got {value!r}"
            + (" (add a unit: s, m, h, d or w)" if isinstance(value, int | float) and not isinstance(value, bool) else "")
        )
    text = value.strip().lower().replace(" ", "")
    if not _WHOLE.match(text):
        raise ValueError(f"invalid duration {value!r}: use a number and a unit (s, m, h, d, w), e.g. \"90m\", \"8h\", \"1h30m\"")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 28800 s → "8h", 5400 s → "1h30m"."""
    total = round(value.total_seconds())
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def format_elapsed(seconds: float) -> str:
    """Elapsed times and ETAs in the spec's own duration format, the one format a user reads anywhere:
    whole seconds under an hour ("45s", "2m47s"), whole minutes above ("1h5m": a live estimate that
    long needs no seconds)."""
    total = max(0, round(seconds))
    if total >= 3600:
        total = round(total / 60) * 60
    return format_duration(timedelta(seconds=total))


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": PATTERN, "examples": ["90m", "8h", "2d"]}),
]
