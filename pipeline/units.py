"""Parsers for the seed's human spellings: `50%`, `100ms`, `5m`, `2_weeks`, `hourly`.

Each takes what YAML produced (a number or a string) and returns a plain number, raising
ValueError with a message pydantic shows next to the key's YAML line.
"""

from __future__ import annotations

import re

_DURATION_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}
_FREQUENCIES = {"minutely": 60.0, "hourly": 3600.0, "daily": 86400.0, "weekly": 604800.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[_ ]?\s*([a-z]+)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from `100ms`, `5m`, `2_weeks`, `1.5 hours`, `hourly`, or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 5m or 100ms, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _FREQUENCIES:
            return _FREQUENCIES[text]
        match = _DURATION_RE.match(text)
        if match and match.group(2) in _DURATION_UNITS:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(
        f"expected a duration such as 100ms, 5m, 2h, 2_weeks or hourly, got {value!r}"
    )


def parse_fraction(value: object) -> float:
    """A share in [0, 1] from `50%`, `0.5`, or `50` (a number above 1 is read as a percentage)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage such as 50% or a fraction such as 0.5, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(
                f"expected a percentage such as 50% or a fraction such as 0.5, got {value!r}"
            ) from None
    elif isinstance(value, (int, float)):
        number = float(value)
        if number > 1.0:
            number /= 100.0
    else:
        raise ValueError(f"expected a percentage such as 50%, got {value!r}")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"a share must lie between 0% and 100%, got {value!r}")
    return number


def parse_quantity(text: str) -> tuple[float, str]:
    """(value in base units, kind) for trigger thresholds: `5%` -> (0.05, 'fraction'),
    `500ms` -> (0.5, 'seconds'), `0.3` -> (0.3, 'number')."""
    text = text.strip()
    if text.endswith("%"):
        return parse_fraction(text), "fraction"
    try:
        return float(text.replace("_", "")), "number"
    except ValueError:
        return parse_duration(text), "seconds"
