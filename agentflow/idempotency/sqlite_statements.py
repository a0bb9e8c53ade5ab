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
]

PENDING = 0
DONE = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS af_idempotency (
    key      TEXT PRIMARY KEY,
    state    INTEGER NOT NULL,  -- 0 pending (leased until expires), 1 done (kept until expires)
    attempts INTEGER NOT NULL,
    expires  REAL               -- NULL on a done key: kept forever
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS af_idempotency_done_expires
    ON af_idempotency (expires) WHERE state = 1;
"""


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

    One upsert for a whole chunk of distinct keys: it writes exactly the keys that can be
    acquired (absent, completion expired, lease expired) and returns their attempt counts;
    the keys it left alone are read to tell completed from busy, as ``claim_one`` would.
    """
    if len(set(keys)) != len(keys):  # a key twice: the second must see the first's claim
        return [claim_one(conn, key, now, lease) for key in keys]
    acquired: dict[str, int] = {}
    for chunk in chunks(keys):
        params = [*rows(chunk, now + lease), now, now]
        acquired.update(conn.execute(claim_sql(len(chunk)), params).fetchall())
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
def complete_sql(rows: int) -> str:
    """The completion upsert for ``rows`` keys; its parameters: (key, expires) per row."""
    return _upsert(DONE, rows) + " state = excluded.state, expires = excluded.expires"


def row(conn: sqlite3.Connection, key: str) -> tuple[int, int, float | None] | None:
    """A key's stored (state, attempts, expires), or None."""
    found: tuple[int, int, float | None] | None = conn.execute(
        "SELECT state, attempts, expires FROM af_idempotency WHERE key = ?", (key,)
    ).fetchone()
    return found


def complete_all(
    conn: sqlite3.Connection,
    keys: Sequence[str],
    expires: float | None,
    purge_before: float | None,
) -> None:
    """Record several completions (and purge when due); inside a transaction."""
    for chunk in chunks(keys):
        conn.execute(complete_sql(len(chunk)), rows(chunk, expires))
    if purge_before is not None:
        purge(conn, purge_before)


def purge(conn: sqlite3.Connection, before: float) -> None:
    """Delete completions that expired before ``before``; inside a transaction."""
    conn.execute("DELETE FROM af_idempotency WHERE state = ? AND expires <= ?", (DONE, before))


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
