"""Delivery, outputs and acknowledgement: identical on every backbone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from pydantic import BaseModel

from agentflow import App, Context, RetryPolicy
from tests.conformance.support import Recorder, collector, eventually, recording


class Ticket(BaseModel):
    id: str
    text: str


class Routed(BaseModel):
    id: str
    queue: str


async def test_handler_output_reaches_produces_topic(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)

    @app.agent(consumes=topic("in"), produces=topic("out"))
    async def triage(ticket: Ticket, ctx: Context) -> Routed:
        assert ctx.attempt == 1
        return Routed(id=ticket.id, queue="billing" if "invoice" in ticket.text else "general")

    out = collector(app, topic("out"))
    async with app:
        mid = await app.publish(topic("in"), Ticket(id="T1", text="invoice missing"), key="T1")
        await eventually(lambda: len(out) == 1, what="one routed ticket")
    body = orjson.loads(out[0].payload)
    assert body == {"id": "T1", "queue": "billing"}
    headers = out[0].headers
    assert headers["af-causation-id"] == mid
    assert headers["af-correlation-id"] == mid
    assert headers["af-agent"] == "triage"
    assert headers["af-id"] != mid
    assert out[0].key == "T1"


async def test_list_fans_out_none_publishes_nothing_and_ctx_publish(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)

    @app.agent(consumes=topic("in"), produces=topic("out"))
    async def split(msg: dict[str, int], ctx: Context) -> list[dict[str, int]] | None:
        if msg["n"] == 0:
            return None
        await ctx.publish(topic("side"), {"side": msg["n"]})
        return [{"part": i} for i in range(msg["n"])]

    out = collector(app, topic("out"))
    side = collector(app, topic("side"))
    async with app:
        await app.publish(topic("in"), {"n": 0})
        await app.publish(topic("in"), {"n": 3})
        await eventually(lambda: len(out) == 3 and len(side) == 1, what="fan-out outputs")
        await asyncio.sleep(0.3)
    assert sorted(orjson.loads(s.payload)["part"] for s in out) == [0, 1, 2]
    assert orjson.loads(side[0].payload) == {"side": 3}
    ids = {s.headers["af-id"] for s in out} | {side[0].headers["af-id"]}
    assert len(ids) == 4, "every output gets its own derived id"
    assert len(out) == 3, "None published nothing"


async def test_input_is_acked_only_after_outputs_are_accepted(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    rec = Recorder()
    app = App("conf", broker=recording(broker_url, rec))

    @app.agent(consumes=topic("in"), produces=[topic("a"), topic("b")])
    async def fan(msg: dict[str, str]) -> dict[str, str]:
        return {"echo": msg["v"]}

    async with app:
        mid = await app.publish(topic("in"), {"v": "x"})
        await eventually(lambda: ("acked", mid) in rec.events, what="input acked")
    acked_at = rec.events.index(("acked", mid))
    published = [
        i
        for i, (kind, what) in enumerate(rec.events)
        if kind == "published" and any(t in (topic("a"), topic("b")) for t, _ in what)
    ]
    assert published, "outputs were published"
    assert max(published) < acked_at, f"ack came before outputs were accepted: {rec.events}"


async def test_dataclass_bytes_and_dict_inputs(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    from dataclasses import dataclass

    @dataclass
    class Reading:
        sensor: str
        value: float

    app = App("conf", broker=broker_url)
    got: list[object] = []

    @app.agent(consumes=topic("dc"))
    async def on_dc(r: Reading) -> None:
        got.append(r)

    @app.agent(consumes=topic("raw"))
    async def on_raw(b: bytes) -> None:
        got.append(b)

    async with app:
        await app.publish(topic("dc"), {"sensor": "s1", "value": 1.5})
        await app.publish(topic("raw"), b"\x00\x01binary")
        await eventually(lambda: len(got) == 2, what="two inputs")
    assert Reading("s1", 1.5) in got
    assert b"\x00\x01binary" in got


async def test_competing_workers_share_one_agent(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    seen: dict[str, list[int]] = {"w1": [], "w2": []}

    def make(worker: str) -> App:
        app = App("conf", broker=broker_url)

        @app.agent(consumes=topic("in"), name="shared", concurrency=4)
        async def handle(msg: dict[str, int]) -> None:
            seen[worker].append(msg["n"])
            await asyncio.sleep(0.01)

        return app

    a, b = make("w1"), make("w2")
    async with a, b:
        for n in range(40):
            await a.publish(topic("in"), {"n": n}, key=f"k{n % 8}")
        await eventually(lambda: len(seen["w1"]) + len(seen["w2"]) >= 40, what="40 handled")
        await asyncio.sleep(0.5)
    handled = seen["w1"] + seen["w2"]
    assert sorted(handled) == list(range(40)), "each message handled exactly once in the group"


async def test_outputs_of_calls_finishing_together_go_out_in_one_publish(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    rec = Recorder()
    app = App("conf", broker=recording(broker_url, rec))
    gate = asyncio.Event()
    started: list[int] = []

    @app.agent(consumes=topic("in"), produces=topic("out"), concurrency=12, timeout=10)
    async def hold(msg: dict[str, int]) -> dict[str, int]:
        started.append(msg["n"])
        await gate.wait()  # every call finishes in the same loop step
        return {"n": msg["n"]}

    async with app:
        ids = [await app.publish(topic("in"), {"n": n}) for n in range(12)]
        await eventually(lambda: len(started) == 12, what="twelve calls running")
        gate.set()
        await eventually(
            lambda: all(("acked", i) in rec.events for i in ids), what="twelve inputs acked"
        )
    out_publishes = [
        (at, what)
        for at, (kind, what) in enumerate(rec.events)
        if kind == "published" and what[0][0] == topic("out")
    ]
    assert len(out_publishes) == 1, f"one publish for twelve outputs: {out_publishes}"
    at, what = out_publishes[0]
    assert len(what) == 12
    first_ack = min(rec.events.index(("acked", i)) for i in ids)
    assert at < first_ack, f"an input was acked before its output was accepted: {rec.events}"


async def test_a_refused_output_does_not_charge_the_calls_published_beside_it(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    rec = Recorder(refuse=lambda m: m.topic == topic("out") and b'"bad"' in m.payload)
    app = App("conf", broker=recording(broker_url, rec))
    gate = asyncio.Event()
    attempts: dict[str, list[int]] = {}

    @app.agent(
        consumes=topic("in"),
        produces=topic("out"),
        concurrency=6,
        timeout=10,
        retry=RetryPolicy(max_attempts=2, backoff=[0.2]),
    )
    async def echo(msg: dict[str, str], ctx: Context) -> dict[str, str]:
        attempts.setdefault(msg["v"], []).append(ctx.attempt)
        await gate.wait()
        return msg

    dlq = collector(app, topic("in.dlq"))
    async with app:
        for v in ["a", "b", "bad", "c", "d", "e"]:
            await app.publish(topic("in"), {"v": v})
        await eventually(lambda: len(attempts) == 6, what="six calls running")
        gate.set()
        await eventually(lambda: len(dlq) == 1, what="the refused one dead-lettered")
        await asyncio.sleep(0.3)
    assert any(kind == "refused" and len(what) == 6 for kind, what in rec.events), rec.events
    assert attempts == {"a": [1], "b": [1], "bad": [1, 2], "c": [1], "d": [1], "e": [1]}
    assert app.stats["echo"].succeeded == 5
    assert dlq[0].headers["af-dlq-reason"] == "max-attempts"
    assert dlq[0].headers["af-dlq-error-type"] == "PublishError"


async def test_a_call_with_nothing_to_publish_is_not_held_behind_a_slow_publish(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    hold = asyncio.Event()
    rec = Recorder(hold=hold, hold_topic=topic("out"))
    app = App("conf", broker=recording(broker_url, rec))

    @app.agent(consumes=topic("in"), produces=topic("out"), concurrency=4, timeout=10)
    async def maybe(msg: dict[str, bool]) -> dict[str, bool] | None:
        return msg if msg["emit"] else None

    async with app:
        held = await app.publish(topic("in"), {"emit": True})
        await eventually(lambda: app.stats["maybe"].received == 1, what="first call ran")
        quiet = await app.publish(topic("in"), {"emit": False})
        await eventually(lambda: ("acked", quiet) in rec.events, what="the quiet call acked")
        assert ("acked", held) not in rec.events, "the held call waits for its publish"
        hold.set()
        await eventually(lambda: ("acked", held) in rec.events, what="the held call acked")
