"""Smoke run of the benchmark harness (issue 7): tiny N, agentflow and the raw client only.

Asserts correctness only (the verifier saw every sequence number exactly once) and that a
results table came out; never timings. Needs no package beyond agentflow's own dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTENDERS = ("agentflow", "raw")


def _smoke(broker: str, url: str, out: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--broker",
        broker,
        "--url",
        url,
        "--n",
        "300",
        "--repeat",
        "1",
        "--contenders",
        ",".join(CONTENDERS),
        "--latency-seconds",
        "0.2",
        "--min-latency-messages",
        "100",
        "--quiet",
        "0",
        "--out",
        str(out),
        "--logs",
        str(out / "logs"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((out / "logs").glob("*.log"))
    )
    assert proc.returncode == 0, f"harness failed:\n{proc.stderr[-4000:]}\n{logs}"

    data = json.loads((out / "results" / f"{broker}.json").read_text())
    runs = {r["contender"]: r for r in data["runs"]}
    assert set(runs) == set(CONTENDERS)
    for name, run in runs.items():
        assert run["status"] == "ok", f"{name}: {run['status']} {run['detail']}\n{logs}"
        assert run["exit_code"] == 0, f"{name} did not stop cleanly\n{logs}"
        phases = run["delivery"]
        assert set(phases) == {"backlog", "half-rate", "fixed-rate"}, phases
        for phase, d in phases.items():
            assert d["missing"] == d["duplicates"] == d["unexpected"] == 0, (name, phase, d)
        assert phases["backlog"]["expected"] == 300

    table = (out / "RESULTS.md").read_text()
    for name in CONTENDERS:
        assert f"| {name} | exactly once |" in table


@pytest.mark.nats
def test_benchmark_smoke_nats(nats_url: str, tmp_path: Path) -> None:
    _smoke("nats", nats_url, tmp_path)


@pytest.mark.kafka
def test_benchmark_smoke_kafka(kafka_url: str, tmp_path: Path) -> None:
    _smoke("kafka", kafka_url, tmp_path)
