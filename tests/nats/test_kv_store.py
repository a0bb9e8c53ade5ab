"""NatsKvStore: the idempotency protocol on a JetStream KV bucket, including races."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.errors import KeyWrongLastSequenceError

from agentflow.brokers.base import BrokerError
from agentflow.brokers.nats import NatsBroker
from agentflow.idempotency import ClaimState, store_from_url
from agentflow.idempotency.nats_kv import (
    NatsKvStore,
    _running_head,
    bucket_name,
    from_url,
    kv_key,
)
from tests.unit import test_idempotency_stores as contract

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


@given(st.text(max_size=300))
def test_kv_keys_are_valid_and_distinct_per_key(key: str) -> None:
    encoded = kv_key(key)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,200}|h_[0-9a-f]{64}", encoded), encoded
    assert encoded != kv_key(key + "x"), "different keys, different KV keys"
    # Keys already stored in a bucket stay found: URL-safe base64 without padding, as ever.
    plain = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    if 0 < len(plain) <= 200:
        assert encoded == plain
    else:
        assert encoded == "h_" + hashlib.sha256(key.encode()).hexdigest()


@given(
    st.integers(min_value=1, max_value=10**6),
    st.floats(min_value=0, max_value=1e12, allow_nan=False),
    st.integers(min_value=0, max_value=2**64),
)
def test_running_records_are_the_json_every_reader_expects(
    attempts: int, expires: float, counter: int
) -> None:
    owner = f"0123456789abcdef{counter:x}"
    value = _running_head(attempts, expires) + owner.encode() + b'"}'
    assert value == orjson.dumps({"s": "r", "a": attempts, "e": expires, "o": owner})


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


async def _sent(broker: NatsBroker, op: Awaitable[Any]) -> tuple[Any, int]:
    """The result of ``op`` and how many messages (requests) it sent on the connection."""
    before = broker.nc.stats["out_msgs"]
    result = await op
    return result, broker.nc.stats["out_msgs"] - before


async def test_fresh_key_is_one_request_per_claim_and_per_completion(
    store: NatsKvStore, broker: NatsBroker
) -> None:
    # Create-first: a new key must not be read before it is written (get + create = 2).
    claim, sent = await _sent(broker, store.claim("agent:new", lease=30))
    assert (claim.state, claim.attempts, sent) == (ClaimState.ACQUIRED, 1, 1)
    _, sent = await _sent(broker, store.complete("agent:new", ttl=60))
    assert sent == 1
    # A duplicate costs the refused create plus one read.
    claim, sent = await _sent(broker, store.claim("agent:new", lease=30))
    assert (claim.state, sent) == (ClaimState.COMPLETED, 2)


async def _writes(broker: NatsBroker, op: Awaitable[Any]) -> tuple[Any, int, int]:
    """The result of ``op``, the messages it sent and the writes they were queued in."""
    nc = broker.nc
    writes = 0
    original = nc._send_command

    async def counting(cmd: bytes, priority: bool = False) -> None:
        nonlocal writes
        writes += 1
        await original(cmd, priority)

    nc._send_command = counting  # type: ignore[method-assign]
    try:
        result, sent = await _sent(broker, op)
    finally:
        del nc._send_command  # back to the class's method
    return result, sent, writes


async def test_a_group_of_claims_and_its_completions_are_one_write_each(
    store: NatsKvStore, broker: NatsBroker
) -> None:
    keys = [f"agent:g{i}" for i in range(20)]
    claims, sent, writes = await _writes(broker, store.claim_many(keys, lease=30))
    assert [c.state for c in claims if not isinstance(c, Exception)] == [ClaimState.ACQUIRED] * 20
    assert (sent, writes) == (20, 1), "twenty creates, sent together"
    done, sent, writes = await _writes(broker, store.complete_many(keys, ttl=60))
    assert done == [None] * 20 and (sent, writes) == (20, 1)
    again = await store.claim_many(keys, lease=30)
    assert [c.state for c in again if not isinstance(c, Exception)] == [ClaimState.COMPLETED] * 20


async def test_completion_on_the_broker_connection_is_not_awaited_but_stored(
    store: NatsKvStore, broker: NatsBroker, nats_url: str
) -> None:
    publisher = broker.publisher
    assert publisher is not None and not store.confirm_completions
    await store.claim("agent:k", lease=30)
    waiting_before = len(publisher._acks._waiting)
    sent_before = broker.nc.stats["out_msgs"]
    await store.complete("agent:k", ttl=60)
    # One publish, and no PubAck is being waited for: it carried no reply subject.
    assert broker.nc.stats["out_msgs"] - sent_before == 1
    assert len(publisher._acks._waiting) == waiting_before
    # Yet it is stored: another worker on its own connection sees the key completed.
    other = NatsKvStore(bucket=store.bucket, url=nats_url)
    await other.open()
    try:
        state = None
        for _ in range(40):  # bounded: the server stores it within milliseconds
            claim = await other.claim("agent:k", lease=30)
            state = claim.state
            if state is ClaimState.COMPLETED:
                break
            await asyncio.sleep(0.05)
        assert state is ClaimState.COMPLETED
    finally:
        await other.close()


async def test_confirmed_completions_wait_for_the_puback(broker: NatsBroker) -> None:
    s = from_url("nats-kv://?confirm=true", broker=broker, app_name=f"t{uuid.uuid4().hex[:8]}")
    assert s.confirm_completions
    await s.open()
    try:
        await s.claim("agent:c", lease=30)
        publisher = broker.publisher
        assert publisher is not None
        replies_before = broker.nc.stats["in_msgs"]
        await s.complete("agent:c", ttl=60)
        assert broker.nc.stats["in_msgs"] - replies_before >= 1, "the PubAck was awaited"
        assert (await s.claim("agent:c", lease=30)).state is ClaimState.COMPLETED
    finally:
        await broker.js.delete_key_value(s.bucket)
        await s.close()


async def test_claim_after_forget_or_purge_writes_over_the_tombstone(
    store: NatsKvStore, broker: NatsBroker
) -> None:
    kv = store._bucket()
    assert (await store.claim("k", lease=30)).state is ClaimState.ACQUIRED
    await store.complete("k", ttl=60)
    await store.forget("k")
    # The delete marker keeps the key's last sequence: a plain create (expect 0) is refused.
    with pytest.raises(KeyWrongLastSequenceError):
        await kv.update(kv_key("k"), b"{}", last=0)
    # Another worker (no local state) claims it anew, with a fresh attempt count.
    other = NatsKvStore(bucket=store.bucket, broker=broker)
    await other.open()
    claim = await other.claim("k", lease=30)
    assert (claim.state, claim.attempts) == (ClaimState.ACQUIRED, 1)
    assert (await store.claim("k", lease=30)).state is ClaimState.BUSY
    await kv.purge(kv_key("k"))  # a purge marker: same story
    claim = await store.claim("k", lease=30)
    assert (claim.state, claim.attempts) == (ClaimState.ACQUIRED, 1)


async def _two_stores(bucket: str, nats_url: str, clock: contract.Clock) -> list[NatsKvStore]:
    """Two stores on the bucket, each with its own connection, sharing ``clock``."""
    stores = []
    for _ in range(2):
        s = NatsKvStore(bucket=bucket, url=nats_url, clock=clock)
        await s.open()
        stores.append(s)
    return stores


async def test_two_stores_race_for_fresh_forgotten_and_expired_keys(
    store: NatsKvStore, nats_url: str
) -> None:
    clock = contract.Clock()
    a, b = await _two_stores(store.bucket, nats_url, clock)
    try:
        for i in range(20):
            key = f"race-{i}"
            # A fresh key: both send the create at once, the server takes exactly one.
            results = await asyncio.gather(a.claim(key, lease=5), b.claim(key, lease=5))
            states = sorted(r.state.value for r in results)
            assert states == ["acquired", "busy"], results
            assert all(r.attempts == 1 for r in results)
            # An expired lease: both update against the same revision; one wins, attempt 2.
            clock.now += 6
            results = await asyncio.gather(a.claim(key, lease=5), b.claim(key, lease=5))
            winners = [r for r in results if r.state is ClaimState.ACQUIRED]
            assert len(winners) == 1 and winners[0].attempts == 2, results
            # A tombstone: both write over the delete marker's revision; one wins.
            await a.forget(key)
            results = await asyncio.gather(a.claim(key, lease=5), b.claim(key, lease=5))
            winners = [r for r in results if r.state is ClaimState.ACQUIRED]
            assert len(winners) == 1 and winners[0].attempts == 1, results
    finally:
        await a.close()
        await b.close()


async def test_expired_lease_is_taken_over_by_another_worker_with_its_attempts(
    store: NatsKvStore, nats_url: str
) -> None:
    clock = contract.Clock()
    a, b = await _two_stores(store.bucket, nats_url, clock)
    try:
        assert (await a.claim("k", lease=5)).attempts == 1
        await a.release("k")  # a failed attempt, handed back
        assert (await a.claim("k", lease=5)).attempts == 2
        assert (await b.claim("k", lease=5)).state is ClaimState.BUSY
        clock.now += 5.01  # worker a died holding the lease
        claim = await b.claim("k", lease=5)
        assert (claim.state, claim.attempts) == (ClaimState.ACQUIRED, 3)
        await b.complete("k", ttl=60)
        done = await a.claim("k", lease=5)
        assert (done.state, done.attempts) == (ClaimState.COMPLETED, 3)
    finally:
        await a.close()
        await b.close()


async def test_errors_name_the_bucket_and_key(broker: NatsBroker) -> None:
    s = NatsKvStore(bucket=f"AF_IDEM_gone{uuid.uuid4().hex[:6]}", broker=broker)
    await s.open()
    await broker.js.delete_key_value(s.bucket)
    with pytest.raises(BrokerError, match=f"KV bucket {s.bucket} does not exist"):
        await s.claim("agent:k", lease=5)
    # A confirmed completion reports it too (an unconfirmed one cannot: nobody answers).
    s.confirm_completions = True
    with pytest.raises(BrokerError, match=f"KV bucket {s.bucket} does not exist"):
        await s.complete("agent:k", ttl=5)
    # complete_many (confirmed: all in flight at once) reports the error per key.
    errors = await s.complete_many(["agent:k", "agent:j"], ttl=5)
    assert [type(e) for e in errors] == [BrokerError, BrokerError]
    assert all(f"KV bucket {s.bucket} does not exist" in str(e) for e in errors)
    await s.close()
    with pytest.raises(BrokerError, match="is not open"):
        await s.claim("agent:k", lease=5)


async def test_confirmed_complete_many_completes_each_key(store: NatsKvStore) -> None:
    store.confirm_completions = True
    for k in ("a", "b", "c"):
        assert (await store.claim(k, 10)).state is ClaimState.ACQUIRED
    assert await store.complete_many(["a", "b", "c"], 60) == [None, None, None]
    assert [(await store.claim(k, 10)).state for k in "abc"] == [ClaimState.COMPLETED] * 3


# The store contract every store kind meets (tests/unit/test_idempotency_stores.py), on NATS
# with a fake clock: leases and TTLs are logical expiries, so no sleeps are needed.
_CONTRACT = [
    contract.test_claim_complete,
    contract.test_complete_many_completes_each_key,
    contract.test_claim_many_decides_as_claim_does,
    contract.test_claim_many_same_key_twice,
    contract.test_claim_many_beyond_one_statement,
    contract.test_busy_while_leased,
    contract.test_lease_expiry_counts_attempts,
    contract.test_release_keeps_attempts,
    contract.test_completed_ttl,
    contract.test_non_positive_ttl_keeps_forever,
    contract.test_forget,
]


@pytest.mark.parametrize("case", _CONTRACT, ids=lambda case: case.__name__)
async def test_store_contract(
    case: Callable[..., Awaitable[None]], store: NatsKvStore, broker: NatsBroker
) -> None:
    clock = contract.Clock()
    on_clock = NatsKvStore(bucket=store.bucket, broker=broker, clock=clock)
    await on_clock.open()
    fixtures = {"store": on_clock, "clock": clock}
    await case(**{name: fixtures[name] for name in inspect.signature(case).parameters})
