"""Idempotency store on a JetStream key-value bucket (the default with ``nats://`` brokers).

One bucket per app (``AF_IDEM_<app>``). Every state change is a compare-and-set on the key's
revision (``create`` = "no such key", ``update(last=revision)``), so two workers can never both
acquire a key, exactly like the SQLite store's write transaction. A value records the state
(running / free / done), the attempt count and an expiry in wall-clock epoch seconds (the
lease for running keys, the TTL for done ones).

Cost per message: a claim writes first, as a create (expected revision 0), since a new key is
the common case; only when that write finds the key (a duplicate, a retry, an expired lease,
a tombstone left by ``forget``) is the key read and the write repeated against its revision.
A claim + complete pair on a new key is therefore two JetStream publishes; the claim is
answered on the broker publisher's shared reply inbox, the completion is not awaited when it
shares the broker's connection (``?confirm=true`` waits for it; see ``complete``).

JetStream 2.9 has no per-key TTL: the bucket's ``max_age`` (``?ttl=``, default 7 days) bounds
how long any key is kept, so a completed key is remembered for ``min(ttl, bucket ttl)``.

URLs: ``nats-kv://`` reuses the app's NATS broker connection; ``nats-kv://host:port/bucket``
connects on its own (same options as the broker URL, plus ``ttl``/``replicas``/``storage``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import nats.errors
import orjson
from nats.js import api
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from agentflow import _native
from agentflow.brokers.base import Broker, BrokerError, PublishError
from agentflow.brokers.nats import NatsBroker
from agentflow.brokers.nats_config import parse_duration
from agentflow.brokers.nats_publish import Publisher, Request
from agentflow.brokers.nats_wire import encode_headers
from agentflow.idempotency.base import FIRST_CLAIM, Claim, ClaimState, IdempotencyStore

__all__ = ["NatsKvStore", "from_url"]

log = logging.getLogger("agentflow.idempotency.nats_kv")

DEFAULT_BUCKET_TTL = 7 * 86400.0
_RUNNING, _FREE, _DONE = "r", "f", "d"
# Compare-and-set races are retried this often before a claim reports BUSY.
_CAS_TRIES = 16
# JetStream's "wrong last sequence" error codes (the compare-and-set lost).
_WRONG_LAST = (10071, 10164)
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
# The header block of a create (a write that only succeeds when the key has no revision).
_CREATE = encode_headers({_EXPECTED_LAST: "0"})
# How long a failed write may spend finding out whether the bucket still exists.
_DIAGNOSE_TIMEOUT = 1.0
_STORE_OPTIONS = {"ttl", "replicas", "storage", "bucket", "confirm"}
# (owner token, attempts) of a claim this process holds on a key.
_Held = tuple[str, int]


# Encode an arbitrary idempotency key as a valid KV key (deterministic): URL-safe base64 of
# its UTF-8 without padding, or "h_" + hex SHA-256 when that is empty or over 200 characters.
# Native: every claim and every completion encodes its key.
kv_key = _native.kv_key


def bucket_name(app_name: str) -> str:
    """The bucket of an app: ``AF_IDEM_<app>`` with unsafe characters replaced."""
    return "AF_IDEM_" + re.sub(r"[^A-Za-z0-9_-]", "_", app_name)


class NatsKvStore(IdempotencyStore):
    """Idempotency keys in a JetStream KV bucket, changed only by revision-checked writes."""

    def __init__(
        self,
        *,
        bucket: str,
        broker: Broker | None = None,
        url: str | None = None,
        bucket_ttl: float = DEFAULT_BUCKET_TTL,
        replicas: int = 1,
        storage: str = "file",
        clock: Callable[[], float] = time.time,
        confirm_completions: bool = False,
    ) -> None:
        if broker is None and url is None:
            raise ValueError("NatsKvStore needs a NATS broker or a nats:// URL")
        self.bucket = bucket
        self.bucket_ttl = bucket_ttl
        self._broker = broker
        self._url = url
        self._replicas = replicas
        self._storage = storage
        self._clock = clock
        self.confirm_completions = confirm_completions
        self._own: NatsBroker | None = None
        self._kv: KeyValue | None = None
        self._conn: NatsBroker | None = None
        # Claims this process holds.
        self._held: dict[str, _Held] = {}
        self._warned_ttl = False
        # Owner tokens: a random per-store prefix and a counter (uuid4 per claim costs more).
        self._owner_prefix = uuid.uuid4().hex[:16]
        self._owners = itertools.count()

    async def open(self) -> None:
        """Bind the bucket, creating it when missing."""
        if self._kv is not None:
            return
        conn = self._broker if isinstance(self._broker, NatsBroker) else None
        if conn is None or not conn.connected:
            # Another broker type (or a wrapper) was passed: open a connection of our own.
            url = self._url or (self._broker.url if self._broker is not None else "")
            self._own = NatsBroker(url)
            await self._own.connect()
            conn = self._own
        self._conn = conn
        js = conn.js
        try:
            try:
                self._kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await js.create_key_value(
                    api.KeyValueConfig(
                        bucket=self.bucket,
                        description="agentflow idempotency keys",
                        history=1,
                        ttl=self.bucket_ttl if self.bucket_ttl > 0 else None,
                        replicas=self._replicas,
                        storage=api.StorageType(self._storage),
                    )
                )
                log.info("created KV bucket %s (ttl %.0fs)", self.bucket, self.bucket_ttl)
        except APIError as exc:
            if exc.err_code == 10058:  # created concurrently by another worker
                self._kv = await js.key_value(self.bucket)
            else:
                await self.close()
                raise BrokerError(f"cannot open KV bucket {self.bucket}: {exc}") from None

    async def close(self) -> None:
        """Drop the bucket handle (and the private connection, if any)."""
        self._kv = None
        self._conn = None
        if self._own is not None:
            own, self._own = self._own, None
            await own.close()

    def _bucket(self) -> KeyValue:
        """The open bucket handle (BrokerError before ``open``)."""
        if self._kv is None:
            raise BrokerError(f"KV bucket {self.bucket} is not open")
        return self._kv

    async def _read(self, key: str, k: str) -> tuple[dict[str, Any] | None, int]:
        """The stored record of ``key`` (KV key ``k``) and its revision (0 when never written).

        A deleted key reads as no record with its tombstone's revision, the revision the next
        compare-and-set write must name.
        """
        try:
            entry = await self._bucket().get(k)
        except KeyNotFoundError as exc:
            tombstone = exc.entry
            return None, (tombstone.revision or 0) if tombstone is not None else 0
        except nats.errors.Error as exc:
            raise BrokerError(f"KV bucket {self.bucket}: cannot read key {key!r}: {exc}") from None
        try:
            record = orjson.loads(entry.value or b"")
        except orjson.JSONDecodeError:
            record = None
        return (record if isinstance(record, dict) else None), entry.revision or 0

    async def _write(
        self, key: str, k: str, value: bytes, last: int | None = None, *, confirm: bool = True
    ) -> None:
        """Put ``value`` at KV key ``k`` (``last``: only if its revision is still ``last``).

        ``last=0`` means "only if absent" (a create). Sent through the broker's windowed
        publisher: one JetStream publish and its PubAck on the publisher's shared reply inbox,
        without nats-py's per-request inbox future and timer; ``confirm=False`` (plain put
        only) sends it without a reply subject. Errors name the bucket and ``key`` (the
        caller's key, not its encoding).
        """
        kv = self._bucket()
        publisher = self._publisher()
        headers = None if last is None else {_EXPECTED_LAST: str(last)}
        subject = f"{kv._pre}{k}"
        if not confirm and headers is None:
            try:
                await publisher.send_unconfirmed(subject, value)
            except PublishError as exc:
                raise await self._write_failed(key, exc) from None
            return
        try:
            request = await publisher.send_request(subject, value, headers)
        except PublishError as exc:
            raise await self._write_failed(key, exc) from None
        await self._answered(key, request)

    def _publisher(self) -> Publisher:
        """The broker connection's publisher (BrokerError without a live connection)."""
        conn = self._conn
        publisher: Publisher | None = conn.publisher if conn is not None else None
        if publisher is None:
            raise BrokerError(f"KV bucket {self.bucket} has no live NATS connection")
        return publisher

    async def _answered(self, key: str, request: Request) -> None:
        """Wait for a write's PubAck; a lost compare-and-set raises KeyWrongLastSequenceError."""
        try:
            await Publisher.answer(request)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise KeyWrongLastSequenceError(description=exc.description) from None
            raise BrokerError(f"KV bucket {self.bucket} refused key {key!r}: {exc}") from None
        except PublishError as exc:
            raise await self._write_failed(key, exc) from None

    async def _write_failed(self, key: str, exc: PublishError) -> BrokerError:
        """The error to raise for a failed write: a vanished bucket, or ``exc`` with context.

        The publisher reports a deleted bucket as "no stream accepts the subject"; asking for
        the stream (only on this error path) tells that apart from an unanswered write.
        """
        conn = self._conn
        if conn is not None and conn.connected:
            try:
                await asyncio.wait_for(conn.js.stream_info(f"KV_{self.bucket}"), _DIAGNOSE_TIMEOUT)
            except NotFoundError:
                return BrokerError(
                    f"KV bucket {self.bucket} does not exist (deleted after the store opened?)"
                )
            except (nats.errors.Error, TimeoutError):
                pass  # cannot tell: report the write's own error
        return BrokerError(f"KV bucket {self.bucket}: cannot write key {key!r}: {exc}")

    async def claim(self, key: str, lease: float) -> Claim:
        """Acquire ``key`` with a revision-checked write, counting one more attempt.

        A new key (the common case) costs one write; the key is read only when it exists.
        """
        return await self._claim(key, kv_key(key), lease, read_first=False)

    async def claim_many(self, keys: Sequence[str], lease: float) -> list[Claim | Exception]:
        """Claim every key: all first writes (creates) sent, then their PubAcks awaited.

        A key whose create finds it existing (or written meanwhile) is read and claimed
        against its revision, as ``claim`` does.
        """
        publisher = self._publisher()
        prefix = self._bucket()._pre
        frames: list[tuple[str, bytes, bytes]] = []
        holds: list[tuple[str, str, _Held, _Held | None]] = []
        head = _running_head(1, self._clock() + lease)  # one clock reading for the group
        for key in keys:
            k = kv_key(key)
            before = self._held.get(key)
            owner = f"{self._owner_prefix}{next(self._owners):x}"
            held = self._held[key] = (owner, 1)
            frames.append((f"{prefix}{k}", _CREATE, head + owner.encode() + b'"}'))
            holds.append((key, k, held, before))
        try:
            writes = await publisher.send_writes(frames)
        except PublishError as exc:
            for key, _, held, before in reversed(holds):
                self._unhold(key, held, before)
            error = await self._write_failed(keys[0], exc) if keys else exc
            return [error] * len(keys)
        out: list[Claim | Exception] = []
        for sent, _ in writes:
            if sent.left:
                await sent.done
            for slot, answer in enumerate(sent.answers):
                key, k, held, before = holds[len(out)]
                if not isinstance(answer, Exception):
                    out.append(FIRST_CLAIM)  # the usual case: the create was stored
                    continue
                request = Request(frames[len(out)][0], publisher.request_timeout, sent, slot)
                try:
                    await self._answered(key, request)  # raises what the answer says
                    out.append(FIRST_CLAIM)
                except KeyWrongLastSequenceError:
                    self._unhold(key, held, before)
                    out.append(await self._claim_or_error(key, k, lease))
                except Exception as exc:
                    out.append(exc)
        return out

    async def _claim_or_error(self, key: str, k: str, lease: float) -> Claim | Exception:
        """``_claim`` after a lost create: the claim, or the error as a per-key outcome."""
        try:
            return await self._claim(key, k, lease, read_first=True)
        except Exception as exc:
            return exc

    async def _claim(self, key: str, k: str, lease: float, *, read_first: bool) -> Claim:
        """Compare-and-set loop of a claim (``read_first``: the key is known to exist)."""
        record: dict[str, Any] | None = None
        revision = 0
        for tries in range(_CAS_TRIES):
            now = self._clock()
            if tries or read_first:
                record, revision = await self._read(key, k)
            state, attempts = _decide(record, now)
            if state is not ClaimState.ACQUIRED:
                return Claim(state, attempts)
            # Held before the write: if its PubAck is lost, ``release`` can still free the
            # key should the write have landed.
            before = self._held.get(key)
            value, held = self._running(key, attempts, self._clock() + lease)
            try:
                await self._write(key, k, value, last=revision)
            except KeyWrongLastSequenceError:
                self._unhold(key, held, before)
                continue  # the key exists, or another worker wrote first: look again
            return Claim(ClaimState.ACQUIRED, attempts)
        return Claim(ClaimState.BUSY, 0)

    def _running(self, key: str, attempts: int, expires: float) -> tuple[bytes, _Held]:
        """A running record for a claim on ``key`` until ``expires`` (recorded as held)."""
        owner = f"{self._owner_prefix}{next(self._owners):x}"
        value = _running_head(attempts, expires) + owner.encode() + b'"}'  # owners are hex
        held = self._held[key] = (owner, attempts)
        return value, held

    def _unhold(self, key: str, held: tuple[str, int], before: tuple[str, int] | None) -> None:
        """A claim write lost: forget it as held, unless taken over meanwhile."""
        if self._held.get(key) == held:
            if before is None:
                del self._held[key]
            else:
                self._held[key] = before

    async def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` done until ``now + ttl`` (``ttl <= 0``: as long as the bucket keeps it)."""
        value = self._done(key, ttl)
        await self._write(key, kv_key(key), value, confirm=self._confirms_completions)

    async def complete_many(self, keys: Sequence[str], ttl: float) -> list[Exception | None]:
        """Complete every key: unconfirmed completions go out in one write (they do not wait)."""
        if self._confirms_completions:
            return await self._complete_concurrently(keys, ttl)
        if not keys:
            return []
        try:
            prefix = self._bucket()._pre
            expires = self._clock() + ttl if ttl > 0 else 0  # one reading for the batch
            values: dict[int, bytes] = {}  # by attempt count: mostly one value for all
            frames = []
            for key in keys:
                attempts = self._release_hold(key, ttl)
                value = values.get(attempts)
                if value is None:
                    value = values[attempts] = _done_record(attempts, expires)
                frames.append((f"{prefix}{kv_key(key)}", value))
            await self._publisher().send_unconfirmed_many(frames)
        except PublishError as exc:
            return [await self._write_failed(keys[0], exc)] * len(keys)
        except BrokerError as exc:
            return [exc] * len(keys)
        return [None] * len(keys)

    def _done(self, key: str, ttl: float) -> bytes:
        """The completed record of ``key`` (no longer held here) until ``now + ttl``."""
        attempts = self._release_hold(key, ttl)
        return _done_record(attempts, self._clock() + ttl if ttl > 0 else 0)

    def _release_hold(self, key: str, ttl: float) -> int:
        """``key`` is being completed for ``ttl``: no longer held here; its attempt count."""
        if ttl > self.bucket_ttl > 0 and not self._warned_ttl:
            self._warned_ttl = True
            log.warning(
                "idempotency ttl %.0fs exceeds KV bucket %s max age %.0fs; keys are kept "
                "only that long",
                ttl,
                self.bucket,
                self.bucket_ttl,
            )
        _, attempts = self._held.pop(key, ("", 1))
        return attempts

    @property
    def _confirms_completions(self) -> bool:
        # On the broker's own connection the completion leaves before the input's ack on the
        # same ordered stream, so waiting for its PubAck buys nothing but a round trip (a
        # third of the store's cost). Lost only with the connection, and then the ack is lost
        # too: the redelivery finds the key leased and runs again once the lease expires,
        # like a crash after the handler; its outputs carry the same ids and are deduplicated.
        shared = self._conn is not None and self._conn is self._broker
        return self.confirm_completions or not shared

    async def release(self, key: str) -> None:
        """Free the lease now if this process still owns it, keeping the attempt count."""
        owner, _ = self._held.pop(key, ("", 0))
        k = kv_key(key)
        record, revision = await self._read(key, k)
        if record is None or record.get("s") != _RUNNING or record.get("o") != owner:
            return  # the lease expired and someone else holds the key now
        value = orjson.dumps({"s": _FREE, "a": int(record.get("a", 1)), "e": 0})
        try:
            await self._write(key, k, value, last=revision)
        except KeyWrongLastSequenceError:
            pass  # changed meanwhile: the other writer's state wins

    async def forget(self, key: str) -> None:
        """Delete ``key`` and its attempt count."""
        self._held.pop(key, None)
        try:
            await self._bucket().delete(kv_key(key))
        except (KeyNotFoundError, nats.errors.Error):
            pass


def _running_head(attempts: int, expires: float) -> bytes:
    """A running record's JSON up to its owner's value (what orjson writes for the record)."""
    return b'{"s":"%s","a":%d,"e":%s,"o":"' % (_RUNNING.encode(), attempts, orjson.dumps(expires))


def _done_record(attempts: int, expires: float) -> bytes:
    """A completed record's JSON (``expires`` 0: kept as long as the bucket keeps keys)."""
    return orjson.dumps({"s": _DONE, "a": attempts, "e": expires})


def _decide(record: dict[str, Any] | None, now: float) -> tuple[ClaimState, int]:
    """Claim outcome and attempt count for a stored record (mirrors the SQLite store)."""
    if record is None:
        return ClaimState.ACQUIRED, 1
    state = record.get("s")
    attempts = int(record.get("a", 0))
    expires = float(record.get("e", 0))
    if state == _DONE:
        if expires == 0 or expires > now:
            return ClaimState.COMPLETED, attempts
        return ClaimState.ACQUIRED, 1  # completion expired: the key is new again
    if state == _RUNNING and expires > now:
        return ClaimState.BUSY, attempts
    return ClaimState.ACQUIRED, attempts + 1


def from_url(url: str, broker: Broker | None = None, app_name: str | None = None) -> NatsKvStore:
    """Build a store from ``nats-kv://[host:port][/bucket][?ttl=7d&replicas=1&confirm=false]``."""
    parts = urlsplit(url)
    if parts.scheme != "nats-kv":
        raise ValueError(f"bad NATS KV store URL {url!r}: expected nats-kv://")
    query = dict(parse_qsl(parts.query))
    store_opts = {k: query.pop(k) for k in list(query) if k in _STORE_OPTIONS}
    bucket = parts.path.strip("/") or store_opts.get("bucket") or bucket_name(app_name or "app")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", bucket):
        raise ValueError(f"bad KV bucket name {bucket!r}: use letters, digits, _ and -")
    own_url: str | None = None
    if parts.netloc:
        own_url = f"nats://{parts.netloc}" + (f"?{urlencode(query)}" if query else "")
    elif broker is None:
        raise ValueError(f"{url!r} names no server and no NATS broker was given")
    ttl = store_opts.get("ttl")
    return NatsKvStore(
        bucket=bucket,
        broker=None if own_url else broker,
        url=own_url,
        bucket_ttl=parse_duration(ttl, "ttl") if ttl else DEFAULT_BUCKET_TTL,
        replicas=int(store_opts.get("replicas", "1")),
        storage=store_opts.get("storage", "file"),
        confirm_completions=store_opts.get("confirm", "false").lower() in ("1", "true", "yes"),
    )
