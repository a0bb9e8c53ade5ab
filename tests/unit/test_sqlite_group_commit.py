"""SqliteStore group commit: concurrent operations share one transaction, same semantics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentflow.idempotency import Claim, ClaimState
from agentflow.idempotency.sqlite import SqliteStore

A, B, C = ClaimState.ACQUIRED, ClaimState.BUSY, ClaimState.COMPLETED


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An opened store on a temp file."""
    s = SqliteStore(tmp_path / "idem.db")
    await s.open()
    yield s
    await s.close()


def _hold_write_lock(path: str) -> sqlite3.Connection:
    """A separate connection holding the file's write lock until it rolls back."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _rows(path: str) -> dict[str, tuple[int, int]]:
    """Each stored key's (state, attempts), read through a separate connection."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key, state, attempts FROM af_idempotency").fetchall()
    return {k: (state, attempts) for k, state, attempts in rows}


async def test_concurrent_handlers_share_transactions(store: SqliteStore) -> None:
    async def handler(worker: int) -> None:
        for i in range(20):
            key = f"w{worker}-{i}"
            claim = await store.claim(key, 30)
            assert (claim.state, claim.attempts) == (A, 1)
            await store.complete(key, 3600)

    await asyncio.gather(*(handler(w) for w in range(100)))
    ops = 100 * 20 * 2
    # One transaction per operation would be 4,000; batches of ~100 make it ~40.
    assert 0 < store.transactions < ops // 10, store.transactions
    rows = _rows(store.path)
    assert len(rows) == 2000
    assert set(rows.values()) == {(1, 1)}
    again = await asyncio.gather(*(store.claim(f"w{w}-0", 30) for w in range(100)))
    assert {c.state for c in again} == {C}


async def test_operations_queued_together_commit_once(store: SqliteStore) -> None:
    before = store.transactions
    claims = await asyncio.gather(*(store.claim(f"k{i}", 30) for i in range(500)))
    assert [(c.state, c.attempts) for c in claims] == [(A, 1)] * 500
    assert store.transactions - before == 1
    assert len(_rows(store.path)) == 500


async def test_same_key_in_one_batch_keeps_arrival_order(store: SqliteStore) -> None:
    before = store.transactions
    first, second = await asyncio.gather(store.claim("k", 30), store.claim("k", 30))
    assert (first.state, first.attempts) == (A, 1)
    assert (second.state, second.attempts) == (B, 1)
    assert store.transactions - before == 1

    before = store.transactions
    done = await asyncio.gather(store.claim("j", 30), store.complete("j", 60), store.claim("j", 30))
    assert [getattr(r, "state", None) for r in done] == [A, None, C]
    retried = await asyncio.gather(store.claim("r", 30), store.release("r"), store.claim("r", 30))
    assert retried[0] == Claim(A, 1) and retried[2] == Claim(A, 2)
    forgot = await asyncio.gather(
        store.claim("f", 30), store.complete("f", 60), store.forget("f"), store.claim("f", 30)
    )
    assert forgot[3] == Claim(A, 1)
    assert store.transactions - before == 3


async def test_failing_operation_does_not_break_its_batch(store: SqliteStore) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON af_idempotency WHEN NEW.key = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
    before = store.transactions
    results = await asyncio.gather(
        store.claim("a", 30),
        store.claim("poison", 30),
        store.claim("b", 30),
        store.complete("a", 60),
        store.claim("a", 30),
        return_exceptions=True,
    )
    assert results[0] == Claim(A, 1)  # the rolled-back batch did not count an attempt
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert "poisoned" in str(results[1])
    assert results[2] == Claim(A, 1)
    assert results[3] is None
    assert results[4] == Claim(C, 1)
    # The batch was rolled back, then the four good operations committed one each.
    assert store.transactions - before == 4
    assert _rows(store.path) == {"a": (1, 1), "b": (0, 1)}

    before = store.transactions
    later = await asyncio.gather(store.claim("c", 30), store.claim("d", 30))
    assert [c.state for c in later] == [A, A]
    assert store.transactions - before == 1  # batching resumes after a failed batch


