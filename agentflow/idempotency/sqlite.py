"""SQLite-file idempotency store: the embedded default that survives a restart.

The file is in WAL mode. Operations are group-committed: whatever callers queue while a
batch is being written runs, in arrival order, inside the next single ``BEGIN IMMEDIATE ...
COMMIT``, so a busy pipeline pays one COMMIT per batch instead of per operation.
``BEGIN IMMEDIATE`` takes the write lock up front for the whole batch, so two stores (or
processes) on one file can never both acquire a key.

Where a batch runs: a batch of a few hundred keys takes well under a millisecond, less than
a hop to a thread and back (and the GIL hand-offs on the way), so it first runs on the event
loop's thread on a connection that never waits for the write lock. If the lock is taken
(another store or process is writing) or anything fails, that attempt is rolled back and the
batch runs on the store's own thread, on a second connection that waits up to
``busy_timeout`` and isolates a failing operation. The loop-side connection never
checkpoints (that may fsync); the thread checkpoints the WAL now and then instead. Times are
wall-clock epoch seconds because the file outlives the process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from agentflow.idempotency import sqlite_statements as sql
from agentflow.idempotency.base import Claim, IdempotencyStore

__all__ = ["SqliteStore", "from_url"]

_T = TypeVar("_T")


# An operation's statements, run on the store thread inside a transaction it does not own.
_Step = Callable[[sqlite3.Connection], object]
# A queued operation and the future its caller awaits.
_Op = tuple[_Step, "asyncio.Future[Any]"]


@dataclass(slots=True)
class _Failed:
    """An operation's exception, carried back from the store thread."""

    error: Exception


# Loop-side commits between two WAL checkpoints on the store thread.
_CHECKPOINT_EVERY = 256


@dataclass(eq=False)
class _Session:
    """The store's connections, its thread and the operations queued for its next batch."""

    executor: ThreadPoolExecutor
    conn: sqlite3.Connection  # used on the store thread only: waits for the write lock
    quick: sqlite3.Connection  # used on the loop's thread: never waits, never checkpoints
    queue: list[_Op] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None
    closed: bool = False
    since_checkpoint: int = 0


