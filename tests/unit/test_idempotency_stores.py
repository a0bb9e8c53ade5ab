"""Idempotency stores: the same contract for memory and SQLite, plus SQLite persistence."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agentflow.idempotency import ClaimState, IdempotencyStore, store_from_url
from agentflow.idempotency import sqlite_statements as sql
from agentflow.idempotency.memory import MemoryStore
from agentflow.idempotency.sqlite import SqliteStore

A, B, C = ClaimState.ACQUIRED, ClaimState.BUSY, ClaimState.COMPLETED


class Clock:
    """A settable clock, so TTL and lease tests need no sleeps."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A fresh fake clock."""
    return Clock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[IdempotencyStore]:
    """Each store kind, opened, on the fake clock."""
    s: IdempotencyStore
    if request.param == "memory":
        s = MemoryStore(clock=clock)
    else:
        s = SqliteStore(tmp_path / "idem.db", clock=clock)
    await s.open()
    yield s
    await s.close()


async def test_claim_complete(store: IdempotencyStore) -> None:
    first = await store.claim("k", 10)
    assert (first.state, first.attempts) == (A, 1)
    await store.complete("k", 60)
    again = await store.claim("k", 10)
    assert (again.state, again.attempts) == (C, 1)


async def test_complete_many_completes_each_key(store: IdempotencyStore) -> None:
    for k in ("a", "b", "c"):
        assert (await store.claim(k, 10)).state is A
    assert await store.complete_many(["a", "b", "c"], 60) == [None, None, None]
    assert [(await store.claim(k, 10)).state for k in ("a", "b", "c")] == [C, C, C]


async def test_complete_many_records_keys_never_claimed_here(store: IdempotencyStore) -> None:
    # A claimed key beside one whose row is missing (never claimed, or forgotten meanwhile):
    # both end up completed, with the claimed key's attempt count kept.
    for _ in range(2):
        assert (await store.claim("claimed", 10)).state is A
        await store.release("claimed")
    assert await store.complete_many(["claimed", "unseen"], 60) == [None, None]
    got = [await store.claim(k, 10) for k in ("claimed", "unseen")]
    assert [(c.state, c.attempts) for c in got] == [(C, 2), (C, 1)]


async def test_sqlite_complete_many_is_one_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "idem.db")
    await store.open()
    try:
        keys = [f"k{i}" for i in range(20)]
        await asyncio.gather(*(store.claim(k, 10) for k in keys))
        before = store.transactions
        assert await store.complete_many(keys, 60) == [None] * 20
        assert store.transactions == before + 1, "twenty completions, one commit"
    finally:
        await store.close()


async def _every_state(store: IdempotencyStore, clock: Clock) -> list[str]:
    """Keys in every state a claim can meet; returns them (the clock ends 20 s later)."""
    await store.claim("leased", 60)
    await store.claim("lapsed", 10)  # lease runs out below: acquired again, attempt 2
    for k in ("done", "done-expired", "done-forever"):
        await store.claim(k, 10)
    await store.complete("done", 600)
    await store.complete("done-expired", 5)
    await store.complete("done-forever", 0)
    await store.claim("released", 10)
    await store.release("released")
    clock.now += 20
    return ["new", "leased", "lapsed", "done", "done-expired", "done-forever", "released"]


async def test_claim_many_decides_as_claim_does(store: IdempotencyStore, clock: Clock) -> None:
    keys = await _every_state(store, clock)
    many = await store.claim_many(keys, 30)
    # What a claim of each alone gives (the cases of the tests around this one).
    assert [c if isinstance(c, Exception) else (c.state, c.attempts) for c in many] == [
        (A, 1), (B, 1), (A, 2), (C, 1), (A, 1), (C, 1), (A, 2)
    ]  # fmt: skip
    # What claim_many acquired is leased now, as after a claim.
    again = [await store.claim(k, 30) for k in keys]
    assert [c.state for c in again] == [B, B, B, C, B, C, B]


async def test_claim_many_same_key_twice(store: IdempotencyStore) -> None:
    claims = await store.claim_many(["k", "k"], 10)
    assert [(c.state, c.attempts) for c in claims if not isinstance(c, Exception)] == [
        (A, 1),
        (B, 1),
    ]


