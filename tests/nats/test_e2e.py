"""End to end on a real nats-server: worker processes, SIGKILL chaos, server restarts, bad input.

Worker processes run :mod:`tests.nats.workers`; effects land in a shared SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentflow import App, Context, RetryPolicy
from agentflow.brokers.base import OutMessage, PublishError
from agentflow.brokers.nats import NatsBroker
from tests.nats.server import NatsServer
from tests.nats.support import wait_for
from tests.nats.workers import CRASH_EXIT, open_db

pytestmark = pytest.mark.nats

REPO = Path(__file__).resolve().parents[2]


class WorkerProc:
    """One worker subprocess that can be SIGKILLed and restarted with the same settings."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.env = env
        self.ready = workdir / f"{name}.ready"
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Spawn the worker process."""
        self.ready.unlink(missing_ok=True)
        env = {**os.environ, **self.env, "AF_TEST_READY": str(self.ready)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.nats.workers"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    async def wait_ready(self, timeout: float = 30.0, crash_ok: bool = False) -> None:
        """Wait until the worker subscribed (it writes its ready file).

        ``crash_ok``: a worker killed by a crash-looping order (exit 17) before it wrote the
        file counts as ready; its messages were already waiting when it subscribed.
        """
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc is not None and self.proc.poll() is not None:
                if crash_ok and self.proc.returncode == CRASH_EXIT:
                    return
                raise AssertionError(f"worker exited early: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready: {self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acks, no flush."""
        if self.proc is not None and self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM and wait for a graceful exit (SIGKILL if it hangs)."""
        if self.proc is None or not self.alive:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def worker_env(url: str, prefix: str, db: Path, mode: str) -> dict[str, str]:
    """Settings shared by every worker of one test."""
    return {
        "AF_TEST_URL": url,
        "AF_TEST_PREFIX": prefix,
        "AF_TEST_DB": str(db),
        "AF_TEST_APP": f"e2e{prefix}",
        "AF_TEST_MODE": mode,
    }


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Run one read query on the effects file."""
    conn = sqlite3.connect(db, timeout=60)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(db: Path, table: str) -> int:
    """Rows in one table of the effects file."""
    return int(str(query(db, f"SELECT COUNT(*) FROM {table}")[0][0]))


