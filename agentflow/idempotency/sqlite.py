"""SQLite-file idempotency store: the embedded default that survives a restart.

One connection per store, used only from one dedicated worker thread (sqlite3 objects are
not shareable across threads). The file is in WAL mode. Operations are group-committed:
whatever callers queue while a batch is being written runs, in arrival order, inside the
next single ``BEGIN IMMEDIATE ... COMMIT`` on that thread, so a busy pipeline pays one
COMMIT and one thread hop per batch instead of per operation. ``BEGIN IMMEDIATE`` takes the
write lock up front for the whole batch, so two stores (or processes) on one file can never
both acquire a key. Times are wall-clock epoch seconds because the file outlives the process.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from agentflow.idempotency.base import Claim, ClaimState, IdempotencyStore

__all__ = ["SqliteStore", "from_url"]

_T = TypeVar("_T")

_PENDING = 0
_DONE = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS af_idempotency (
    key      TEXT PRIMARY KEY,
    state    INTEGER NOT NULL,  -- 0 pending (leased until expires), 1 done (kept until expires)
    attempts INTEGER NOT NULL,
    expires  REAL               -- NULL on a done key: kept forever
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS af_idempotency_done_expires
    ON af_idempotency (expires) WHERE state = 1;
"""

# Expired completed keys are deleted at most this often, piggybacked on complete().
_PURGE_INTERVAL = 60.0

# An operation's statements, run on the store thread inside a transaction it does not own.
_Step = Callable[[sqlite3.Connection], object]
# A queued operation and the future its caller awaits.
_Op = tuple[_Step, "asyncio.Future[Any]"]


@dataclass(slots=True)
class _Failed:
    """An operation's exception, carried back from the store thread."""

    error: Exception


