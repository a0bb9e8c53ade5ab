"""What the results were measured on: hardware, software versions, the exact source revision."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.side import Side

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "nats-py",
    "aiokafka",
    "pydantic",
    "orjson",
    "uvloop",
    "faststream",
    "faust-streaming",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def describe_machine(side: Side, agentflow_src: Path | None = None) -> dict[str, Any]:
    if agentflow_src is not None:
        stamp = agentflow_src / "AGENTFLOW_COMMIT"
        label = stamp.read_text().strip() if stamp.exists() else "unknown commit"
        source = f"{label} (snapshot in {agentflow_src})"
    else:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--", "agentflow", "rust_ext"))
        source = commit + (" (+ uncommitted changes)" if dirty else "")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_mem_gib(), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "broker": await side.server_version(),
        "agentflow_commit": source,
        "packages": {name: _version(name) for name in PACKAGES},
    }
