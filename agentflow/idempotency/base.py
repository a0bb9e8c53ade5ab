"""The idempotency-store protocol: claim a key before a handler runs, complete it after.

A claim both guards against running a completed key twice and counts attempts, so a message
that kills its worker on every attempt is still recognised as exhausted (and dead-lettered).
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

_T = TypeVar("_T")


class ClaimState(enum.Enum):
    """Outcome of :meth:`IdempotencyStore.claim`."""

    ACQUIRED = "acquired"  # caller owns the key now and should run the handler
    COMPLETED = "completed"  # the key already completed: ack without running
    BUSY = "busy"  # another worker holds an unexpired lease on the key: retry later


@dataclass(frozen=True, slots=True)
class Claim:
    """Result of a claim: its state and how many attempts were made on the key so far."""

    state: ClaimState
    # Attempts including this one when ACQUIRED; the stored count otherwise.
    attempts: int


# The usual claim outcome; claims are frozen, so one object serves every store and call.
FIRST_CLAIM = Claim(ClaimState.ACQUIRED, 1)


class IdempotencyStore(abc.ABC):
    """Where agents record which idempotency keys are in progress or done.

    Keys are namespaced by agent by the caller (``"<agent>:<key>"``).
    """

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect or create storage."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources."""

    @abc.abstractmethod
    async def claim(self, key: str, lease: float) -> Claim:
        """Claim ``key`` for ``lease`` seconds, counting one more attempt when acquired.

        A key whose lease expired (its worker died) can be acquired again, and the attempt
        count carries over.
        """

    async def claim_many(self, keys: Sequence[str], lease: float) -> list[Claim | Exception]:
        """Claim several keys (in order); per key, its claim or the error that kept it back.

        The runtime claims the messages it is about to start together, so a store whose
        claims are round trips or transactions pays one per group instead of one per key.
        This default claims them concurrently; stores that can batch override it.
        """
        results = await asyncio.gather(
            *(self.claim(k, lease) for k in keys), return_exceptions=True
        )
        return [_per_key(r) for r in results]

    @abc.abstractmethod
    async def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` completed; remember it for ``ttl`` seconds."""

    async def complete_many(self, keys: Sequence[str], ttl: float) -> list[Exception | None]:
        """Complete several keys; per key, the error that kept it from completing.

        One after another, which costs nothing extra where a completion does not wait for a
        round trip; stores whose completions do wait override this.
        """
        out: list[Exception | None] = []
        for key in keys:
            try:
                await self.complete(key, ttl)
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out

    async def _complete_concurrently(
        self, keys: Sequence[str], ttl: float
    ) -> list[Exception | None]:
        """``complete_many`` for stores whose completions are round trips: all in flight."""
        results = await asyncio.gather(
            *(self.complete(k, ttl) for k in keys), return_exceptions=True
        )
        return [_per_key(r) for r in results]

    @abc.abstractmethod
    async def release(self, key: str) -> None:
        """Give up the lease after a failed attempt, keeping the attempt count."""

    @abc.abstractmethod
    async def forget(self, key: str) -> None:
        """Drop ``key`` and its attempt count (after it was dead-lettered, so a replay runs)."""


def _per_key(result: _T | BaseException) -> _T | Exception:
    """One gathered result as a per-key outcome; a cancellation is not one: it is raised."""
    if isinstance(result, BaseException) and not isinstance(result, Exception):
        raise result
    return result
