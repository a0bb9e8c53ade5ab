"""Idempotency, derived ids, ordering and shutdown: identical on every backbone."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from agentflow import App, Context
from agentflow.envelope import new_id
from tests.conformance.support import Recorder, collector, eventually, recording


async def test_duplicate_message_id_runs_handler_once(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)
    calls: list[str] = []

    @app.agent(consumes=topic("in"), idempotent=True)
    async def once(msg: dict[str, str], ctx: Context) -> None:
        calls.append(ctx.message_id)

    dup = new_id()  # fresh per run: durable stores (NATS KV) outlive one test session
    async with app:
        await app.publish(topic("in"), {"v": "1"}, message_id=dup)
        await app.publish(topic("in"), {"v": "1"}, message_id=dup)
        await app.publish(topic("in"), {"v": "2"})
        await eventually(lambda: len(calls) == 2, what="two distinct messages")
        await asyncio.sleep(0.5)
    assert calls.count(dup) == 1


async def test_same_idempotency_key_under_new_id_runs_once(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)
    calls: list[str] = []

    @app.agent(consumes=topic("in"), produces=topic("out"), idempotency_key="order.id")
    async def charge(msg: dict[str, dict[str, str]]) -> dict[str, str]:
        calls.append(msg["order"]["id"])
        return {"charged": msg["order"]["id"]}

    out = collector(app, topic("out"))
    a, b = topic("A"), topic("B")  # unique keys: durable stores outlive one test session
    async with app:
        first = await app.publish(topic("in"), {"order": {"id": a}})
        second = await app.publish(topic("in"), {"order": {"id": a}})
        await app.publish(topic("in"), {"order": {"id": b}})
        assert first != second
        await eventually(
            lambda: app.stats["charge"].duplicates == 1 and len(out) == 2, what="dedup by key"
        )
    assert sorted(calls) == sorted([a, b])


async def test_redelivered_input_republishes_identical_ids(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    rec = Recorder(drop_acks=1)  # the first ack is lost: as if the worker died right before it
    runs: list[int] = []

    def make(broker: object) -> App:
        app = App("conf", broker=broker)  # type: ignore[arg-type]

        @app.agent(consumes=topic("in"), produces=topic("out"), timeout=1.0)
        async def enrich(msg: dict[str, int]) -> list[dict[str, int]]:
            runs.append(msg["n"])
            return [{"n": msg["n"], "part": 0}, {"n": msg["n"], "part": 1}]

        return app

    sink = App("sink", broker=broker_url)
    out = collector(sink, topic("out"))
    async with sink:
        first = make(recording(broker_url, rec))
        async with first:
            await first.publish(topic("in"), {"n": 7})
            await eventually(lambda: "ack-dropped" in [e[0] for e in rec.events], what="run 1")
        second = make(recording(broker_url, rec))
        async with second:
            await eventually(lambda: len(runs) == 2, timeout=40, what="redelivery after restart")
            await eventually(lambda: any(e[0] == "acked" for e in rec.events), what="ack")
        await eventually(lambda: len(out) >= 2, what="outputs")
        await asyncio.sleep(1.0)
    batches = [ids for kind, ids in rec.events if kind == "published"]
    out_batches = [b for b in batches if all(t == topic("out") for t, _ in b)]
    assert len(out_batches) == 2
    assert out_batches[0] == out_batches[1], "a redelivery re-publishes the same ids"
    ids = [s.headers["af-id"] for s in out]
    assert sorted(set(ids)) == sorted({mid for _, mid in out_batches[0]})
    assert len(ids) == 2, f"downstream saw duplicates: {ids}"


async def test_per_key_order_holds_under_concurrency(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)
    seen: dict[str, list[int]] = defaultdict(list)
    active = 0
    peak = 0
    rnd = random.Random(7)

    @app.agent(consumes=topic("in"), concurrency=8)
    async def ordered(msg: dict[str, int], ctx: Context) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(rnd.uniform(0.0, 0.01))
        assert ctx.key is not None
        seen[ctx.key].append(msg["seq"])
        active -= 1

    keys = [f"k{i}" for i in range(6)]
    async with app:
        for seq in range(20):
            for k in keys:
                await app.publish(topic("in"), {"seq": seq}, key=k)
        await eventually(lambda: sum(map(len, seen.values())) == 120, what="120 handled")
    for k in keys:
        assert seen[k] == list(range(20)), f"key {k} reordered: {seen[k]}"
    assert peak > 1, "different keys ran in parallel"


async def test_cancelled_worker_restarts_without_loss(
    broker_url: str, topic: Callable[[str], str], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'claims.db'}"
    started = asyncio.Event()
    effects: list[str] = []

    def make(block: bool) -> App:
        app = App("conf", broker=broker_url, store=store)

        @app.agent(consumes=topic("in"), idempotency_key="id", timeout=2.0)
        async def pay(msg: dict[str, str]) -> None:
            if block:
                started.set()
                await asyncio.sleep(60)  # cancelled by the stop below
            effects.append(msg["id"])

        return app

    first = make(block=True)
    await first.start()
    await first.publish(topic("in"), {"id": "P1"})
    await asyncio.wait_for(started.wait(), 30)
    await first.stop(grace=0.0)  # cancels the handler mid-flight
    assert effects == []
    second = make(block=False)
    async with second:
        await eventually(lambda: effects == ["P1"], timeout=40, what="redelivered after restart")
        await second.publish(topic("in"), {"id": "P1"})  # the same key again: already done
        await eventually(lambda: second.stats["pay"].duplicates == 1, what="duplicate skipped")
    assert effects == ["P1"]


async def test_graceful_stop_finishes_in_flight_work(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    done: list[int] = []
    began: list[int] = []

    def make() -> App:
        app = App("conf", broker=broker_url)

        @app.agent(consumes=topic("in"), produces=topic("out"), concurrency=5, timeout=5)
        async def work(msg: dict[str, int]) -> dict[str, int]:
            began.append(msg["n"])
            await asyncio.sleep(0.5)
            done.append(msg["n"])
            return msg

        return app

    sink = App("sink", broker=broker_url)
    out = collector(sink, topic("out"))
    async with sink:
        app = make()
        await app.start()
        for n in range(5):
            await app.publish(topic("in"), {"n": n}, key=f"k{n}")
        await eventually(lambda: len(began) == 5, what="all five started")
        await app.stop(grace=10.0)
        assert sorted(done) == [0, 1, 2, 3, 4], "in-flight handlers finished before stop returned"
        await eventually(lambda: len(out) == 5, what="their outputs")
        again = make()
        async with again:
            await asyncio.sleep(1.5)
    assert sorted(began) == [0, 1, 2, 3, 4], "nothing was redelivered after a graceful stop"
