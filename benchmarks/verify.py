"""The verifier's arithmetic: exactly-once per sequence number, throughput, percentiles."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.side import OutRecord


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the output topic held for one phase."""

    expected: int
    missing: int
    duplicates: int  # extra copies beyond the first
    unexpected: int  # sequence numbers outside 0..expected-1

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.unexpected == 0


def check_phase(records: Iterable[OutRecord], phase: int, expected: int) -> Delivery:
    """Every sequence number 0..expected-1 of ``phase`` exactly once?"""
    counts = Counter(r.seq for r in records if r.phase == phase)
    missing = sum(1 for s in range(expected) if s not in counts)
    duplicates = sum(c - 1 for s, c in counts.items() if c > 1 and 0 <= s < expected)
    unexpected = sum(c for s, c in counts.items() if not 0 <= s < expected)
    return Delivery(expected, missing, duplicates, unexpected)


def steady_throughput(stamps_ns: Sequence[int], trim: float = 0.1) -> float:
    """Messages per second between the ``trim`` and ``1 - trim`` quantiles of arrival times:
    the steady state, without the start-up ramp and the drain at the end."""
    if len(stamps_ns) < 10:
        return float("nan")
    ordered = sorted(stamps_ns)
    lo = int(len(ordered) * trim)
    hi = int(len(ordered) * (1 - trim)) - 1
    span = (ordered[hi] - ordered[lo]) / 1e9
    return (hi - lo) / span if span > 0 else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rate_from_samples(samples: Sequence[tuple[float, int]], total: int, trim: float = 0.1) -> float:
    """Throughput from (time, count) polls: the slope between the ``trim`` and ``1 - trim``
    fractions of ``total`` (a live estimate used to pace the latency phase)."""
    lo_n, hi_n = total * trim, total * (1 - trim)
    lo = next((s for s in samples if s[1] >= lo_n), None)
    hi = next((s for s in samples if s[1] >= hi_n), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        first, last = samples[0], samples[-1]
        span = last[0] - first[0]
        return (last[1] - first[1]) / span if span > 0 else float("nan")
    return (hi[1] - lo[1]) / (hi[0] - lo[0])
