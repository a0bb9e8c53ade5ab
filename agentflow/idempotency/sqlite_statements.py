"""The SQL of the SQLite idempotency store: its schema and each operation's statements.

Every function here runs on a connection inside a write transaction its caller owns
(``BEGIN IMMEDIATE``), on whichever thread the store runs that batch.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence

from agentflow.idempotency.base import FIRST_CLAIM, Claim, ClaimState

__all__ = [
    "CHUNK_SIZES",
    "SCHEMA",
    "claim_all",
    "claim_one",
    "complete_all",
    "forget",
    "release",
    "sweep",
]

PENDING = 0
DONE = 1

# No index besides the key: expired completions are found by a sweep in key order (see
# ``sweep``); an index on (expires) of done keys doubled the cost of every completion. Files
# made before keep working (the index is dropped on open).
SCHEMA = """
CREATE TABLE IF NOT EXISTS af_idempotency (
    key      TEXT PRIMARY KEY,
    state    INTEGER NOT NULL,  -- 0 pending (leased until expires), 1 done (kept until expires)
    attempts INTEGER NOT NULL,
    expires  REAL               -- NULL on a done key: kept forever
) WITHOUT ROWID;
DROP INDEX IF EXISTS af_idempotency_done_expires;
"""

# Keys a sweep looks at per completed key: the sweep goes round the table at least as fast as
# completions add to it, so expired completions pile up to about a TTL's worth at most.
SWEEP_PER_KEY = 1
SWEEP_MIN = 64


def claim_one(conn: sqlite3.Connection, key: str, now: float, lease: float) -> Claim:
    """Decide and record a claim; runs inside the caller's write transaction."""
    claim = decide(row(conn, key), now)
    if claim.state is ClaimState.ACQUIRED:
        conn.execute(
            "INSERT OR REPLACE INTO af_idempotency VALUES (?, ?, ?, ?)",
            (key, PENDING, claim.attempts, now + lease),
        )
    return claim


def claim_all(
    conn: sqlite3.Connection, keys: Sequence[str], now: float, lease: float
) -> list[Claim]:
    """Decide and record several claims in order; inside the caller's write transaction.

    First one ``INSERT OR IGNORE`` per chunk of distinct keys: when they inserted every key
    (all new: the usual case) all are first claims. Otherwise they are rolled back and one
    upsert per chunk writes exactly the keys that can be acquired (absent, completion expired,
    lease expired) and returns their attempt counts (``RETURNING`` costs about twice the
    insert itself, so only this case pays it); the keys it left alone are read to tell
    completed from busy, as ``claim_one`` would.
    """
    if len(set(keys)) != len(keys):  # a key twice: the second must see the first's claim
        return [claim_one(conn, key, now, lease) for key in keys]
    expires = now + lease
    parts = [(chunk, rows(chunk, expires)) for chunk in chunks(keys)]
    conn.execute("SAVEPOINT af_claim")
    if all(conn.execute(insert_sql(len(c)), p).rowcount == len(c) for c, p in parts):
        conn.execute("RELEASE af_claim")
        return [FIRST_CLAIM] * len(keys)  # claims are frozen: one serves all
    conn.execute("ROLLBACK TO af_claim")
    conn.execute("RELEASE af_claim")
    acquired: dict[str, int] = {}
    for chunk, params in parts:
        acquired.update(conn.execute(claim_sql(len(chunk)), [*params, now, now]).fetchall())
    out: list[Claim] = []
    for key in keys:
        attempts = acquired.get(key)
        if attempts == 1:
            out.append(FIRST_CLAIM)  # the usual case; claims are frozen, so one serves all
        elif attempts is not None:
            out.append(Claim(ClaimState.ACQUIRED, attempts))
        else:  # not acquirable at ``now``: completed or leased
            out.append(decide(row(conn, key), now))
    return out


# Rows per multi-row statement: powers of two up to this many, so a few prepared statements
# (kept in the connection's cache) serve every batch size.
CHUNK = 128
CHUNK_SIZES = [1 << i for i in range(CHUNK.bit_length() - 1, -1, -1)]


def chunks(keys: Sequence[str]) -> list[Sequence[str]]:
    """``keys`` cut into runs of power-of-two lengths, longest first (100 = 64 + 32 + 4)."""
    out: list[Sequence[str]] = []
    start, left = 0, len(keys)
    for size in CHUNK_SIZES:
        while left >= size:
            out.append(keys[start : start + size])
            start += size
            left -= size
    return out


def rows(keys: Sequence[str], expires: float | None) -> list[object]:
    """The parameters of a multi-row statement: (key, expires) for each key."""
    params: list[object] = []
    for key in keys:
        params += (key, expires)
    return params


