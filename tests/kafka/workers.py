"""Worker processes for the Kafka end-to-end tests: ``python -m tests.kafka.workers``.

Settings come from the environment (``AFK_*``) so a test can start, SIGKILL and restart
identical workers:

- ``AFK_URL`` broker URL, ``AFK_STORE`` idempotency store URL, ``AFK_DB`` SQLite file shared by
  all workers, ``AFK_PREFIX`` topic prefix, ``AFK_MODE`` ``order`` or ``pipeline``.
- mode ``order``: agent ``work`` (idempotent on ``id``) consumes ``<prefix>.in`` and records
  every run as ``(id, key, seq, pid)``, so a test can check per-key order and duplicates.
- mode ``pipeline``: agent ``process`` (not idempotent) turns ``<prefix>.orders`` into
  ``<prefix>.effects``; kind ``fail`` always raises and kind ``crash`` kills the process, both
  are poison and must end in ``<prefix>.orders.dlq``. Agent ``sink`` (idempotent on ``id``)
  upserts every effect and counts its writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys

from pydantic import BaseModel

from agentflow import App, RetryPolicy
from agentflow.app import run_until_signal

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (id TEXT, key TEXT, seq INTEGER, pid INTEGER, agent TEXT);
CREATE TABLE IF NOT EXISTS effects (id TEXT PRIMARY KEY, value INTEGER, writes INTEGER);
"""


class Item(BaseModel):
    id: str
    key: str = ""
    seq: int = 0
    kind: str = "ok"


class Effect(BaseModel):
    id: str
    value: int


def open_db(path: str) -> sqlite3.Connection:
    """The shared results file (WAL; waits for the other writers)."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def build(env: dict[str, str]) -> App:
    """The app of one worker."""
    prefix, mode = env["AFK_PREFIX"], env["AFK_MODE"]
    db = open_db(env["AFK_DB"])
    pid = os.getpid()
    app = App(f"afk{prefix}", broker=env["AFK_URL"], store=env["AFK_STORE"], grace_period=10.0)

    if mode == "order":

        @app.agent(consumes=f"{prefix}.in", idempotency_key="id", concurrency=8, timeout=10)
        async def work(item: Item) -> None:
            await asyncio.sleep(0.002)
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, 'work')", (item.id, item.key, item.seq, pid)
            )

        return app

    @app.agent(
        consumes=f"{prefix}.orders",
        produces=f"{prefix}.effects",
        # 4, not 3: a good order in flight beside a crash-looper is charged for that crash, and
        # a chaos SIGKILL while it then runs alone is indistinguishable from it being a killer.
        retry=RetryPolicy(max_attempts=4, backoff=[0.2, 0.4]),
        concurrency=8,
        timeout=10,
    )
    async def process(item: Item) -> Effect:
        db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, 'process')", (item.id, item.key, 0, pid))
        if item.kind == "fail":
            raise RuntimeError(f"poison {item.id}")
        if item.kind == "crash":
            os.kill(pid, signal.SIGKILL)
        return Effect(id=item.id, value=item.seq * 2)

    @app.agent(consumes=f"{prefix}.effects", idempotency_key="id", concurrency=8, timeout=10)
    async def sink(effect: Effect) -> None:
        db.execute("INSERT INTO runs VALUES (?, '', 0, ?, 'sink')", (effect.id, pid))
        db.execute(
            "INSERT INTO effects VALUES (?, ?, 1) "
            "ON CONFLICT(id) DO UPDATE SET writes = writes + 1",
            (effect.id, effect.value),
        )

    return app


def main() -> None:
    """Run one worker until SIGTERM."""
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"[worker {os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    run_until_signal(build(dict(os.environ)))


if __name__ == "__main__":
    main()
