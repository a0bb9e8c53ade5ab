"""The crash-loop attempt record: per partition, what happened above the committed offset.

Kafka forgets a delivery the moment a worker dies, so a message that kills its worker on
every attempt would be redelivered forever with the same count. The record fixes that. It is
the metadata string of the group's offset commit for the partition: written to Kafka's own
compacted ``__consumer_offsets`` topic, keyed by group + topic + partition, atomically with
the offset, fenced by the group generation, and read back when a member is assigned the
partition. It is written once per fetched batch (and with every periodic commit), never once
per message.

Format (offsets relative to the committed offset ``C``)::

    af1 0:2 1-9:d 10-40:1

``0:2`` - offset C was handed out twice; ``1-9:d`` - C+1..C+9 are done (a later message
finished before an earlier one: the new owner skips them); ``10-40:1`` - handed out once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("agentflow.kafka")

__all__ = ["DONE", "MAX_METADATA_CHARS", "Run", "coarsen", "decode", "encode"]

PREFIX = "af1"
# A run state: DONE, or how many times the offsets were handed out (>= 1).
DONE = -1
# Brokers reject commit metadata above offset.metadata.max.bytes (4096 by default).
MAX_METADATA_CHARS = 3500
# Offsets are signed 64-bit in Kafka, and so in the native tracker that reads the record back.
_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Run:
    """Offsets ``start..end`` (inclusive, absolute) share one state (DONE or attempts)."""

    start: int
    end: int
    state: int


def encode(committed: int, runs: list[Run], limit: int = MAX_METADATA_CHARS) -> str:
    """The metadata string for ``runs`` above ``committed`` (coarsened to fit ``limit``)."""
    runs = [r for r in runs if r.end >= committed]
    text = _render(committed, runs)
    while len(text) > limit and runs:
        runs = coarsen(runs)
        text = _render(committed, runs)
    return text if runs else ""


def _render(committed: int, runs: list[Run]) -> str:
    parts = [PREFIX]
    for run in runs:
        start, end = max(run.start, committed) - committed, run.end - committed
        state = "d" if run.state == DONE else str(run.state)
        parts.append(f"{start}:{state}" if start == end else f"{start}-{end}:{state}")
    return " ".join(parts)


def coarsen(runs: list[Run]) -> list[Run]:
    """Halve the number of runs by merging neighbours, erring towards more attempts.

    A merged pair is DONE only if both were; otherwise it takes the higher attempt count, so
    information is lost only in the safe direction (redeliver, count no fewer attempts).
    """
    out: list[Run] = []
    for i in range(0, len(runs) - 1, 2):
        a, b = runs[i], runs[i + 1]
        state = DONE if a.state == DONE and b.state == DONE else max(a.state, b.state, 1)
        out.append(Run(a.start, b.end, state))
    if len(runs) % 2:
        out.append(runs[-1])
    return out


def decode(metadata: str | None, committed: int) -> list[Run]:
    """Runs from a commit's metadata; [] for empty, foreign or garbled metadata."""
    if not metadata or not metadata.startswith(PREFIX + " "):
        return []
    runs: list[Run] = []
    try:
        for token in metadata.split()[1:]:
            span, _, state_text = token.partition(":")
            first, _, last = span.partition("-")
            start = committed + int(first)
            end = committed + int(last) if last else start
            state = DONE if state_text == "d" else int(state_text)
            if end < start or (state != DONE and state < 1) or start < committed:
                raise ValueError(token)
            if end > _MAX_INT64 or state > _MAX_INT64:
                raise ValueError(f"out of range {token}")
            if runs and start <= runs[-1].end:
                raise ValueError(f"overlapping run {token}")
            runs.append(Run(start, end, state))
    except ValueError as exc:
        log.warning("ignoring a garbled agentflow attempt record %r (%s)", metadata[:200], exc)
        return []
    return runs
