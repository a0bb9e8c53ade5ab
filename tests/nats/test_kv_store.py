"""NatsKvStore: the idempotency protocol on a JetStream KV bucket, including races."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from agentflow.brokers.nats import NatsBroker
from agentflow.idempotency import ClaimState, store_from_url
from agentflow.idempotency.nats_kv import NatsKvStore, bucket_name, from_url, kv_key

pytestmark = pytest.mark.nats


@pytest.fixture
async def store(broker: NatsBroker) -> AsyncIterator[NatsKvStore]:
    """A store on a fresh bucket sharing the broker's connection."""
    s = from_url("nats-kv://", broker=broker, app_name=f"t{uuid.uuid4().hex[:8]}")
    await s.open()
    yield s
    await broker.js.delete_key_value(s.bucket)
    await s.close()


def test_registry_and_url_forms(broker: NatsBroker) -> None:
    s = store_from_url("nats-kv://", broker=broker, app_name="my.app")
    assert isinstance(s, NatsKvStore) and s.bucket == "AF_IDEM_my_app"
    s = from_url("nats-kv://127.0.0.1:4222/custom?ttl=1h")
    assert s.bucket == "custom" and s.bucket_ttl == 3600
    with pytest.raises(ValueError):
        from_url("nats-kv://")  # neither a server nor a broker
    assert bucket_name("a b") == "AF_IDEM_a_b"
    assert kv_key("agent:some id/with spaces") == kv_key("agent:some id/with spaces")
    assert kv_key("a" * 500).startswith("h_")


async def test_claim_complete_release_forget(store: NatsKvStore) -> None:
    first = await store.claim("agent:k1", lease=30)
    assert (first.state, first.attempts) == (ClaimState.ACQUIRED, 1)
    busy = await store.claim("agent:k1", lease=30)
    assert busy.state is ClaimState.BUSY
    await store.release("agent:k1")
    second = await store.claim("agent:k1", lease=30)
    assert (second.state, second.attempts) == (ClaimState.ACQUIRED, 2)
    await store.complete("agent:k1", ttl=60)
    done = await store.claim("agent:k1", lease=30)
    assert (done.state, done.attempts) == (ClaimState.COMPLETED, 2)
    await store.forget("agent:k1")
    fresh = await store.claim("agent:k1", lease=30)
    assert (fresh.state, fresh.attempts) == (ClaimState.ACQUIRED, 1)


async def test_expired_lease_is_reacquired_and_counts_attempts(store: NatsKvStore) -> None:
    assert (await store.claim("k", lease=0.3)).attempts == 1
    await asyncio.sleep(0.5)  # the worker "died" without releasing
    again = await store.claim("k", lease=0.3)
    assert (again.state, again.attempts) == (ClaimState.ACQUIRED, 2)
    await asyncio.sleep(0.5)
    assert (await store.claim("k", lease=30)).attempts == 3


async def test_completion_ttl_expires_logically(store: NatsKvStore) -> None:
    await store.claim("k", lease=30)
    await store.complete("k", ttl=0.3)
    assert (await store.claim("k", lease=30)).state is ClaimState.COMPLETED
    await asyncio.sleep(0.4)
    fresh = await store.claim("k", lease=30)
    assert (fresh.state, fresh.attempts) == (ClaimState.ACQUIRED, 1)


async def test_release_after_lease_lost_does_not_free_the_new_owner(
    store: NatsKvStore, broker: NatsBroker
) -> None:
    other = NatsKvStore(bucket=store.bucket, broker=broker)
    await other.open()
    assert (await store.claim("k", lease=0.2)).state is ClaimState.ACQUIRED
    await asyncio.sleep(0.3)
    assert (await other.claim("k", lease=30)).state is ClaimState.ACQUIRED
    await store.release("k")  # stale owner: must not touch the new lease
    assert (await store.claim("k", lease=30)).state is ClaimState.BUSY


async def test_concurrent_claims_have_exactly_one_winner(store: NatsKvStore, nats_url: str) -> None:
    # Several stores on separate connections race for the same keys.
    brokers = [NatsBroker(nats_url) for _ in range(4)]
    for b in brokers:
        await b.connect()
    try:
        stores = [NatsKvStore(bucket=store.bucket, broker=b) for b in brokers]
        for s in stores:
            await s.open()
        for key in (f"race-{i}" for i in range(20)):
            results = await asyncio.gather(*(s.claim(key, lease=30) for s in stores))
            winners = [r for r in results if r.state is ClaimState.ACQUIRED]
            assert len(winners) == 1, results
    finally:
        for b in brokers:
            await b.close()


async def test_store_with_its_own_connection(nats_url: str) -> None:
    url = nats_url.replace("nats://", "nats-kv://") + f"/AF_IDEM_own{uuid.uuid4().hex[:6]}"
    s = from_url(url + "?ttl=10m")
    await s.open()
    try:
        assert (await s.claim("x", lease=5)).state is ClaimState.ACQUIRED
        await s.complete("x", ttl=60)
        assert (await s.claim("x", lease=5)).state is ClaimState.COMPLETED
    finally:
        b = NatsBroker(nats_url)
        await b.connect()
        await b.js.delete_key_value(s.bucket)
        await b.close()
        await s.close()
