"""Durations in workflow files: ``500ms``, ``30s``, ``5m``, ``24h``, ``1h30m`` or seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# Anchored form of one or more parts; also published in the JSON Schema.
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*$"
_WHOLE = re.compile(DURATION_PATTERN)
EXPECTED = "expected a duration such as 500ms, 30s, 5m, 24h, 1h30m, or a number of seconds"


class DurationError(ValueError):
    """A value is not a duration; the message says what was wrong."""


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds; raises DurationError for anything that is not a duration."""
    # bool is an int subclass: `timeout: yes` must not become one second.
    if isinstance(value, bool):
        raise DurationError(f"{str(value).lower()} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            if not _WHOLE.match(text):
                raise DurationError(f"invalid duration {value!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise DurationError(f"a {type(value).__name__} is not a duration")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise DurationError(f"invalid duration {value!r}: must be a finite number >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds compactly (``500ms``, ``30s``, ``2m``); the inverse of parse_duration."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
