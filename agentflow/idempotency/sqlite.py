"""SQLite-file idempotency store: the embedded default that survives a restart.

One connection per store, used only from one dedicated worker thread (sqlite3 objects are
not shareable across threads). The file is in WAL mode; every claim runs in one
``BEGIN IMMEDIATE`` transaction, which takes the write lock up front, so two stores (or
processes) on one file can never both acquire a key. Times are wall-clock epoch seconds
because the file outlives the process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
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
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._last_purge = 0.0

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` with the connection on the store's own thread, opening on first use."""
        if self._executor is None:
            await self.open()
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"idempotency store {self.path!r} could not be opened")

        def call() -> _T:
            # The executor is FIFO on one thread, so a concurrent open's connect ran first.
            if self._conn is None:
                raise RuntimeError(f"idempotency store {self.path!r} is not open")
            return fn(self._conn)

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def open(self) -> None:
        """Create the file and table if needed; idempotent and safe to call concurrently."""
        if self._executor is not None:
            return
        # Set before the first await, so concurrent callers queue behind this connect.
        executor = self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="af-sqlite"
        )

        def connect() -> None:
            self._conn = self._connect()

        try:
            await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            if self._executor is executor:
                self._executor = None
            executor.shutdown(wait=False)
            raise

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
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
        """Close the connection and stop the worker thread."""
        executor, conn = self._executor, self._conn
        self._executor, self._conn = None, None
        if executor is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    async def claim(self, key: str, lease: float) -> Claim:
        """Claim ``key`` for ``lease`` seconds in one write transaction."""
        now = self._clock()

        def tx(conn: sqlite3.Connection) -> Claim:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT state, attempts, expires FROM af_idempotency WHERE key = ?", (key,)
                ).fetchone()
                claim = _decide(row, now)
                if claim.state is ClaimState.ACQUIRED:
                    conn.execute(
                        "INSERT OR REPLACE INTO af_idempotency VALUES (?, ?, ?, ?)",
                        (key, _PENDING, claim.attempts, now + lease),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return claim

        return await self._run(tx)

    async def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` completed for ``ttl`` seconds, keeping its attempt count."""
        now = self._clock()
        expires = now + ttl if ttl > 0 else None
        purge = now - self._last_purge >= _PURGE_INTERVAL
        if purge:
            self._last_purge = now

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO af_idempotency VALUES (?, ?, 1, ?) ON CONFLICT (key) DO UPDATE"
                    " SET state = excluded.state, expires = excluded.expires",
                    (key, _DONE, expires),
                )
                if purge:
                    conn.execute(
                        "DELETE FROM af_idempotency WHERE state = ? AND expires <= ?",
                        (_DONE, now),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._run(tx)

    async def release(self, key: str) -> None:
        """End the lease now, keeping the attempt count for the next claim."""
        now = self._clock()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE af_idempotency SET expires = ? WHERE key = ? AND state = ?",
                (now, key, _PENDING),
            )

        await self._run(tx)

    async def forget(self, key: str) -> None:
        """Drop ``key`` and its attempt count."""
        await self._run(
            lambda conn: conn.execute("DELETE FROM af_idempotency WHERE key = ?", (key,))
        )


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