async def test_claim_many_beyond_one_statement(store: IdempotencyStore) -> None:
    keys = [f"k{i}" for i in range(600)]  # more rows than one SQLite statement takes
    await store.complete("k7", 60)
    claims = await store.claim_many(keys, 10)
    assert [c.state for c in claims if not isinstance(c, Exception)] == [
        C if k == "k7" else A for k in keys
    ]


async def test_sqlite_claim_many_is_one_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "idem.db")
    await store.open()
    try:
        before = store.transactions
        claims = await store.claim_many([f"k{i}" for i in range(50)], 10)
        assert all(not isinstance(c, Exception) and c.state is A for c in claims)
        assert store.transactions == before + 1, "fifty claims, one commit"
    finally:
        await store.close()


async def test_busy_while_leased(store: IdempotencyStore, clock: Clock) -> None:
    assert (await store.claim("k", 10)).state is A
    busy = await store.claim("k", 10)
    assert (busy.state, busy.attempts) == (B, 1)
    clock.now += 9.9
    assert (await store.claim("k", 10)).state is B
    assert (await store.claim("other", 10)).state is A


async def test_lease_expiry_counts_attempts(store: IdempotencyStore, clock: Clock) -> None:
    assert (await store.claim("k", 5)).attempts == 1
    clock.now += 5.01  # the worker died without releasing
    second = await store.claim("k", 5)
    assert (second.state, second.attempts) == (A, 2)
    clock.now += 6
    third = await store.claim("k", 5)
    assert (third.state, third.attempts) == (A, 3)
    await store.complete("k", 60)
    assert (await store.claim("k", 5)).attempts == 3


async def test_release_keeps_attempts(store: IdempotencyStore) -> None:
    await store.claim("k", 100)
    await store.release("k")
    second = await store.claim("k", 100)
    assert (second.state, second.attempts) == (A, 2)
    await store.release("k")
    await store.release("never-claimed")  # harmless
    assert (await store.claim("k", 100)).attempts == 3


async def test_completed_ttl(store: IdempotencyStore, clock: Clock) -> None:
    await store.claim("k", 10)
    await store.complete("k", 30)
    clock.now += 29
    assert (await store.claim("k", 10)).state is C
    clock.now += 2
    fresh = await store.claim("k", 10)
    assert (fresh.state, fresh.attempts) == (A, 1)


async def test_non_positive_ttl_keeps_forever(store: IdempotencyStore, clock: Clock) -> None:
    await store.claim("k", 10)
    await store.complete("k", 0)
    clock.now += 10**9
    assert (await store.claim("k", 10)).state is C


async def test_forget(store: IdempotencyStore) -> None:
    await store.claim("k", 10)
    await store.release("k")
    await store.claim("k", 10)
    await store.complete("k", 60)
    await store.forget("k")
    fresh = await store.claim("k", 10)
    assert (fresh.state, fresh.attempts) == (A, 1)
    await store.forget("missing")


async def test_memory_store_bounded_evicts_completed_first(clock: Clock) -> None:
    s = MemoryStore(max_entries=3, clock=clock)
    await s.claim("live", 100)
    for k in ("d1", "d2", "d3"):
        await s.claim(k, 100)
        await s.complete(k, 100)
    assert len(s) == 3
    # d1 (oldest completed) went first; the live lease is kept.
    assert (await s.claim("live", 100)).state is B
    assert (await s.claim("d1", 100)).state is A
    assert (await s.claim("d3", 100)).state is C
    assert len(s) == 3


async def test_memory_store_evicts_idle_before_leased(clock: Clock) -> None:
    s = MemoryStore(max_entries=2, clock=clock)
    await s.claim("leased", 100)
    await s.claim("idle", 100)
    await s.release("idle")
    await s.claim("new", 100)
    assert len(s) == 2
    assert (await s.claim("leased", 100)).state is B
    assert (await s.claim("idle", 100)).attempts == 1  # its count was evicted with it


