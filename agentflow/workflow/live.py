"""The per-agent view ``agentflow run`` shows: a live table on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

COLUMNS = ("received", "succeeded", "retried", "dead_lettered")


class StatsLike(Protocol):
    """The counters read from :class:`agentflow.stats.AgentStats`."""

    received: int
    succeeded: int
    retried: int
    dead_lettered: int
    duplicates: int


@dataclass
class _Sample:
    at: float
    done: int


@dataclass
class RateMeter:
    """Messages per second over the last sampling interval, per agent."""

    last: dict[str, _Sample] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)

    def update(self, stats: Mapping[str, StatsLike], now: float) -> None:
        """Take a sample of every agent's completed-message count."""
        for name, s in stats.items():
            done = s.succeeded + s.dead_lettered + s.duplicates
            prev = self.last.get(name)
            if prev is not None and now > prev.at:
                self.rates[name] = max(done - prev.done, 0) / (now - prev.at)
            self.last[name] = _Sample(now, done)


def table(title: str, stats: Mapping[str, StatsLike], rates: Mapping[str, float]) -> Table:
    """A rich table of every agent's counters and current rate."""
    t = Table(title=title, title_justify="left", expand=False)
    t.add_column("agent", style="bold")
    for col in COLUMNS:
        t.add_column(col.replace("_", "-"), justify="right")
    t.add_column("dup", justify="right")
    t.add_column("msg/s", justify="right")
    for name, s in stats.items():
        dead = f"[red]{s.dead_lettered}[/red]" if s.dead_lettered else "0"
        retried = f"[yellow]{s.retried}[/yellow]" if s.retried else "0"
        t.add_row(
            name,
            str(s.received),
            str(s.succeeded),
            retried,
            dead,
            str(s.duplicates),
            f"{rates.get(name, 0.0):.1f}",
        )
    return t


def line(name: str, s: StatsLike, rate: float) -> str:
    """One plain-text status line of one agent."""
    return (
        f"{name}: received={s.received} succeeded={s.succeeded} retried={s.retried} "
        f"dead-lettered={s.dead_lettered} duplicates={s.duplicates} rate={rate:.1f}/s"
    )


class View:
    """Shows progress while a workflow runs; ``close`` prints the final summary."""

    def __init__(self, title: str, stats: Mapping[str, StatsLike], out: IO[str] | None = None):
        self.title = title
        self.stats = stats
        self.console = Console(file=out, highlight=False)
        self.meter = RateMeter()
        self.started = time.monotonic()
        self._printed: dict[str, tuple[int, ...]] = {}
        self._live: Live | None = None
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, refresh_per_second=4)
            self._live.start()

    def _table(self) -> Table:
        return table(self.title, self.stats, self.meter.rates)

    def refresh(self) -> None:
        """Sample the counters and redraw (or print lines for agents whose counters moved)."""
        self.meter.update(self.stats, time.monotonic())
        if self._live is not None:
            self._live.update(self._table())
            return
        for name, s in self.stats.items():
            now = (s.received, s.succeeded, s.retried, s.dead_lettered, s.duplicates)
            if self._printed.get(name) != now:
                self._printed[name] = now
                self.console.print(
                    line(name, s, self.meter.rates.get(name, 0.0)), soft_wrap=True, markup=False
                )

    def close(self) -> None:
        """Stop the live view and print the summary."""
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        totals = {c: sum(getattr(s, c) for s in self.stats.values()) for c in COLUMNS}
        self.console.print(
            f"summary: {self.title} ran {elapsed:.1f}s; "
            + " ".join(f"{k.replace('_', '-')}={v}" for k, v in totals.items()),
            soft_wrap=True,
            markup=False,
        )
        for name, s in self.stats.items():
            done = s.succeeded + s.dead_lettered + s.duplicates
            self.console.print("  " + line(name, s, done / elapsed), soft_wrap=True, markup=False)
