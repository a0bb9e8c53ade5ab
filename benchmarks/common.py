"""What every contender shares: the message models, the wire payloads and the run settings."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import orjson
from pydantic import BaseModel

MESSAGE_SIZE = 256  # bytes of every input payload
READY_LINE = "READY"

# Phases of one contender run; each carries its own sequence numbers 0..n-1.
BACKLOG = 0  # N messages produced before the contender starts: throughput, CPU
HALF_RATE = 1  # paced at 50% of the contender's own measured maximum: latency
FIXED_RATE = 2  # paced at a fixed rate (500 msg/s by default): latency target
PHASE_NAMES = {BACKLOG: "backlog", HALF_RATE: "half-rate", FIXED_RATE: "fixed-rate"}


class Order(BaseModel):
    """An input message (validated by every contender)."""

    id: str
    seq: int
    phase: int
    ts: int  # producer send time, epoch nanoseconds
    body: str


class Result(BaseModel):
    """What a contender publishes for each input."""

    id: str
    seq: int
    phase: int
    ts: int


def handle(order: Order) -> Result:
    """The no-op work every contender does for one validated input."""
    return Result(id=order.id, seq=order.seq, phase=order.phase, ts=order.ts)


def make_payload(run: str, phase: int, seq: int, ts_ns: int | None = None) -> bytes:
    """A JSON input of exactly ``MESSAGE_SIZE`` bytes (``body`` pads it)."""
    head = {
        "id": f"{run}-{phase}-{seq}",
        "seq": seq,
        "phase": phase,
        "ts": time.time_ns() if ts_ns is None else ts_ns,
        "body": "",
    }
    bare = orjson.dumps(head)
    pad = MESSAGE_SIZE - len(bare)
    if pad < 0:
        raise ValueError(f"run id {run!r} too long for a {MESSAGE_SIZE}-byte message")
    head["body"] = "x" * pad
    return orjson.dumps(head)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """Everything a contender process needs; passed to it as JSON on the command line."""

    contender: str
    broker: str  # "nats" | "kafka"
    url: str  # e.g. nats://127.0.0.1:4222 or kafka://127.0.0.1:9092
    topic_in: str
    topic_out: str
    group: str
    concurrency: int
    partitions: int = 1  # Kafka: partitions of the input topic
    stream_in: str = ""  # NATS: stream holding topic_in
    stream_out: str = ""  # NATS: stream holding topic_out
    state_dir: str = ""  # scratch directory (agentflow's SQLite idempotency store on Kafka)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        return cls(**orjson.loads(text))


def kafka_bootstrap(url: str) -> str:
    """``kafka://h1:9092,h2:9092`` -> ``h1:9092,h2:9092``."""
    return url.split("://", 1)[-1].rstrip("/")
