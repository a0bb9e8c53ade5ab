"""The contenders: one module each, all with ``async def run(spec, ready, stop)``.

``run`` connects, starts consuming ``spec.topic_in``, calls ``ready()`` once it consumes, and
returns after ``stop`` is set, having stopped cleanly (in-flight work finished or handed back).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.common import ChildSpec

RunFn = Callable[[ChildSpec, Callable[[], None], asyncio.Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    brokers: tuple[str, ...]
    # Optional packages it needs beyond agentflow's own dependencies (the `bench` extra).
    needs: tuple[str, ...] = ()

    def module(self, broker: str) -> str:
        """The module implementing this contender on ``broker``."""
        base = self.name.replace("-idem", "").replace("-", "_")
        if base == "agentflow":
            return "benchmarks.contenders.agentflow_app"
        return f"benchmarks.contenders.{base}_{broker}"

    def missing(self) -> list[str]:
        """Packages this contender needs that are not installed."""
        return [n for n in self.needs if importlib.util.find_spec(n) is None]


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("agentflow", ("nats", "kafka")),
        Contender("agentflow-idem", ("nats", "kafka")),
        Contender("faststream", ("nats", "kafka"), ("faststream",)),
        Contender("raw", ("nats", "kafka")),
        Contender("faust", ("kafka",), ("faust",)),
    )
}
DEFAULT_ORDER = ("agentflow", "agentflow-idem", "faststream", "raw", "faust")
