"""App lifecycle: SIGTERM drains in-flight work; declaration errors are clear."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentflow import App, ConfigError
from agentflow.app import GC_YOUNG_THRESHOLD

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_finishes_in_flight_handlers_within_grace() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.apps.slow_app"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    started = 0
    deadline = time.monotonic() + 30
    while started < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("started"):
            started += 1
    assert started == 3, "all three handlers began"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.count("finished") == 3, out
    assert "stopped cleanly" in out


def test_sync_handler_is_a_clear_error() -> None:
    app = App("t", broker="memory://lifecycle")
    with pytest.raises(ConfigError, match="must be an async function"):
        # A sync handler is the point of this test; the decorator's bound rejects it statically.
        @app.agent(consumes="x")  # type: ignore[type-var]
        def not_async(msg: dict[str, str]) -> None:
            return None


def test_duplicate_agent_name_is_a_clear_error() -> None:
    app = App("t", broker="memory://lifecycle")

    async def h(msg: dict[str, str]) -> None:
        return None

    app.agent(consumes="a", name="same")(h)
    with pytest.raises(ConfigError, match="already has an agent named 'same'"):
        app.agent(consumes="b", name="same")(h)


def test_unresolvable_input_annotation_is_a_clear_error() -> None:
    app = App("t", broker="memory://lifecycle")
    with pytest.raises(TypeError, match="cannot resolve annotations"):

        @app.agent(consumes="x")
        async def bad(msg: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
            return None


async def test_start_tunes_the_cycle_collector_unless_told_not_to() -> None:
    import gc

    gc.unfreeze()
    before = gc.get_threshold()
    try:
        quiet = App("nofreeze", tune_gc=False)

        @quiet.agent("gc.in")
        async def a(msg: dict[str, int]) -> None:
            return None

        async with quiet:
            assert gc.get_freeze_count() == 0
            assert gc.get_threshold() == before
        app = App("freezes")

        @app.agent("gc.in")
        async def b(msg: dict[str, int]) -> None:
            return None

        async with app:
            assert gc.get_freeze_count() > 0, "start-up objects moved out of the collector"
            assert gc.get_threshold()[0] == max(before[0], GC_YOUNG_THRESHOLD)
            assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_threshold() == before, "the thresholds are given back on stop"
        # Two apps in one process: the setting is given back when the last one stops.
        first, second = App("gc-one"), App("gc-two")
        for one in (first, second):
            one.agent("gc.in")(b)
        await first.start()
        await second.start()
        await first.stop(grace=0.0)
        assert gc.get_threshold()[0] == max(before[0], GC_YOUNG_THRESHOLD), "second still runs"
        await second.stop(grace=0.0)
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