def test_memory_store_rejects_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "idem.db"
    s1 = SqliteStore(path)
    await s1.open()
    await s1.claim("done", 60)
    await s1.complete("done", 3600)
    await s1.claim("failing", 60)
    await s1.release("failing")
    await s1.close()

    s2 = SqliteStore(path)
    await s2.open()
    try:
        assert (await s2.claim("done", 60)).state is C
        again = await s2.claim("failing", 60)
        assert (again.state, again.attempts) == (A, 2)
    finally:
        await s2.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_opens_lazily_and_purges_expired(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "idem.db"
    s = SqliteStore(path, clock=clock)
    try:
        await s.claim("old", 10)  # no explicit open()
        await s.complete("old", 1)
        clock.now += 120
        await s.claim("new", 10)
        await s.complete("new", 100)  # more than the purge interval later: old is deleted
    finally:
        await s.close()
    with sqlite3.connect(path) as conn:
        keys = [r[0] for r in conn.execute("SELECT key FROM af_idempotency ORDER BY key")]
    assert keys == ["new"]


def test_sweeps_go_round_the_table_deleting_only_expired_completions() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(sql.SCHEMA)
    rows = [
        (f"k{i:02d}", 1 if i % 3 else 0, 1, None if i % 5 == 0 else (10.0 if i % 2 else 99.0))
        for i in range(20)
    ]
    conn.executemany("INSERT INTO af_idempotency VALUES (?, ?, ?, ?)", rows)
    # Done (state 1) and expired at 50: odd i not divisible by 3 or 5.
    expired = {k for k, state, _, exp in rows if state == 1 and exp is not None and exp <= 50}
    cursors = []
    after = ""
    for _ in range(5):  # 4 keys a step: the fifth step starts the next lap
        after = sql.sweep(conn, after, 4, 50.0)
        cursors.append(after)
    assert cursors == ["k03", "k07", "k11", "k15", "k19"], "a lap in key order"
    left = {k for (k,) in conn.execute("SELECT key FROM af_idempotency")}
    assert left == {k for k, *_ in rows} - expired and expired, "pending, live, kept forever stay"
    assert sql.sweep(conn, after, 4, 50.0) == "", "past the last key: the next lap starts over"


def test_a_file_with_the_old_expiry_index_drops_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            sql.SCHEMA.split("DROP INDEX")[0]
            + "CREATE INDEX af_idempotency_done_expires ON af_idempotency (expires)"
            " WHERE state = 1;"
        )
    with sqlite3.connect(path) as conn:
        conn.executescript(sql.SCHEMA)
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == []


async def test_sqlite_concurrent_first_use(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "lazy.db")
    try:
        claims = await asyncio.gather(*(s.claim(f"k{i}", 10) for i in range(10)))
        assert [c.state for c in claims] == [A] * 10
    finally:
        await s.close()


async def test_sqlite_open_failure_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = SqliteStore(blocker / "idem.db")
    with pytest.raises(OSError):
        await s.open()
    with pytest.raises(OSError):
        await s.claim("k", 1)  # retries the open, fails the same way


async def test_two_sqlite_stores_race_on_claim(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    stores = [SqliteStore(path) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        for round_ in range(20):
            key = f"k{round_}"
            claims = await asyncio.gather(*(s.claim(key, 30) for s in stores))
            states = sorted(c.state.value for c in claims)
            assert states.count(A.value) == 1, states
            assert states.count(B.value) == 3
    finally:
        for s in stores:
            await s.close()


def _claim_in_process(path: str, start: object, out: object) -> None:
    """Child process body: claim a key once a shared event fires."""

    async def go() -> str:
        store = SqliteStore(path)
        await store.open()
        try:
            return (await store.claim("contended", 30)).state.value
        finally:
            await store.close()

    start.wait()  # type: ignore[attr-defined]
    out.put(asyncio.run(go()))  # type: ignore[attr-defined]


def test_two_processes_race_on_claim(tmp_path: Path) -> None:
    path = os.fspath(tmp_path / "procs.db")
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(path, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results == ["acquired", "busy", "busy"]


@pytest.mark.parametrize(
    ("url", "check"),
    [
        ("memory://", lambda s: isinstance(s, MemoryStore) and s.max_entries == 100_000),
        ("memory://?max_entries=5", lambda s: isinstance(s, MemoryStore) and s.max_entries == 5),
        (
            "sqlite:///tmp/x/idem.db",
            lambda s: isinstance(s, SqliteStore) and s.path == "/tmp/x/idem.db",
        ),
        ("sqlite://rel.db", lambda s: isinstance(s, SqliteStore) and s.path == "rel.db"),
        ("sqlite://dir/rel.db", lambda s: isinstance(s, SqliteStore) and s.path == "dir/rel.db"),
    ],
)
def test_store_from_url(url: str, check: Callable[[IdempotencyStore], bool]) -> None:
    assert check(store_from_url(url))


def test_store_from_url_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="bogus://x"):
        store_from_url("bogus://x")
    with pytest.raises(ValueError, match="sqlite://"):
        store_from_url("sqlite://")
