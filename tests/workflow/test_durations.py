from __future__ import annotations

import pytest

from agentflow.workflow.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        (" 2m ", 120.0),
        ("10", 10.0),
        ("0.25", 0.25),
        (3, 3.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_parses(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["30 sec", "5 minutes", "ms", "-1s", "1x", "", True, None, [1], -2])
def test_rejects(bad: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(bad)


@pytest.mark.parametrize("seconds", [0.5, 30.0, 120.0, 3600.0, 86400.0, 45.5])
def test_format_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
