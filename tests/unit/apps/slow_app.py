"""An app for the SIGTERM test: three slow handlers in flight when the signal arrives."""

from __future__ import annotations

import asyncio
import sys

from agentflow import App
from agentflow.app import run_until_signal

app = App("slow", broker="memory://slow", grace_period=10.0)


@app.agent(consumes="jobs", concurrency=3, timeout=10)
async def work(job: dict[str, int]) -> None:
    print(f"started {job['n']}", flush=True)
    await asyncio.sleep(1.0)
    print(f"finished {job['n']}", flush=True)


async def main(app: App) -> None:
    for n in range(3):
        await app.publish("jobs", {"n": n}, key=f"k{n}")
    await asyncio.sleep(3600)  # run until signalled


if __name__ == "__main__":
    run_until_signal(app, main)
    print("stopped cleanly", flush=True)
    sys.exit(0)