def _upsert(state: int, rows: int) -> str:
    """``INSERT`` of ``rows`` (key, ``state``, 1, expires) rows, up to ``DO UPDATE SET``."""
    values = ",".join([f"(?, {state}, 1, ?)"] * rows)
    return (
        f"INSERT INTO af_idempotency (key, state, attempts, expires) VALUES {values}"
        " ON CONFLICT (key) DO UPDATE SET"
    )


@functools.lru_cache(maxsize=len(CHUNK_SIZES))
def insert_sql(rows: int) -> str:
    """New keys only: (key, pending, 1 attempt, expires) for ``rows`` keys, others ignored."""
    values = ",".join([f"(?, {PENDING}, 1, ?)"] * rows)
    return f"INSERT OR IGNORE INTO af_idempotency (key, state, attempts, expires) VALUES {values}"


@functools.lru_cache(maxsize=len(CHUNK_SIZES))
def claim_sql(rows: int) -> str:
    """The claim upsert for ``rows`` keys; its parameters: (key, expires) per row, now, now."""
    return (
        _upsert(PENDING, rows)
        + f" attempts = CASE WHEN state = {DONE} THEN 1 ELSE attempts + 1 END,"
        f" state = {PENDING}, expires = excluded.expires"
        f" WHERE (state = {DONE} AND expires IS NOT NULL AND expires <= ?)"
        f" OR (state = {PENDING} AND (expires IS NULL OR expires <= ?))"
        " RETURNING key, attempts"
    )


@functools.lru_cache(maxsize=len(CHUNK_SIZES))
def done_sql(rows: int) -> str:
    """Set ``rows`` existing keys done; parameters: expires, then the keys."""
    marks = ",".join(["?"] * rows)
    return f"UPDATE af_idempotency SET state = {DONE}, expires = ? WHERE key IN ({marks})"


@functools.lru_cache(maxsize=len(CHUNK_SIZES))
def complete_sql(rows: int) -> str:
    """The completion upsert for ``rows`` keys; its parameters: (key, expires) per row."""
    return _upsert(DONE, rows) + " state = excluded.state, expires = excluded.expires"


def row(conn: sqlite3.Connection, key: str) -> tuple[int, int, float | None] | None:
    """A key's stored (state, attempts, expires), or None."""
    found: tuple[int, int, float | None] | None = conn.execute(
        "SELECT state, attempts, expires FROM af_idempotency WHERE key = ?", (key,)
    ).fetchone()
    return found


def complete_all(conn: sqlite3.Connection, keys: Sequence[str], expires: float | None) -> None:
    """Record several completions; inside a transaction.

    Claimed keys have their row: one ``UPDATE`` per chunk sets them done. Should a row be
    missing (deleted meanwhile), the chunk's upsert writes every key of it.
    """
    for chunk in chunks(keys):
        done = conn.execute(done_sql(len(chunk)), [expires, *chunk]).rowcount
        if done != len(set(chunk)):
            conn.execute(complete_sql(len(chunk)), rows(chunk, expires))


def sweep(conn: sqlite3.Connection, after: str, count: int, now: float) -> str:
    """Delete the completions expired at ``now`` among the ``count`` keys after ``after`` (in
    key order); where the next sweep starts ("" once the end of the table is reached)."""
    last = conn.execute(
        "SELECT key FROM af_idempotency WHERE key > ? ORDER BY key LIMIT 1 OFFSET ?",
        (after, max(count, 1) - 1),
    ).fetchone()
    if last is None:  # the rest of the table: the next sweep starts over
        conn.execute(
            "DELETE FROM af_idempotency WHERE key > ? AND state = ? AND expires <= ?",
            (after, DONE, now),
        )
        return ""
    conn.execute(
        "DELETE FROM af_idempotency WHERE key > ? AND key <= ? AND state = ? AND expires <= ?",
        (after, last[0], DONE, now),
    )
    return str(last[0])


def release(conn: sqlite3.Connection, key: str, now: float) -> None:
    """End a pending key's lease at ``now``; inside a transaction."""
    # Returns None, not the cursor: sqlite3 objects must not leave the store thread.
    conn.execute(
        "UPDATE af_idempotency SET expires = ? WHERE key = ? AND state = ?", (now, key, PENDING)
    )


def forget(conn: sqlite3.Connection, key: str) -> None:
    """Delete a key's row; inside a transaction."""
    conn.execute("DELETE FROM af_idempotency WHERE key = ?", (key,))


def decide(row: tuple[int, int, float | None] | None, now: float) -> Claim:
    """The outcome of a claim given the key's stored row."""
    if row is None:
        return FIRST_CLAIM
    state, attempts, expires = row
    if state == DONE:
        if expires is None or expires > now:
            return Claim(ClaimState.COMPLETED, attempts)
        return FIRST_CLAIM  # completion expired: the key is new again
    if expires is not None and expires > now:
        return Claim(ClaimState.BUSY, attempts)
    return Claim(ClaimState.ACQUIRED, attempts + 1)