async def test_two_worker_processes_share_one_agent(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    db = tmp_path / "effects.db"
    open_db(str(db)).close()
    env = worker_env(nats_url, prefix, db, "share")
    workers = [WorkerProc(env, tmp_path, f"w{i}") for i in range(2)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            await w.wait_ready()
        producer = App(f"prod{prefix}", broker=nats_url)
        n = 400
        for i in range(n):
            await producer.publish(f"{prefix}.jobs", {"id": f"j{i}", "n": i}, message_id=f"j{i}")
        await producer.stop()
        await wait_for(lambda: count(db, "handled") >= n, 60, "all jobs handled")
        await asyncio.sleep(1.0)  # nothing more should arrive
        rows = query(db, "SELECT id, pid FROM handled")
        ids = [r[0] for r in rows]
        assert len(ids) == n and len(set(ids)) == n, "every job handled exactly once"
        per_pid: dict[object, int] = {}
        for _, pid in rows:
            per_pid[pid] = per_pid.get(pid, 0) + 1
        assert len(per_pid) == 2, f"both workers got work: {per_pid}"
        print(f"\nshare: {n} jobs split {sorted(per_pid.values())} between 2 processes")
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        assert w.proc is not None and w.proc.returncode == 0, w.log.read_text()[-2000:]


async def dlq_ids(broker: NatsBroker, topic: str) -> list[str]:
    """The af-id of every message on a dead-letter subject."""
    return [m.headers.get("af-id", "") for m in await broker.browse(topic, limit=10_000)]


@pytest.mark.slow
async def test_chaos_sigkill_workers_exactly_once_effects_and_exact_dlq(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    n = 2000
    fail_ids = {f"o{i}" for i in range(n) if i % 100 == 37}
    # Two orders kill their worker on every attempt; messages that were in flight beside
    # them come back as suspects, run alone, and must not be dead-lettered with them.
    crash_ids = {"o501", "o1502"}
    poison = fail_ids | crash_ids
    db = tmp_path / "effects.db"
    open_db(str(db)).close()
    env = worker_env(nats_url, prefix, db, "pipeline")
    workers = [WorkerProc(env, tmp_path, f"w{i}") for i in range(2)]
    broker = NatsBroker(nats_url)
    await broker.connect()
    t0 = time.monotonic()
    kills = 0
    done = asyncio.Event()

    async def supervise() -> None:
        # Restart whatever died: SIGKILLed by chaos or by a crash-looping order.
        while not done.is_set():
            for w in workers:
                if not w.alive:
                    w.start()
            await asyncio.sleep(0.2)

    async def chaos() -> None:
        nonlocal kills
        rng = random.Random(7)
        while kills < 6 and not done.is_set():
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            victim = rng.choice([w for w in workers if w.alive] or workers)
            victim.kill()
            kills += 1

    for w in workers:
        w.start()
    supervisor = asyncio.create_task(supervise())
    try:
        for w in workers:
            await w.wait_ready()
        chaos_task = asyncio.create_task(chaos())
        producer = App(f"prod{prefix}", broker=nats_url)
        for i in range(n):
            mid = f"o{i}"
            kind = "crash" if mid in crash_ids else "fail" if mid in fail_ids else "ok"
            await producer.publish(
                f"{prefix}.orders", {"id": mid, "n": i, "kind": kind}, message_id=mid
            )
            if i % 100 == 99:
                await asyncio.sleep(0.4)  # spread production over ~8 s of chaos
        await producer.stop()
        produced = time.monotonic() - t0
        await chaos_task
        expected = n - len(poison)

        async def finished() -> bool:
            rows = count(db, "effects")
            return rows >= expected and len(await dlq_ids(broker, f"{prefix}.orders.dlq")) >= len(
                poison
            )

        try:
            await wait_for(finished, 90, "all effects and all poison in the DLQ")
        except AssertionError as exc:
            have = {str(r[0]) for r in query(db, "SELECT id FROM effects")}
            missing = sorted(({f"o{i}" for i in range(n)} - poison) - have)
            dead = sorted(await dlq_ids(broker, f"{prefix}.orders.dlq"))
            logs = "\n".join(f"--- {w.log.name}\n{w.log.read_text()[-2500:]}" for w in workers)
            raise AssertionError(
                f"{exc}: {len(have)}/{expected} effects, missing {missing[:20]}; "
                f"DLQ {dead} (poison {sorted(poison)})\n{logs}"
            ) from None
        elapsed = time.monotonic() - t0
        await asyncio.sleep(3.0)  # late redeliveries would show up now
        rows = query(db, "SELECT id, value, writes FROM effects")
        ids = {r[0] for r in rows}
        assert len(rows) == expected
        assert ids == {f"o{i}" for i in range(n)} - poison, "nothing lost, no poison effect"
        assert all(r[1] == 2 * int(str(r[0])[1:]) for r in rows)
        dead = await dlq_ids(broker, f"{prefix}.orders.dlq")
        assert sorted(dead) == sorted(poison), "DLQ holds exactly the poison, once each"
        reasons = {m.headers.get("af-dlq-reason") for m in await broker.browse(
            f"{prefix}.orders.dlq", limit=100)}  # fmt: skip
        assert reasons == {"max-attempts"}
        assert await dlq_ids(broker, f"{prefix}.effects.dlq") == []
        rewrites = sum(1 for r in rows if int(str(r[2])) > 1)
        interrupted = count(db, "retried")
        assert interrupted > 0, "the SIGKILLs hit workers in the middle of processing"
        starts = sum(w.starts for w in workers)
        print(
            f"\nchaos: {n} orders ({len(fail_ids)} failing + {len(crash_ids)} crash-looping "
            f"poison), {kills} SIGKILLs, "
            f"{starts} worker starts, "
            f"{interrupted} orders redelivered after a kill, "
            f"produced in {produced:.1f}s, settled in {elapsed:.1f}s; {expected} effects exactly "
            f"once ({rewrites} re-applied by a redelivery and absorbed by the upsert); "
            f"DLQ = {len(dead)} poison"
        )
        assert kills >= 5
    finally:
        done.set()
        await supervisor
        for w in workers:
            w.stop()
        await broker.close()


@pytest.mark.slow
async def test_server_restart_mid_run_loses_nothing(
    private_server: Callable[..., NatsServer], prefix: str, tmp_path: Path
) -> None:
    server = private_server()
    url = server.url + "?reconnect_max_wait=0.5"
    n = 1000
    db = tmp_path / "effects.db"
    open_db(str(db)).close()
    env = worker_env(url, prefix, db, "pipeline")
    workers = [WorkerProc(env, tmp_path, f"w{i}") for i in range(2)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            await w.wait_ready()
        producer = App(f"prod{prefix}", broker=url)
        loop = asyncio.get_running_loop()
        restart: asyncio.Future[None] | None = None
        t0 = time.monotonic()
        for i in range(n):
            await producer.publish(f"{prefix}.orders", {"id": f"o{i}", "n": i}, message_id=f"o{i}")
            if i % 100 == 99:
                await asyncio.sleep(0.3)
            if i == 400:
                # Down for 2 s while messages are in flight; publishes wait it out.
                restart = loop.run_in_executor(None, server.restart, 2.0)
        await producer.stop()
        assert restart is not None
        await restart
        await wait_for(lambda: count(db, "effects") >= n, 60, "all effects")
        elapsed = time.monotonic() - t0
        await asyncio.sleep(2.0)
        rows = query(db, "SELECT id FROM effects")
        assert {r[0] for r in rows} == {f"o{i}" for i in range(n)}
        assert all(w.alive for w in workers), "workers rode out the restart"
        print(f"\nrestart: {n} orders across a 2 s server outage, all effects in {elapsed:.1f}s")
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        assert w.proc is not None and w.proc.returncode == 0, w.log.read_text()[-2000:]


async def test_bad_input_goes_to_dlq_or_a_clear_error_and_the_worker_keeps_running(
    nats_url: str, prefix: str
) -> None:
    class Ticket(BaseModel):
        id: str
        text: str

    topic, out, dlq = f"{prefix}.in", f"{prefix}.out", f"{prefix}.in.dlq"
    app = App(f"bad{prefix}", broker=nats_url)
    seen: list[dict[str, str]] = []
    limit = 0

    @app.agent(consumes=topic, produces=out, retry=RetryPolicy(max_attempts=2, backoff=[0.05]))
    async def triage(ticket: Ticket, ctx: Context) -> dict[str, str]:
        if ticket.text == "huge":
            return {"id": ticket.id, "blob": "x" * (limit + 10)}  # output over max_payload
        return {"id": ticket.id, "causation": ctx.message_id}

    @app.agent(consumes=out)
    async def collect(msg: dict[str, str]) -> None:
        seen.append(msg)

    raw = NatsBroker(nats_url)
    await raw.connect()
    limit = raw.nc.max_payload
    async with app:
        good = b'{"id": "x", "text": "hi"}'
        await raw.publish(
            [
                OutMessage(topic, b"{not json", {"af-id": "bad-json"}),
                OutMessage(topic, b'{"id": 5}', {"af-id": "bad-schema"}),
                OutMessage(
                    topic, good, {"af-id": "garbled", "af-attempt": "many", "af-ts": "yesterday"}
                ),
                OutMessage(topic, b'{"id": "h", "text": "huge"}', {"af-id": "huge-output"}),
            ]
        )
        # A foreign producer: plain JSON, no headers at all.
        await raw.js.publish(topic, b'{"id": "plain", "text": "hi"}')
        with pytest.raises(PublishError) as too_big:
            await app.publish(topic, {"id": "big", "text": "y" * limit})
        assert topic in str(too_big.value) and str(limit) in str(too_big.value)
        await app.publish(topic, {"id": "after", "text": "still alive"}, message_id="after")
        await wait_for(lambda: {m["id"] for m in seen} >= {"plain", "after"}, 30, "good ones")

        async def four_dead() -> bool:
            return len(await raw.browse(dlq)) >= 4

        await wait_for(four_dead, 30, "four dead letters")
        dead = {m.headers.get("af-id"): m for m in await raw.browse(dlq)}
        reasons = {k: m.headers.get("af-dlq-reason") for k, m in dead.items()}
        assert reasons == {
            "bad-json": "invalid-payload",
            "bad-schema": "invalid-payload",
            "garbled": "invalid-headers",
            "huge-output": "max-attempts",
        }
        assert "max_payload" in dead["huge-output"].headers.get("af-dlq-error", "")
        assert dead["bad-json"].payload == b"{not json"  # original payload kept
        plain = next(m for m in seen if m["id"] == "plain")
        assert plain["causation"].startswith("AF_")  # fallback id from stream:seq
    await raw.close()


async def supervised_run(
    url: str,
    prefix: str,
    tmp_path: Path,
    orders: list[dict[str, object]],
    expect_dead: int,
    publish_first: bool = False,
) -> tuple[WorkerProc, NatsBroker, Path]:
    """One supervised worker (restarted whenever it dies) processing ``orders``.

    With ``publish_first`` the orders wait in the stream, so the worker's first fetch takes
    them all in one batch.
    """
    db = tmp_path / "effects.db"
    open_db(str(db)).close()
    worker = WorkerProc(worker_env(url, prefix, db, "pipeline"), tmp_path, "w")
    broker = NatsBroker(url)
    await broker.connect()
    await broker.ensure_topics([f"{prefix}.orders"])

    async def produce() -> None:
        producer = App(f"prod{prefix}", broker=url)
        for order in orders:
            await producer.publish(f"{prefix}.orders", order, message_id=str(order["id"]))
        await producer.stop()

    if publish_first:
        await produce()
    worker.start()
    await worker.wait_ready(crash_ok=publish_first)
    stop = asyncio.Event()

    async def supervise() -> None:
        while not stop.is_set():
            if not worker.alive:
                worker.start()
            await asyncio.sleep(0.1)

    supervisor = asyncio.create_task(supervise())
    try:
        if not publish_first:
            await produce()

        async def dead() -> bool:
            return len(await dlq_ids(broker, f"{prefix}.orders.dlq")) >= expect_dead

        await wait_for(dead, 60, f"{expect_dead} dead letter(s)")
    finally:
        stop.set()
        await supervisor
    return worker, broker, db


@pytest.mark.slow
async def test_crash_looping_message_reaches_dlq_and_the_worker_recovers(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    worker, broker, db = await supervised_run(
        nats_url, prefix, tmp_path, [{"id": "boom", "n": 0, "kind": "crash"}], expect_dead=1
    )
    try:
        elapsed = time.monotonic() - t0
        [dead] = await broker.browse(f"{prefix}.orders.dlq")
        assert dead.headers["af-id"] == "boom"
        assert dead.headers["af-dlq-reason"] == "max-attempts"
        assert dead.headers["af-attempts"] == "5"  # dead-lettered before a 5th run
        assert worker.starts == 5  # first start + one restart per crash (max_attempts=4)
        assert worker.alive
        producer = App(f"prod{prefix}", broker=nats_url)
        for i in range(50):
            await producer.publish(f"{prefix}.orders", {"id": f"g{i}", "n": i}, message_id=f"g{i}")
        await producer.stop()
        await wait_for(lambda: count(db, "effects") >= 50, 30, "good orders after the crash loop")
        print(f"\ncrash loop: poison dead-lettered after 3 crashes in {elapsed:.1f}s")
    finally:
        worker.stop()
        await broker.close()


@pytest.mark.slow
async def test_bystanders_of_a_crash_loop_are_not_dead_lettered(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    # Bystanders first: they are mid-handler when "boom" kills the worker, every time.
    orders: list[dict[str, object]] = [{"id": f"b{i}", "n": i} for i in range(15)]
    orders.append({"id": "boom", "n": 0, "kind": "crash"})
    worker, broker, _ = await supervised_run(
        nats_url, prefix, tmp_path, orders, expect_dead=1, publish_first=True
    )
    try:
        await asyncio.sleep(6.0)  # let any bystander finish or die too
        dead = await dlq_ids(broker, f"{prefix}.orders.dlq")
        assert dead == ["boom"], f"{len(dead)} dead letters: {sorted(dead)}"
    finally:
        worker.stop()
        await broker.close()
