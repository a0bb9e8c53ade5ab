"""Retries, backoff, timeouts, Reject and dead letters: identical on every backbone."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from pydantic import BaseModel

from agentflow import App, Context, Reject, Retry, RetryPolicy
from tests.conformance.support import collector, eventually

# Brokers add their own latency (Kafka retry tiers, NATS redelivery), so delays are checked
# from below tightly and from above loosely.
EARLY = 0.85
LATE = 4.0


class Order(BaseModel):
    id: str
    amount: int


async def test_retries_follow_policy_then_dead_letter(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)
    calls: list[tuple[int, float]] = []

    @app.agent(
        consumes=topic("in"), retry=RetryPolicy(max_attempts=3, backoff=[0.4, 0.8]), timeout=5
    )
    async def flaky(order: Order, ctx: Context) -> None:
        calls.append((ctx.attempt, time.monotonic()))
        raise RuntimeError(f"boom on attempt {ctx.attempt}")

    dlq = collector(app, topic("in.dlq"))
    async with app:
        mid = await app.publish(topic("in"), {"id": "o1", "amount": 3})
        await eventually(lambda: len(dlq) == 1, what="dead letter after 3 attempts")
    assert [a for a, _ in calls] == [1, 2, 3]
    gap1, gap2 = calls[1][1] - calls[0][1], calls[2][1] - calls[1][1]
    assert 0.4 * EARLY <= gap1 <= 0.4 + LATE, gap1
    assert 0.8 * EARLY <= gap2 <= 0.8 + LATE, gap2
    h = dlq[0].headers
    assert h["af-dlq-reason"] == "max-attempts"
    assert h["af-dlq-error-type"] == "RuntimeError"
    assert h["af-dlq-error"] == "boom on attempt 3"
    assert h["af-attempts"] == "3"
    assert h["af-agent"] == "flaky"
    assert h["af-original-topic"] == topic("in")
    assert h["af-id"] == mid, "the dead letter keeps the message id"
    assert any(k.startswith("af-original-") and k != "af-original-topic" for k in h), h
    assert orjson.loads(dlq[0].payload) == {"id": "o1", "amount": 3}


async def test_retry_exception_sets_the_delay(broker_url: str, topic: Callable[[str], str]) -> None:
    app = App("conf", broker=broker_url)
    calls: list[float] = []

    @app.agent(consumes=topic("in"), retry=RetryPolicy(max_attempts=3, backoff=[30]))
    async def later(msg: dict[str, str], ctx: Context) -> None:
        calls.append(time.monotonic())
        if ctx.attempt == 1:
            raise Retry(delay=0.5)

    async with app:
        await app.publish(topic("in"), {"x": "y"})
        await eventually(lambda: len(calls) == 2, what="second attempt")
    assert 0.5 * EARLY <= calls[1] - calls[0] <= 0.5 + LATE


async def test_reject_dead_letters_without_retry(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)
    calls: list[int] = []

    @app.agent(consumes=topic("in"), retry=RetryPolicy(max_attempts=5, backoff=[0.1]))
    async def strict(msg: dict[str, str], ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise Reject("customer unknown")

    dlq = collector(app, topic("in.dlq"))
    async with app:
        await app.publish(topic("in"), {"x": "y"})
        await eventually(lambda: len(dlq) == 1, what="rejected message in DLQ")
        await eventually(lambda: app.stats["strict"].dead_lettered == 1, what="stats")
    assert calls == [1]
    assert dlq[0].headers["af-dlq-reason"] == "rejected"
    assert dlq[0].headers["af-dlq-error"] == "customer unknown"
    assert dlq[0].headers["af-attempts"] == "1"


async def test_invalid_payload_dead_letters_on_first_delivery(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)
    calls: list[Order] = []

    @app.agent(consumes=topic("in"), retry=RetryPolicy(max_attempts=5, backoff=[0.1]))
    async def typed(order: Order) -> None:
        calls.append(order)

    dlq = collector(app, topic("in.dlq"))
    async with app:
        await app.publish(topic("in"), b"{not json")
        await app.publish(topic("in"), {"id": "o1", "amount": "lots"})
        await app.publish(topic("in"), {"id": "o2", "amount": 2})
        await eventually(lambda: len(dlq) == 2 and len(calls) == 1, what="2 dead, 1 handled")
    assert [o.id for o in calls] == ["o2"]
    for d in dlq:
        assert d.headers["af-dlq-reason"] == "invalid-payload"
        assert d.headers["af-attempts"] == "1"
        assert d.headers["af-original-topic"] == topic("in")
    payloads = sorted(d.payload for d in dlq)
    assert b"{not json" in payloads, "the original bytes are kept"
    errors = " ".join(d.headers["af-dlq-error"] for d in dlq)
    assert "amount" in errors, errors


async def test_handler_overrunning_timeout_is_retried(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    import asyncio

    app = App("conf", broker=broker_url)
    attempts: list[int] = []

    @app.agent(
        consumes=topic("in"),
        produces=topic("out"),
        timeout=0.5,
        retry=RetryPolicy(max_attempts=3, backoff=[0.1]),
    )
    async def slow(msg: dict[str, int], ctx: Context) -> dict[str, int]:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.sleep(3)
        return {"ok": ctx.attempt}

    out = collector(app, topic("out"))
    async with app:
        await app.publish(topic("in"), {"n": 1})
        await eventually(lambda: len(out) == 1, what="output after timeout retry")
    assert attempts == [1, 2]
    assert orjson.loads(out[0].payload) == {"ok": 2}


async def test_give_up_on_exception_type_dead_letters_at_once(
    broker_url: str, topic: Callable[[str], str]
) -> None:
    app = App("conf", broker=broker_url)
    calls: list[int] = []

    @app.agent(
        consumes=topic("in"),
        retry=RetryPolicy(max_attempts=5, backoff=[0.1], give_up_on=(KeyError,)),
        dlq=topic("custom-dlq"),
    )
    async def picky(msg: dict[str, str], ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise KeyError("no such account")

    dlq = collector(app, topic("custom-dlq"))
    async with app:
        await app.publish(topic("in"), {"a": "b"})
        await eventually(lambda: len(dlq) == 1, what="custom dlq")
    assert calls == [1]
    assert dlq[0].headers["af-dlq-reason"] == "non-retryable"
    assert dlq[0].headers["af-dlq-error-type"] == "KeyError"
