"""Handlers of workflows/sensor_anomaly.yaml: split batches, score readings, alert.

Scoring is a z-score against fixed per-kind baselines, so the example is deterministic.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

log = logging.getLogger("sensor_anomaly")


class Sample(BaseModel):
    """One measurement at a time (epoch seconds)."""

    ts: int
    value: float


class Batch(BaseModel):
    """What a gateway uploads: several samples of one sensor."""

    sensor: str
    kind: str
    samples: list[Sample]


class Reading(BaseModel):
    """One sample of one sensor."""

    sensor: str
    kind: str
    ts: int
    value: float


class Scored(Reading):
    """A reading with its distance from the baseline, in standard deviations."""

    zscore: float


class Anomaly(Scored):
    """A reading far enough from normal to act on."""

    severity: str
    alert_id: str


# kind -> (mean, standard deviation) of normal operation
BASELINES = {"temperature": (60.0, 5.0), "vibration": (2.0, 0.4), "pressure": (100.0, 8.0)}
WARNING_Z = 2.5
CRITICAL_Z = 4.0


async def split(batch: Batch) -> list[Reading]:
    """Fan a batch out into one message per reading (a returned list is published item by item)."""
    return [
        Reading(sensor=batch.sensor, kind=batch.kind, ts=s.ts, value=s.value) for s in batch.samples
    ]


async def score(reading: Reading) -> Scored:
    """Compute the z-score of a reading against its kind's baseline."""
    mean, std = BASELINES.get(reading.kind, (reading.value, 1.0))
    return Scored(**reading.model_dump(), zscore=round(abs(reading.value - mean) / std, 3))


async def archive(reading: Scored) -> None:
    """Keep every scored reading (here: a debug log line); publishes nothing."""
    log.debug("archived %s@%d z=%.2f", reading.sensor, reading.ts, reading.zscore)


async def detect(reading: Scored) -> Anomaly | None:
    """Flag readings beyond the warning threshold; normal ones end here (None)."""
    if reading.zscore < WARNING_Z:
        return None
    severity = "critical" if reading.zscore >= CRITICAL_Z else "warning"
    alert_id = f"{reading.sensor}@{reading.ts}"
    return Anomaly(**reading.model_dump(), severity=severity, alert_id=alert_id)


async def page(anomaly: Anomaly) -> None:
    """Wake someone up for a critical anomaly."""
    log.warning("PAGE %s: %s z=%.1f", anomaly.alert_id, anomaly.kind, anomaly.zscore)


async def open_ticket(anomaly: Anomaly) -> None:
    """File a maintenance ticket (once per alert: the agent is idempotent on alert_id)."""
    log.info("ticket for %s (%s)", anomaly.alert_id, anomaly.severity)
