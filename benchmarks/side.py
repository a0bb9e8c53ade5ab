"""The harness's own view of a broker: topics per run, producers, the verifier's reads.

One implementation per broker (:mod:`benchmarks.nats_side`, :mod:`benchmarks.kafka_side`).
The harness side never shares a process with a contender.
"""

from __future__ import annotations

import abc
import asyncio
import time
from dataclasses import dataclass, field

import orjson

from benchmarks.common import make_payload


@dataclass(frozen=True, slots=True)
class Topics:
    """The input/output topics (and NATS streams) of one contender run."""

    topic_in: str
    topic_out: str
    group: str
    stream_in: str = ""
    stream_out: str = ""


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One message read back from the output topic."""

    phase: int
    seq: int
    stored_ns: int  # broker's stored/append time


@dataclass
class Listener:
    """Live end-to-end latencies: first arrival of each (phase, seq) minus its send time."""

    latencies_ns: dict[tuple[int, int], int] = field(default_factory=dict)
    arrivals: int = 0

    def on_payload(self, data: bytes) -> None:
        now = time.time_ns()
        self.arrivals += 1
        try:
            doc = orjson.loads(data)
            key = (int(doc["phase"]), int(doc["seq"]))
            ts = int(doc["ts"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        self.latencies_ns.setdefault(key, now - ts)

    def count(self, phase: int) -> int:
        return sum(1 for p, _ in self.latencies_ns if p == phase)


class Side(abc.ABC):
    """Harness-side broker operations."""

    broker: str

    @abc.abstractmethod
    async def open(self) -> None: ...

    async def server_version(self) -> str:
        """The broker's version, as far as the client can tell."""
        return "unknown"

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create(self, run: str) -> Topics:
        """Fresh topics for one contender run."""

    @abc.abstractmethod
    async def delete(self, topics: Topics) -> None: ...

    @abc.abstractmethod
    async def send(self, topics: Topics, payloads: list[bytes]) -> None:
        """Send payloads to the input topic; return once the broker accepted all of them."""

    @abc.abstractmethod
    async def send_one(self, topics: Topics, payload: bytes) -> None:
        """Send one payload without waiting for the broker (paced producer)."""

    @abc.abstractmethod
    async def flush(self, topics: Topics) -> None:
        """Wait until everything ``send_one`` sent was accepted."""

    @abc.abstractmethod
    async def in_count(self, topics: Topics) -> int:
        """Messages stored in the input topic."""

    @abc.abstractmethod
    async def out_count(self, topics: Topics) -> int:
        """Messages stored in the output topic."""

    @abc.abstractmethod
    async def settled(self, topics: Topics) -> bool:
        """Whether the contender's group acknowledged/committed every input."""

    @abc.abstractmethod
    async def listen(self, topics: Topics, topic: str, listener: Listener) -> None:
        """Start feeding new messages of ``topic`` to ``listener`` (until ``unlisten``)."""

    @abc.abstractmethod
    async def unlisten(self) -> None:
        """Stop every listener."""

    @abc.abstractmethod
    async def read_out(self, topics: Topics, timeout: float) -> list[OutRecord]:
        """Read the whole output topic back (the verifier)."""

    async def produce_backlog(self, topics: Topics, run: str, phase: int, n: int) -> None:
        """Produce ``n`` sequence-numbered messages in bounded chunks."""
        chunk = 2000
        for start in range(0, n, chunk):
            batch = [make_payload(run, phase, s) for s in range(start, min(n, start + chunk))]
            await self.send(topics, batch)

    async def produce_paced(
        self, topics: Topics, run: str, phase: int, n: int, rate: float
    ) -> float:
        """Send ``n`` messages at ``rate`` msg/s, each stamped at its send time; returns the
        rate actually achieved."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while sent < n:
            due = min(n, int((loop.time() - start) * rate) + 1)
            while sent < due:
                await self.send_one(topics, make_payload(run, phase, sent))
                sent += 1
            wait = sent / rate - (loop.time() - start)
            await asyncio.sleep(max(wait, 0.0))
        elapsed = loop.time() - start
        await self.flush(topics)
        return n / elapsed if elapsed > 0 else float(n)
