"""Worker processes for the end-to-end NATS tests: ``python -m tests.nats.workers``.

Configured through the environment (``AF_TEST_*``) so the test harness can start, SIGKILL and
restart identical workers. Effects go to a SQLite file shared by all workers:

- mode ``share``: agent ``work`` on ``<prefix>.jobs`` logs ``(id, pid)`` for every run.
- mode ``pipeline``: agent ``process`` turns ``<prefix>.orders`` into ``<prefix>.effects``
  (kind ``fail`` always raises, kind ``crash`` kills the process: both are poison); agent
  ``sink`` (idempotent on ``id``) upserts each effect by id and counts how often it wrote.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import sys
from pathlib import Path

from pydantic import BaseModel

from agentflow import App, Context, RetryPolicy
from agentflow.app import run_until_signal

# Exit status of a worker killed by a crash-looping order.
CRASH_EXIT = 17

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (id TEXT NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS retried (id TEXT NOT NULL, attempt INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS effects (
    id TEXT PRIMARY KEY, value INTEGER NOT NULL, writes INTEGER NOT NULL
);
"""


class Order(BaseModel):
    id: str
    n: int
    kind: str = "ok"


class Effect(BaseModel):
    id: str
    value: int


def open_db(path: str) -> sqlite3.Connection:
    """A connection to the shared effects file (WAL, waits for other writers)."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def build_app(env: dict[str, str]) -> App:
    """The app a worker runs, from ``AF_TEST_*`` settings."""
    prefix = env["AF_TEST_PREFIX"]
    db = open_db(env["AF_TEST_DB"])
    app = App(env["AF_TEST_APP"], broker=env["AF_TEST_URL"], grace_period=5.0)
    pid = os.getpid()

    if env["AF_TEST_MODE"] == "share":

        @app.agent(consumes=f"{prefix}.jobs", concurrency=8, timeout=5.0)
        async def work(job: Order) -> None:
            await asyncio.sleep(0.01)
            db.execute("INSERT INTO handled VALUES (?, ?)", (job.id, pid))

        return app

    @app.agent(
        consumes=f"{prefix}.orders",
        produces=f"{prefix}.effects",
        # 4, not 3: a good order in flight beside a crash-looper is charged for that crash, and
        # a chaos SIGKILL while it then runs alone is indistinguishable from it being a killer.
        retry=RetryPolicy(max_attempts=4, backoff=[0.05, 0.1]),
        concurrency=16,
        timeout=2.0,
    )
    async def process(order: Order, ctx: Context) -> Effect:
        if order.kind == "fail":
            raise ValueError(f"poison order {order.id} always fails")
        if order.kind == "crash":
            os._exit(CRASH_EXIT)  # a crash loop: the worker dies on every attempt
        if ctx.attempt > 1:
            # Redelivered although it never fails: its worker was killed mid-processing.
            db.execute("INSERT INTO retried VALUES (?, ?)", (order.id, ctx.attempt))
        await asyncio.sleep(random.uniform(0.002, 0.02))
        return Effect(id=order.id, value=order.n * 2)

    @app.agent(consumes=f"{prefix}.effects", idempotency_key="id", concurrency=16, timeout=5.0)
    async def sink(effect: Effect) -> None:
        db.execute(
            "INSERT INTO effects VALUES (?, ?, 1) "
            "ON CONFLICT (id) DO UPDATE SET writes = writes + 1",
            (effect.id, effect.value),
        )

    return app


def main() -> None:
    """Run the worker until SIGTERM; touch the ready file once subscribed."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    env = dict(os.environ)
    app = build_app(env)

    async def ready(_app: App) -> None:
        await asyncio.to_thread(Path(env["AF_TEST_READY"]).write_text, str(os.getpid()))
        await asyncio.Event().wait()

    run_until_signal(app, ready)


if __name__ == "__main__":
    main()
