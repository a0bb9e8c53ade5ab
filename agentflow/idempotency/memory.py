"""In-process idempotency store: leases and completed keys in bounded dictionaries."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from agentflow.idempotency.base import Claim, ClaimState, IdempotencyStore

__all__ = ["MemoryStore", "from_url"]


@dataclass(slots=True)
class _Pending:
    """A key that was claimed and not completed: leased until ``lease_until``."""

    attempts: int
    lease_until: float


@dataclass(slots=True)
class _Done:
    """A completed key, remembered until ``expires`` (``None``: until evicted)."""

    attempts: int
    expires: float | None


class MemoryStore(IdempotencyStore):
    """Idempotency keys held in this process; at most ``max_entries`` keys.

    When full, the oldest completed key is evicted first, then the oldest key that is not
    leased, and only then the oldest lease, so live claims are the last thing lost.
    A ``ttl <= 0`` passed to :meth:`complete` keeps the key until it is evicted.
    """

    def __init__(
        self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        # Both ordered by last write, so the front is always the eviction candidate.
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._done: OrderedDict[str, _Done] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending) + len(self._done)

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release; the keys stay for reuse of this instance."""

    async def claim(self, key: str, lease: float) -> Claim:
        """Claim ``key`` for ``lease`` seconds (see :class:`IdempotencyStore`)."""
        now = self._clock()
        done = self._done.get(key)
        if done is not None:
            if done.expires is None or done.expires > now:
                return Claim(ClaimState.COMPLETED, done.attempts)
            # Expired completion: the key is new again, attempts start over.
            del self._done[key]
        pending = self._pending.get(key)
        if pending is not None and pending.lease_until > now:
            return Claim(ClaimState.BUSY, pending.attempts)
        attempts = 1 if pending is None else pending.attempts + 1
        self._pending[key] = _Pending(attempts, now + lease)
        self._pending.move_to_end(key)
        self._evict()
        return Claim(ClaimState.ACQUIRED, attempts)

    async def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` completed for ``ttl`` seconds (forever, until evicted, if ``ttl <= 0``)."""
        pending = self._pending.pop(key, None)
        attempts = pending.attempts if pending is not None else 1
        expires = self._clock() + ttl if ttl > 0 else None
        self._done[key] = _Done(attempts, expires)
        self._done.move_to_end(key)
        self._evict()

    async def release(self, key: str) -> None:
        """End the lease now, keeping the attempt count for the next claim."""
        pending = self._pending.get(key)
        if pending is not None:
            pending.lease_until = self._clock()

    async def forget(self, key: str) -> None:
        """Drop ``key`` and its attempt count."""
        self._pending.pop(key, None)
        self._done.pop(key, None)

    def _evict(self) -> None:
        """Trim to ``max_entries``: expired or oldest completed, then idle, then leased keys."""
        excess = len(self) - self.max_entries
        if excess <= 0:
            return
        done = self._done
        while excess > 0 and done:
            done.popitem(last=False)
            excess -= 1
        if excess <= 0:
            return
        now = self._clock()
        idle = [k for k, p in self._pending.items() if p.lease_until <= now][:excess]
        for k in idle:
            del self._pending[k]
        excess -= len(idle)
        while excess > 0 and self._pending:
            self._pending.popitem(last=False)
            excess -= 1


def from_url(url: str) -> MemoryStore:
    """Build a store from ``memory://`` (optionally ``?max_entries=N``)."""
    query = parse_qs(urlsplit(url).query)
    try:
        max_entries = int(query.get("max_entries", ["100000"])[-1])
    except ValueError as exc:
        raise ValueError(f"bad max_entries in idempotency store URL {url!r}") from exc
    return MemoryStore(max_entries)
