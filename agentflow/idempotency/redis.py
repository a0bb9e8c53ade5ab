"""Redis idempotency store: one store shared by every worker (e.g. of a Kafka deployment).

``redis://[:password@]host:port/db?prefix=agentflow:idem:&pending_ttl=7d`` (``rediss://`` for
TLS). Each key is a hash ``{s: p|d, a: attempts, l: lease-until ms}``. Claims, completions and
releases are Lua scripts, so each is atomic on the server and reads the server's clock (no
skew between workers). A claimed key is kept for ``pending_ttl`` so its attempt count
outlives a crashed worker's lease; a completed key expires after the ``ttl`` given to
:meth:`complete` (kept until deleted if ``ttl <= 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agentflow.idempotency.base import Claim, ClaimState, IdempotencyStore

__all__ = ["RedisStore", "from_url"]

DEFAULT_PREFIX = "agentflow:idem:"
DEFAULT_PENDING_TTL = 7 * 86_400.0

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] key; ARGV[1] lease ms, ARGV[2] pending ttl ms -> {state, attempts}
_CLAIM = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 's', 'a', 'l')
local attempts = tonumber(h[2] or '0')
if h[1] == 'd' then return {2, attempts} end
if h[1] == 'p' and tonumber(h[3] or '0') > now then return {3, attempts} end
attempts = attempts + 1
redis.call('HSET', KEYS[1], 's', 'p', 'a', attempts, 'l', now + tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, attempts}
"""
)

# KEYS[1] key; ARGV[1] ttl ms (<= 0: keep)
_COMPLETE = """
local attempts = tonumber(redis.call('HGET', KEYS[1], 'a') or '1')
redis.call('HSET', KEYS[1], 's', 'd', 'a', attempts)
redis.call('HDEL', KEYS[1], 'l')
if tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
else
  redis.call('PERSIST', KEYS[1])
end
return attempts
"""

# KEYS[1] key: end a live lease now, keeping the attempt count.
_RELEASE = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 's') == 'p' then
  redis.call('HSET', KEYS[1], 'l', now)
end
return 0
"""
)

_STATES = {1: ClaimState.ACQUIRED, 2: ClaimState.COMPLETED, 3: ClaimState.BUSY}


class RedisStore(IdempotencyStore):
    """Idempotency keys in Redis, safe to share between processes and machines."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        pending_ttl: float = DEFAULT_PENDING_TTL,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.pending_ttl = pending_ttl
        self._client: Any = None
        self._claim: Any = None
        self._complete: Any = None
        self._release: Any = None

    async def open(self) -> None:
        """Connect and check the server answers (RuntimeError naming the URL otherwise)."""
        if self._client is not None:
            return
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        client = aioredis.from_url(self.url)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise RuntimeError(
                f"idempotency store {_redact(self.url)} could not be opened: {exc}"
            ) from None
        self._client = client
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    async def close(self) -> None:
        """Close the connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _key(self, key: str) -> str:
        if self._client is None:
            raise RuntimeError(f"idempotency store {_redact(self.url)} is not open")
        return self.prefix + key

    async def claim(self, key: str, lease: float) -> Claim:
        """Claim ``key`` for ``lease`` seconds (see :class:`IdempotencyStore`)."""
        name = self._key(key)
        state, attempts = await self._claim(
            keys=[name], args=[max(int(lease * 1000), 1), int(self.pending_ttl * 1000)]
        )
        return Claim(_STATES[int(state)], int(attempts))

    async def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` completed for ``ttl`` seconds (until deleted if ``ttl <= 0``)."""
        await self._complete(keys=[self._key(key)], args=[int(ttl * 1000) if ttl > 0 else 0])

    async def complete_many(self, keys: Sequence[str], ttl: float) -> list[Exception | None]:
        """Complete every key, all in flight at once (each is a round trip)."""
        return await self._complete_concurrently(keys, ttl)

    async def release(self, key: str) -> None:
        """End the lease now, keeping the attempt count for the next claim."""
        await self._release(keys=[self._key(key)], args=[])

    async def forget(self, key: str) -> None:
        """Drop ``key`` and its attempt count."""
        await self._client.delete(self._key(key))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def _seconds(text: str) -> float:
    number = text.rstrip("smhd")
    unit = text[len(number) :] or "s"
    if unit not in _UNITS:
        raise ValueError(f"not a duration: {text!r} (e.g. 3600, 12h, 7d)")
    return float(number) * _UNITS[unit]


def from_url(url: str) -> RedisStore:
    """Build a store from ``redis://...`` or ``rediss://...`` (``prefix``, ``pending_ttl``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"bad Redis store URL {_redact(url)!r}: expected redis://host:port/db")
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("prefix", "pending_ttl"):
            ours[name] = value
        else:
            rest.append((name, value))  # redis-py's own options (socket_timeout, ...)
    try:
        pending_ttl = _seconds(ours.get("pending_ttl", str(DEFAULT_PENDING_TTL)))
    except ValueError as exc:
        raise ValueError(f"bad Redis store URL {_redact(url)!r}: pending_ttl: {exc}") from None
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    return RedisStore(
        client_url, prefix=ours.get("prefix", DEFAULT_PREFIX), pending_ttl=pending_ttl
    )
