"""Map topics (NATS subjects) onto JetStream streams, creating or binding them idempotently.

A topic ``orders.created`` lives in stream ``AF_orders`` whose subjects are ``orders`` and
``orders.>``, so a topic, its ``.dlq`` companion and every other topic under the same first
token share one stream. A stream that already covers a subject (made by an operator, say) is
found and bound as it is, never duplicated; when the ``AF_`` stream cannot be created because
another stream overlaps its subjects, a stream for that one subject is created instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from agentflow.brokers.base import BrokerError
from agentflow.brokers.nats_config import StreamSettings

log = logging.getLogger("agentflow.brokers.nats")

# Marks streams agentflow manages; only those are updated when the settings change.
MANAGED_DESCRIPTION = "managed by agentflow"
DLQ_SUFFIX = ".dlq"
_ERR_STREAM_NAME_IN_USE = 10058
_ERR_SUBJECTS_OVERLAP = 10065
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(raw: str, limit: int = 200) -> str:
    """Turn ``raw`` into a stream/consumer name; a hash suffix keeps distinct inputs distinct."""
    cleaned = _NAME_UNSAFE.sub("_", raw)
    if cleaned == raw and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
    return f"{cleaned[: limit - 9]}_{digest}"


def validate_subject(subject: str, *, wildcards: bool) -> None:
    """Raise BrokerError unless ``subject`` is a valid NATS subject (or pattern)."""
    tokens = subject.split(".")
    ok = bool(subject) and all(tokens) and not any(c.isspace() for c in subject)
    for i, token in enumerate(tokens):
        if ("*" in token or ">" in token) and (
            not wildcards or token not in ("*", ">") or (token == ">" and i != len(tokens) - 1)
        ):
            ok = False
    if not ok:
        kind = "subject pattern" if wildcards else "topic"
        raise BrokerError(f"{subject!r} is not a valid NATS {kind}")


def dlq_subject(topic: str) -> str:
    """The default dead-letter subject of ``topic``."""
    return topic + DLQ_SUFFIX


class StreamMapper:
    """Finds or creates the stream holding each subject and remembers the answer."""

    def __init__(self, js: JetStreamContext, settings: StreamSettings) -> None:
        self._js = js
        self._settings = settings
        self._by_subject: dict[str, str] = {}
        self._checked: set[str] = set()
        self._lock = asyncio.Lock()

    def forget(self, subject: str) -> None:
        """Drop the cached stream of ``subject`` (after the stream vanished)."""
        stream = self._by_subject.pop(subject, None)
        if stream is not None:
            self._checked.discard(stream)

    def cached(self, subject: str) -> str | None:
        """The stream already known to hold ``subject``, if any."""
        return self._by_subject.get(subject)

    async def ensure_all(self, subjects: Iterable[str]) -> None:
        """Ensure every subject (and, for concrete topics, its ``.dlq``) has a stream."""
        for subject in subjects:
            await self.ensure(subject)
            if "*" not in subject and ">" not in subject and not subject.endswith(DLQ_SUFFIX):
                await self.ensure(dlq_subject(subject))

    async def find(self, subject: str) -> str | None:
        """Return the stream covering ``subject`` without creating anything."""
        if subject in self._by_subject:
            return self._by_subject[subject]
        try:
            name: str = await self._js.find_stream_name_by_subject(subject)
        except NotFoundError:
            return None
        self._by_subject[subject] = name
        return name

    async def ensure(self, subject: str) -> str:
        """Return the stream holding ``subject``, creating ``AF_<first token>`` if none does."""
        cached = self._by_subject.get(subject)
        if cached is not None:
            return cached
        # One creator at a time per process: concurrent publishes to a new topic would
        # otherwise race to create the same stream.
        async with self._lock:
            cached = self._by_subject.get(subject)
            if cached is not None:
                return cached
            wildcards = "*" in subject or ">" in subject
            validate_subject(subject, wildcards=wildcards)
            name = await self.find(subject)
            if name is not None:
                await self._reconcile(name)
                return name
            first = subject.split(".", 1)[0]
            if first in ("*", ">"):
                raise BrokerError(
                    f"no JetStream stream covers {subject!r}; create one, or use a pattern "
                    "whose first token is concrete"
                )
            name = await self._create(first, subject)
            self._by_subject[subject] = name
            return name

    def _config(self, name: str, subjects: list[str]) -> api.StreamConfig:
        """The stream configuration agentflow wants for a managed stream."""
        s = self._settings
        return api.StreamConfig(
            name=name,
            description=MANAGED_DESCRIPTION,
            subjects=subjects,
            retention=api.RetentionPolicy(s.retention),
            storage=api.StorageType(s.storage),
            max_age=s.max_age,
            max_bytes=s.max_bytes,
            num_replicas=s.replicas,
            duplicate_window=s.duplicate_window,
            discard=api.DiscardPolicy.OLD,
        )

    async def _create(self, first: str, subject: str) -> str:
        """Create the prefix stream for ``first``; fall back to a one-subject stream."""
        name = safe_name(self._settings.prefix + first)
        try:
            await self._js.add_stream(self._config(name, [first, f"{first}.>"]))
            log.info("created JetStream stream %s for subjects %s, %s.>", name, first, first)
            self._checked.add(name)
            return name
        except APIError as exc:
            if exc.err_code not in (_ERR_SUBJECTS_OVERLAP, _ERR_STREAM_NAME_IN_USE):
                raise BrokerError(f"cannot create JetStream stream {name}: {exc}") from None
            if exc.err_code == _ERR_STREAM_NAME_IN_USE:
                # Created a moment ago by another worker with other settings: bind it.
                again = await self.find(subject)
                if again is not None:
                    return again
        if "*" in subject or ">" in subject:
            raise BrokerError(
                f"cannot create a stream for pattern {subject!r}: its subjects overlap "
                "an existing stream; subscribe to the concrete topics instead"
            )
        narrow = safe_name(self._settings.prefix + subject.replace(".", "_"))
        try:
            await self._js.add_stream(self._config(narrow, [subject]))
        except APIError as exc:
            raise BrokerError(f"cannot create JetStream stream {narrow}: {exc}") from None
        log.info("created JetStream stream %s for subject %s", narrow, subject)
        self._checked.add(narrow)
        return narrow

    async def _reconcile(self, name: str) -> None:
        """Update a managed stream whose limits differ from the settings (once per process)."""
        if name in self._checked:
            return
        self._checked.add(name)
        try:
            info = await self._js.stream_info(name)
        except APIError as exc:
            log.warning("cannot read JetStream stream %s: %s", name, exc)
            return
        config = info.config
        if config.description != MANAGED_DESCRIPTION:
            return  # someone else's stream: used as it is
        s = self._settings
        wanted = {
            "max_age": s.max_age,
            "max_bytes": s.max_bytes,
            "num_replicas": s.replicas,
            "duplicate_window": s.duplicate_window,
        }
        current = {key: getattr(config, key) for key in wanted}
        if all(_same(current[k], wanted[k]) for k in wanted):
            return
        try:
            await self._js.update_stream(config.evolve(**wanted))
            log.info("updated JetStream stream %s: %s -> %s", name, current, wanted)
        except APIError as exc:
            log.warning("JetStream stream %s keeps its settings (%s): %s", name, current, exc)


def _same(a: object, b: object) -> bool:
    """Compare stream settings, treating None/0/-1 "unlimited" spellings and float noise alike."""
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) < 1e-6
    return ((a in (None, 0, -1)) and (b in (None, 0, -1))) or a == b
