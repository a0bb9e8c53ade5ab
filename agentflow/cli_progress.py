"""Progress of a running app: a live table on a terminal, plain lines otherwise, and a summary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from agentflow.stats import AgentStats

LIVE_REFRESH = 0.25
PLAIN_INTERVAL = 2.0
# Parenthesised so it cannot be mistaken for an agent named "total".
TOTAL = "(total)"


@dataclass(frozen=True)
class Totals:
    """The numbers of the final summary for one agent (or all of them)."""

    received: int = 0
    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0

    @classmethod
    def of(cls, s: AgentStats) -> Totals:
        """Snapshot one agent's counters."""
        return cls(s.received, s.succeeded, s.duplicates, s.retried, s.dead_lettered)

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.received + other.received,
            self.processed + other.processed,
            self.duplicates + other.duplicates,
            self.retried + other.retried,
            self.dead_lettered + other.dead_lettered,
        )


def _snapshot(stats: Mapping[str, AgentStats]) -> dict[str, Totals]:
    return {name: Totals.of(s) for name, s in stats.items()}


def live_table(stats: Mapping[str, AgentStats]) -> Table:
    """The per-agent table shown while the app runs."""
    table = Table(title="agentflow", title_justify="left", expand=False)
    for col in ("agent", "received", "succeeded", "retried", "dead-lettered", "in flight"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    table.add_column("rate", justify="right")
    for name, s in stats.items():
        table.add_row(
            name,
            str(s.received),
            str(s.succeeded),
            str(s.retried),
            str(s.dead_lettered),
            str(s.in_flight),
            f"{s.rate():.1f}/s",
        )
    return table


def plain_line(stats: Mapping[str, AgentStats]) -> str:
    """One progress line for logs and pipes."""
    parts = [
        f"{name}: received={s.received} succeeded={s.succeeded} retried={s.retried} "
        f"dead-lettered={s.dead_lettered} rate={s.rate():.1f}/s"
        for name, s in stats.items()
    ]
    return "progress | " + " | ".join(parts)


async def watch(stats: Mapping[str, AgentStats], console: Console) -> None:
    """Show progress until cancelled: live on a terminal, a line per change otherwise."""
    if console.is_terminal:
        with Live(live_table(stats), console=console, transient=True, auto_refresh=False) as live:
            while True:
                live.update(live_table(stats), refresh=True)
                await asyncio.sleep(LIVE_REFRESH)
    last: dict[str, Totals] | None = None
    while True:
        await asyncio.sleep(PLAIN_INTERVAL)
        now = _snapshot(stats)
        # Only when something moved: an idle service should not fill its log with copies.
        if now != last:
            console.print(plain_line(stats))
            last = now


def print_summary(stats: Mapping[str, AgentStats], console: Console, elapsed: float) -> None:
    """The closing summary: processed / retried / dead-lettered per agent and in total."""
    per_agent = _snapshot(stats)
    total = sum(per_agent.values(), Totals())
    if console.is_terminal:
        table = Table(title=f"summary ({elapsed:.1f}s)", title_justify="left")
        for col in ("agent", "processed", "retried", "dead-lettered", "duplicates", "received"):
            table.add_column(col, justify="left" if col == "agent" else "right")
        rows = [*per_agent.items(), (TOTAL, total)]
        for i, (name, t) in enumerate(rows):
            last = i == len(rows) - 1
            table.add_row(
                name,
                str(t.processed),
                str(t.retried),
                str(t.dead_lettered),
                str(t.duplicates),
                str(t.received),
                end_section=i == len(rows) - 2,
                style="bold" if last else None,
            )
        console.print(table)
        return
    # Plain, stable key=value lines: easy to grep in CI logs.
    console.print(f"summary ({elapsed:.1f}s)")
    width = max((len(n) for n in per_agent), default=5)
    for name, t in [*per_agent.items(), (TOTAL, total)]:
        console.print(f"  {name:<{max(width, len(TOTAL))}}  {_fields(t)}")


def _fields(t: Totals) -> str:
    return (
        f"processed={t.processed} retried={t.retried} dead-lettered={t.dead_lettered} "
        f"duplicates={t.duplicates} received={t.received}"
    )


async def cancel_quietly(task: asyncio.Task[None]) -> None:
    """Cancel a watcher task and wait for it to finish."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