class SqliteStore(IdempotencyStore):
    """Idempotency keys in a SQLite file; a ``ttl <= 0`` keeps a completed key forever."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        # Write transactions committed so far: one per batch, or one per operation when a
        # failed batch falls back; shows how well operations are being grouped.
        self.transactions = 0
        # Of those, committed on the event loop's thread (the write lock was free at once).
        self.loop_transactions = 0
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._session: _Session | None = None
        self._open_lock: asyncio.Lock | None = None
        # Where the next sweep for expired completions starts (key order; "": the start).
        self._sweep_after = ""

    async def open(self) -> None:
        """Create the file and table if needed; idempotent and safe to call concurrently."""
        if self._session is not None:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        # Concurrent first users wait for one connect; after a failure the next one retries.
        async with self._open_lock:
            if self._session is not None:
                return
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="af-sqlite")
            try:
                conn, quick = await asyncio.get_running_loop().run_in_executor(
                    executor, self._connect_both
                )
            except BaseException:
                executor.shutdown(wait=False)
                raise
            self._session = _Session(executor, conn, quick)

    def _connect_both(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        conn = self._connect(self._busy_timeout)
        try:
            # check_same_thread=False: opened here, used only on the loop's thread after.
            quick = self._connect(0.0, check_same_thread=False)
            quick.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            conn.close()
            raise
        return conn, quick

    def _connect(self, timeout: float, check_same_thread: bool = True) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(
            self.path,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=check_same_thread,
            # Room for the multi-row statements of every chunk size (see sql.chunks).
            cached_statements=2 * len(sql.CHUNK_SIZES) + 16,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is crash-safe in WAL mode for process crashes (what a claim must survive).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(sql.SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Run the operations already queued, then close the connection and stop the thread."""
        session, self._session = self._session, None
        if session is None:
            return
        loop = asyncio.get_running_loop()
        try:
            if session.flusher is not None:
                # Queued callers are waiting for a result: let the flusher drain them. New
                # operations cannot join: they open a new session.
                await asyncio.shield(session.flusher)
        finally:
            # Set even if close() is cancelled: the flusher then fails what is left instead
            # of scheduling onto a stopped thread. The thread is FIFO, so the connection
            # closes after any batch still in flight.
            session.closed = True
            session.quick.close()
            closing = loop.run_in_executor(session.executor, session.conn.close)
            session.executor.shutdown(wait=False)
        await closing

    async def _submit(self, step: Callable[[sqlite3.Connection], _T]) -> _T:
        """Queue ``step`` for the next batch and wait for its own result."""
        (future,) = await self._queue([step])
        return cast(_T, await future)

    async def _queue(
        self, steps: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[asyncio.Future[Any]]:
        """Queue steps for the next batch; a future per step."""
        session = self._session
        if session is None:
            await self.open()
            session = self._session
            if session is None:  # closed while it was opening
                raise RuntimeError(f"idempotency store {self.path!r} is not open")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in steps]
        session.queue.extend(zip(steps, futures, strict=True))
        if session.flusher is None:
            # No linger: the flusher runs on the next loop turn, taking whatever queued by
            # then; later arrivals queue while it commits and form the next batch.
            session.flusher = loop.create_task(self._flush(session))
        return futures

    async def _flush(self, session: _Session) -> None:
        """Commit queued operations batch by batch until the queue is empty."""
        loop = asyncio.get_running_loop()
        batch: list[_Op] = []
        error: BaseException | None = None
        try:
            while session.queue and not session.closed:
                # A caller cancelled before its batch starts is skipped, as an executor job
                # cancelled before it starts never runs.
                batch = [op for op in session.queue if not op[1].done()]
                session.queue = []
                if not batch:
                    continue
                steps = [op[0] for op in batch]
                quick = self._on_loop(session, steps)
                if quick is not None:
                    outcomes, commits = quick, 1
                else:
                    try:
                        outcomes, commits = await loop.run_in_executor(
                            session.executor, _run_batch, session.conn, steps
                        )
                    except Exception as exc:  # e.g. a failed ROLLBACK: fail this batch only
                        outcomes, commits = [_Failed(exc)] * len(batch), 0
                self.transactions += commits
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, _Failed):
                        future.set_exception(outcome.error)
                    else:
                        future.set_result(outcome)
                batch = []
        except BaseException as exc:  # cancelled with the loop: nobody may wait forever
            error = exc
            raise
        finally:
            session.flusher = None
            left = [op for op in (*batch, *session.queue) if not op[1].done()]
            session.queue = []
            for _, future in left:
                failure = RuntimeError(f"idempotency store {self.path!r} closed before the write")
                failure.__cause__ = error
                future.set_exception(failure)

    def _on_loop(self, session: _Session, steps: list[_Step]) -> list[object] | None:
        """The batch committed on the loop's thread, or None: the store thread must run it."""
        outcomes = _run_quick(session.quick, steps)
        if outcomes is None:
            return None
        self.loop_transactions += 1
        session.since_checkpoint += 1
        if session.since_checkpoint >= _CHECKPOINT_EVERY:
            session.since_checkpoint = 0
            # Queued on the thread, not awaited: FIFO before any later batch there.
            asyncio.get_running_loop().run_in_executor(session.executor, _checkpoint, session.conn)
        return outcomes

    async def claim(self, key: str, lease: float) -> Claim:
        """Claim ``key`` for ``lease`` seconds, atomically with the rest of its batch."""
        now = self._clock()
        return await self._submit(lambda conn: sql.claim_one(conn, key, now, lease))

    async def claim_many(self, keys: Sequence[str], lease: float) -> list[Claim | Exception]:
        """Claim every key, in order, as one step of the next transaction."""
        now = self._clock()
        claims: list[Claim] = await self._submit(lambda conn: sql.claim_all(conn, keys, now, lease))
        return list(claims)

    async def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` completed for ``ttl`` seconds, keeping its attempt count."""
        await self._submit(self._completion([key], ttl))

    async def complete_many(self, keys: Sequence[str], ttl: float) -> list[Exception | None]:
        """Complete every key with one statement in the next transaction."""
        try:
            await self._submit(self._completion(keys, ttl))
        except Exception as exc:
            return [exc] * len(keys)
        return [None] * len(keys)

    def _completion(self, keys: Sequence[str], ttl: float) -> _Step:
        """The step completing ``keys``, then sweeping on for expired completions."""
        now = self._clock()
        expires = now + ttl if ttl > 0 else None
        count = max(len(keys) * sql.SWEEP_PER_KEY, sql.SWEEP_MIN)

        def step(conn: sqlite3.Connection) -> None:
            sql.complete_all(conn, keys, expires)
            # Should this transaction roll back, its range waits for the next lap (harmless:
            # an expired completion reads as absent anyway).
            self._sweep_after = sql.sweep(conn, self._sweep_after, count, now)

        return step

    async def release(self, key: str) -> None:
        """End the lease now, keeping the attempt count for the next claim."""
        now = self._clock()
        await self._submit(lambda conn: sql.release(conn, key, now))

    async def forget(self, key: str) -> None:
        """Drop ``key`` and its attempt count."""
        await self._submit(lambda conn: sql.forget(conn, key))


def _run_quick(conn: sqlite3.Connection, steps: list[_Step]) -> list[object] | None:
    """On the loop's thread: every step in one transaction, or None (rolled back) if the
    write lock is taken or anything fails; the store thread then runs the batch."""
    try:
        conn.execute("BEGIN IMMEDIATE")  # timeout 0: fails at once while another writes
    except sqlite3.Error:
        return None
    try:
        results = [step(conn) for step in steps]
        conn.execute("COMMIT")
    except Exception:
        _rollback(conn)
        return None
    except BaseException:
        _rollback(conn)
        raise
    return results


def _checkpoint(conn: sqlite3.Connection) -> None:
    """On the store thread: copy the WAL back into the database without blocking writers."""
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:  # busy readers or writers: the next one catches up
        pass


def _run_batch(conn: sqlite3.Connection, steps: list[_Step]) -> tuple[list[object], int]:
    """On the store thread: every step in one transaction; outcomes and commits made."""
    if len(steps) > 1:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            # No write lock within busy_timeout: retrying op by op would wait that long
            # once per operation, so the whole batch fails, as each op alone would have.
            return [_Failed(exc)] * len(steps), 0
        try:
            results = [step(conn) for step in steps]
            conn.execute("COMMIT")
            return results, 1
        except Exception:
            # Some step failed (or the COMMIT did): undo everything and rerun the steps
            # one transaction each below, so only the failing one reports an error.
            _rollback(conn)
        except BaseException:
            _rollback(conn)
            raise
    outcomes = [_run_alone(conn, step) for step in steps]
    return outcomes, sum(not isinstance(o, _Failed) for o in outcomes)


def _run_alone(conn: sqlite3.Connection, step: _Step) -> object:
    """On the store thread: one step in its own transaction; its result or its failure."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        result = step(conn)
        conn.execute("COMMIT")
    except Exception as exc:
        _rollback(conn)
        return _Failed(exc)
    except BaseException:
        _rollback(conn)
        raise
    return result


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (SQLITE_FULL, IOERR, ...) already ended the transaction.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def from_url(url: str) -> SqliteStore:
    """Build a store from ``sqlite:///abs/path.db`` or ``sqlite://relative.db``."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path
    if parts.scheme != "sqlite" or not path:
        raise ValueError(f"bad SQLite idempotency store URL {url!r}: expected sqlite:///path.db")
    return SqliteStore(path)
