"""The Redis idempotency store (the shared store of multi-worker Kafka deployments)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from agentflow.idempotency import ClaimState, store_from_url
from agentflow.idempotency.redis import RedisStore, from_url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = from_url(f"{redis_url}?prefix=t{uuid.uuid4().hex[:8]}:")
    await s.open()
    yield s
    await s.close()


async def test_claim_complete_and_duplicates(store: RedisStore) -> None:
    first = await store.claim("a", lease=5)
    assert (first.state, first.attempts) == (ClaimState.ACQUIRED, 1)
    busy = await store.claim("a", lease=5)
    assert (busy.state, busy.attempts) == (ClaimState.BUSY, 1)
    await store.complete("a", ttl=60)
    done = await store.claim("a", lease=5)
    assert (done.state, done.attempts) == (ClaimState.COMPLETED, 1)


async def test_complete_many_completes_each_key(store: RedisStore) -> None:
    for k in ("a", "b", "c"):
        assert (await store.claim(k, lease=5)).state is ClaimState.ACQUIRED
    assert await store.complete_many(["a", "b", "c"], ttl=60) == [None, None, None]
    assert [(await store.claim(k, lease=5)).state for k in "abc"] == [ClaimState.COMPLETED] * 3


async def test_attempts_survive_expired_leases_and_releases(store: RedisStore) -> None:
    assert (await store.claim("k", lease=0.2)).attempts == 1
    await asyncio.sleep(0.3)  # the worker died: its lease runs out
    again = await store.claim("k", lease=5)
    assert (again.state, again.attempts) == (ClaimState.ACQUIRED, 2)
    await store.release("k")  # a failed attempt gives the key back at once
    third = await store.claim("k", lease=5)
    assert (third.state, third.attempts) == (ClaimState.ACQUIRED, 3)


async def test_completed_ttl_and_forget(store: RedisStore) -> None:
    await store.claim("t", lease=5)
    await store.complete("t", ttl=0.2)
    await asyncio.sleep(0.35)
    fresh = await store.claim("t", lease=5)
    assert (fresh.state, fresh.attempts) == (ClaimState.ACQUIRED, 1), "expired: new again"
    await store.claim("f", lease=5)
    await store.forget("f")
    assert (await store.claim("f", lease=5)).attempts == 1
    await store.complete("forever", ttl=0)
    assert (await store.claim("forever", lease=1)).state is ClaimState.COMPLETED


async def test_two_stores_race_on_one_key(redis_url: str) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}:"
    stores = [from_url(f"{redis_url}?prefix={prefix}") for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        results = await asyncio.gather(
            *(s.claim("same", lease=10) for s in stores for _ in range(5))
        )
        states = [r.state for r in results]
        assert states.count(ClaimState.ACQUIRED) == 1
        assert states.count(ClaimState.BUSY) == 19
    finally:
        for s in stores:
            await s.close()


async def test_registered_by_url_and_clear_failures(redis_url: str) -> None:
    s = store_from_url(f"{redis_url}?prefix=x:&pending_ttl=2d")
    assert isinstance(s, RedisStore) and s.prefix == "x:" and s.pending_ttl == 2 * 86_400
    with pytest.raises(ValueError, match="pending_ttl"):
        from_url("redis://h?pending_ttl=soon")
    with pytest.raises(ValueError, match="redis://host"):
        from_url("redis://")
    down = from_url("redis://:pw@127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match=r"could not be opened") as err:
        await down.open()
    assert "pw" not in str(err.value)
    with pytest.raises(RuntimeError, match="not open"):
        await down.claim("k", lease=1)