async def test_two_stores_batching_on_one_file_never_both_acquire(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    stores = [SqliteStore(path) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        keys = [f"k{i}" for i in range(50)]
        per_store = await asyncio.gather(
            *(asyncio.gather(*(s.claim(k, 30) for k in keys)) for s in stores)
        )
        for i in range(len(keys)):
            states = sorted(claims[i].state.value for claims in per_store)
            assert states == [A.value, B.value, B.value], (keys[i], states)
    finally:
        for s in stores:
            await s.close()


async def test_close_runs_queued_operations(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "idem.db")
    await s.open()
    blocker = _hold_write_lock(s.path)
    first = [asyncio.create_task(s.claim(f"a{i}", 30)) for i in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch waits for the write lock on the store thread
    second = [asyncio.create_task(s.claim(f"b{i}", 30)) for i in range(50)]
    await asyncio.sleep(0)  # queued for the next batch
    closing = asyncio.create_task(s.close())
    await asyncio.sleep(0)
    blocker.execute("ROLLBACK")
    await asyncio.wait_for(closing, timeout=30)
    results = await asyncio.wait_for(asyncio.gather(*first, *second), timeout=30)
    assert [c.state for c in results] == [A] * 100
    assert s.transactions == 2
    assert len(_rows(s.path)) == 100
    # A closed store reopens on next use.
    try:
        assert (await s.claim("a0", 30)).state is B
    finally:
        await s.close()
        blocker.close()


async def test_cancelled_close_fails_queued_operations_without_hanging(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "idem.db")
    await s.open()
    blocker = _hold_write_lock(s.path)
    first = [asyncio.create_task(s.claim(f"a{i}", 30)) for i in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch waits for the write lock on the store thread
    second = [asyncio.create_task(s.claim(f"b{i}", 30)) for i in range(50)]
    await asyncio.sleep(0)
    closing = asyncio.create_task(s.close())
    await asyncio.sleep(0)
    closing.cancel()
    blocker.execute("ROLLBACK")
    blocker.close()
    results = await asyncio.wait_for(
        asyncio.gather(*first, *second, return_exceptions=True), timeout=30
    )
    # The batch already on the thread completes; the queued one fails instead of hanging.
    assert results[:50] == [Claim(A, 1)] * 50
    assert all(isinstance(r, RuntimeError) and "closed" in str(r) for r in results[50:])
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert len(_rows(s.path)) == 50


async def test_caller_cancelled_before_its_batch_is_not_written(store: SqliteStore) -> None:
    task = asyncio.create_task(store.claim("k", 30))
    await asyncio.sleep(0)  # the claim is queued, its batch not started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.claim("k", 30) == Claim(A, 1)


async def test_a_batch_commits_on_the_loop_thread_while_the_write_lock_is_free(
    store: SqliteStore,
) -> None:
    for i in range(5):
        assert (await store.claim(f"k{i}", 30)).state is A
    await store.complete_many([f"k{i}" for i in range(5)], 3600)
    assert store.transactions == store.loop_transactions == 6
    assert set(_rows(store.path).values()) == {(1, 1)}


async def test_a_held_write_lock_sends_the_batch_to_the_store_thread(store: SqliteStore) -> None:
    blocker = _hold_write_lock(store.path)
    try:
        claim = asyncio.create_task(store.claim("k", 30))
        await asyncio.sleep(0.2)
        assert not claim.done(), "waits for the lock on the store thread, not on the loop"
        blocker.execute("ROLLBACK")
        assert (await asyncio.wait_for(claim, 30)).state is A
    finally:
        blocker.close()
    assert (store.transactions, store.loop_transactions) == (1, 0)
    assert (await store.claim("k", 30)).state is B
    assert store.loop_transactions == 1, "back on the loop once the lock is free"


async def test_the_store_thread_checkpoints_what_the_loop_committed(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from agentflow.idempotency import sqlite as module

    threads: list[str] = []
    checkpoint = module._checkpoint

    def recording(conn: sqlite3.Connection) -> None:
        threads.append(threading.current_thread().name)
        checkpoint(conn)

    monkeypatch.setattr(module, "_CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(module, "_checkpoint", recording)
    for i in range(5):
        await store.claim(f"k{i}", 30)
    await store.close()  # runs what is queued on the thread first
    assert len(threads) == 2
    assert all(name.startswith("af-sqlite") for name in threads)
    # Everything committed on the loop is in the file, WAL included.
    assert len(_rows(store.path)) == 5
