"""Per-agent counters the CLI shows and tests read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class AgentStats:
    """What one agent did since its app started."""

    received: int = 0
    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    published: int = 0
    in_flight: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    # When the latest scheduled retry falls due (monotonic); idle detection waits past it.
    retry_due: float = 0.0

    def reset(self) -> None:
        """Zero the counters in place (holders of this object keep seeing live numbers)."""
        fresh = AgentStats()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def touch(self) -> None:
        """Record that something happened now (used by idle detection)."""
        self.last_activity = time.monotonic()

    def rate(self) -> float:
        """Completed messages per second since start."""
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        return (self.succeeded + self.dead_lettered + self.duplicates) / elapsed