@dataclass(eq=False)
class _Session:
    """One open connection, its thread and the operations queued for its next batch."""

    executor: ThreadPoolExecutor
    conn: sqlite3.Connection
    queue: list[_Op] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None
    closed: bool = False


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
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._session: _Session | None = None
        self._open_lock: asyncio.Lock | None = None
        self._last_purge = 0.0

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
                conn = await asyncio.get_running_loop().run_in_executor(executor, self._connect)
            except BaseException:
                executor.shutdown(wait=False)
                raise
            self._session = _Session(executor, conn)

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            # Room for the multi-row statements of every chunk size (see _chunks).
            cached_statements=2 * len(_CHUNK_SIZES) + 16,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is crash-safe in WAL mode for process crashes (what a claim must survive).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
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
                try:
                    outcomes, commits = await loop.run_in_executor(
                        session.executor, _run_batch, session.conn, [op[0] for op in batch]
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

    async def claim(self, key: str, lease: float) -> Claim:
        """Claim ``key`` for ``lease`` seconds, atomically with the rest of its batch."""
        now = self._clock()
        return await self._submit(lambda conn: _claim(conn, key, now, lease))

    async def claim_many(self, keys: Sequence[str], lease: float) -> list[Claim | Exception]:
        """Claim every key, in order, as one step of the next transaction."""
        now = self._clock()
        claims: list[Claim] = await self._submit(lambda conn: _claim_all(conn, keys, now, lease))
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
        """The step completing ``keys`` (purging expired completions when due)."""
        now = self._clock()
        expires = now + ttl if ttl > 0 else None
        purge_before: float | None = None
        if now - self._last_purge >= _PURGE_INTERVAL:
            self._last_purge = purge_before = now
        return lambda conn: _complete_all(conn, keys, expires, purge_before)

    async def release(self, key: str) -> None:
        """End the lease now, keeping the attempt count for the next claim."""
        now = self._clock()
        await self._submit(lambda conn: _release(conn, key, now))

    async def forget(self, key: str) -> None:
        """Drop ``key`` and its attempt count."""
        await self._submit(lambda conn: _forget(conn, key))


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


def _claim(conn: sqlite3.Connection, key: str, now: float, lease: float) -> Claim:
    """Decide and record a claim; runs inside the caller's write transaction."""
    claim = _decide(_row(conn, key), now)
    if claim.state is ClaimState.ACQUIRED:
        conn.execute(
            "INSERT OR REPLACE INTO af_idempotency VALUES (?, ?, ?, ?)",
            (key, _PENDING, claim.attempts, now + lease),
        )
    return claim


def _claim_all(
    conn: sqlite3.Connection, keys: Sequence[str], now: float, lease: float
) -> list[Claim]:
    """Decide and record several claims in order; inside the caller's write transaction.

    One upsert for a whole chunk of distinct keys: it writes exactly the keys that can be
    acquired (absent, completion expired, lease expired) and returns their attempt counts;
    the keys it left alone are read to tell completed from busy, as ``_claim`` would.
    """
    if len(set(keys)) != len(keys):  # a key twice: the second must see the first's claim
        return [_claim(conn, key, now, lease) for key in keys]
    acquired: dict[str, int] = {}
    for chunk in _chunks(keys):
        params = [*_rows(chunk, now + lease), now, now]
        acquired.update(conn.execute(_claim_sql(len(chunk)), params).fetchall())
    out: list[Claim] = []
    for key in keys:
        attempts = acquired.get(key)
        if attempts is not None:
            out.append(Claim(ClaimState.ACQUIRED, attempts))
        else:  # not acquirable at ``now``: completed or leased
            out.append(_decide(_row(conn, key), now))
    return out


# Rows per multi-row statement: powers of two up to this many, so a few prepared statements
# (kept in the connection's cache) serve every batch size.
_CHUNK = 128
_CHUNK_SIZES = [1 << i for i in range(_CHUNK.bit_length() - 1, -1, -1)]


def _chunks(keys: Sequence[str]) -> list[Sequence[str]]:
    """``keys`` cut into runs of power-of-two lengths, longest first (100 = 64 + 32 + 4)."""
    out: list[Sequence[str]] = []
    start, left = 0, len(keys)
    for size in _CHUNK_SIZES:
        while left >= size:
            out.append(keys[start : start + size])
            start += size
            left -= size
    return out


def _rows(keys: Sequence[str], expires: float | None) -> list[object]:
    """The parameters of a multi-row statement: (key, expires) for each key."""
    params: list[object] = []
    for key in keys:
        params += (key, expires)
    return params


@functools.lru_cache(maxsize=len(_CHUNK_SIZES))
def _claim_sql(rows: int) -> str:
    """The claim upsert for ``rows`` keys; its parameters: (key, expires) per row, now, now."""
    values = ",".join([f"(?, {_PENDING}, 1, ?)"] * rows)
    return (
        f"INSERT INTO af_idempotency (key, state, attempts, expires) VALUES {values}"
        " ON CONFLICT (key) DO UPDATE SET"
        f" attempts = CASE WHEN state = {_DONE} THEN 1 ELSE attempts + 1 END,"
        f" state = {_PENDING}, expires = excluded.expires"
        f" WHERE (state = {_DONE} AND expires IS NOT NULL AND expires <= ?)"
        f" OR (state = {_PENDING} AND (expires IS NULL OR expires <= ?))"
        " RETURNING key, attempts"
    )


@functools.lru_cache(maxsize=len(_CHUNK_SIZES))
def _complete_sql(rows: int) -> str:
    """The completion upsert for ``rows`` keys; its parameters: (key, expires) per row."""
    values = ",".join([f"(?, {_DONE}, 1, ?)"] * rows)
    return (
        f"INSERT INTO af_idempotency (key, state, attempts, expires) VALUES {values}"
        " ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires = excluded.expires"
    )


def _row(conn: sqlite3.Connection, key: str) -> tuple[int, int, float | None] | None:
    """A key's stored (state, attempts, expires), or None."""
    row: tuple[int, int, float | None] | None = conn.execute(
        "SELECT state, attempts, expires FROM af_idempotency WHERE key = ?", (key,)
    ).fetchone()
    return row


def _complete_all(
    conn: sqlite3.Connection,
    keys: Sequence[str],
    expires: float | None,
    purge_before: float | None,
) -> None:
    """Record several completions (and purge when due); inside a transaction."""
    for chunk in _chunks(keys):
        conn.execute(_complete_sql(len(chunk)), _rows(chunk, expires))
    if purge_before is not None:
        _purge(conn, purge_before)


def _purge(conn: sqlite3.Connection, before: float) -> None:
    """Delete completions that expired before ``before``; inside a transaction."""
    conn.execute("DELETE FROM af_idempotency WHERE state = ? AND expires <= ?", (_DONE, before))


def _release(conn: sqlite3.Connection, key: str, now: float) -> None:
    """End a pending key's lease at ``now``; inside a transaction."""
    # Returns None, not the cursor: sqlite3 objects must not leave the store thread.
    conn.execute(
        "UPDATE af_idempotency SET expires = ? WHERE key = ? AND state = ?", (now, key, _PENDING)
    )


def _forget(conn: sqlite3.Connection, key: str) -> None:
    """Delete a key's row; inside a transaction."""
    conn.execute("DELETE FROM af_idempotency WHERE key = ?", (key,))


def _decide(row: tuple[int, int, float | None] | None, now: float) -> Claim:
    """The outcome of a claim given the key's stored row."""
    if row is None:
        return Claim(ClaimState.ACQUIRED, 1)
    state, attempts, expires = row
    if state == _DONE:
        if expires is None or expires > now:
            return Claim(ClaimState.COMPLETED, attempts)
        return Claim(ClaimState.ACQUIRED, 1)  # completion expired: the key is new again
    if expires is not None and expires > now:
        return Claim(ClaimState.BUSY, attempts)
    return Claim(ClaimState.ACQUIRED, attempts + 1)


def from_url(url: str) -> SqliteStore:
    """Build a store from ``sqlite:///abs/path.db`` or ``sqlite://relative.db``."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path
    if parts.scheme != "sqlite" or not path:
        raise ValueError(f"bad SQLite idempotency store URL {url!r}: expected sqlite:///path.db")
    return SqliteStore(path)
