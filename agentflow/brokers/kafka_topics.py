"""Topic names, retry-tier and DLQ companions, wildcard patterns and explicit topic creation.

Companions of a topic ``T``: the retry tiers ``T.retry.1`` .. ``T.retry.K`` and the dead-letter
topic ``T.dlq``. Wildcards follow NATS syntax (``*`` one token, ``>`` one or more tokens) and
never match retry tiers; they match ``.dlq`` topics only when the pattern itself ends in ``dlq``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from agentflow.brokers.base import BrokerError

log = logging.getLogger("agentflow.kafka")

__all__ = [
    "TopicAdmin",
    "companions",
    "dlq_topic",
    "is_companion",
    "is_wildcard",
    "pattern_regex",
    "retry_topic",
    "split_retry_topic",
    "validate_topic",
]

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_RETRY_SUFFIX = re.compile(r"^(?P<base>.+)\.retry\.(?P<n>[1-9][0-9]*)$")
_TOKEN = r"[^.]+"
# Kafka error codes met while creating topics.
_TOPIC_ALREADY_EXISTS = 36
_LEADER_WAIT = 15.0


def validate_topic(topic: str) -> None:
    """Raise BrokerError unless ``topic`` is a legal concrete Kafka topic name."""
    if not _LEGAL.match(topic) or topic in (".", "..") or is_wildcard(topic):
        raise BrokerError(
            f"invalid Kafka topic {topic!r}: use 1-249 of [A-Za-z0-9._-], no wildcards"
        )


def is_wildcard(pattern: str) -> bool:
    """True when ``pattern`` has a ``*`` or ``>`` token."""
    return any(token in ("*", ">") for token in pattern.split("."))


def retry_topic(topic: str, tier: int) -> str:
    """The name of retry tier ``tier`` (1-based) of ``topic``."""
    return f"{topic}.retry.{tier}"


def dlq_topic(topic: str) -> str:
    """The default dead-letter topic of ``topic``."""
    return f"{topic}.dlq"


def split_retry_topic(name: str) -> tuple[str, int] | None:
    """``("T", n)`` for a retry tier name ``T.retry.n``; None for any other name."""
    match = _RETRY_SUFFIX.match(name)
    if match is None:
        return None
    return match.group("base"), int(match.group("n"))


def is_companion(name: str) -> bool:
    """True for retry tiers and dead-letter topics (they get no companions of their own)."""
    return name.endswith(".dlq") or split_retry_topic(name) is not None


def companions(topic: str, tiers: int) -> list[str]:
    """The retry tiers and DLQ of ``topic``; none for a companion itself."""
    if is_companion(topic):
        return []
    return [retry_topic(topic, n) for n in range(1, tiers + 1)] + [dlq_topic(topic)]


def _body(pattern: str) -> str:
    parts: list[str] = []
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == ">" and i == len(tokens) - 1:
            parts.append(f"{_TOKEN}(?:\\.{_TOKEN})*")
        elif token == "*":
            parts.append(_TOKEN)
        elif not token or token == ">":
            raise BrokerError(f"invalid topic pattern {pattern!r}: empty token or '>' not last")
        else:
            parts.append(re.escape(token))
    return "\\.".join(parts)


def pattern_regex(pattern: str) -> str:
    """A regex (for aiokafka's pattern subscription) matching ``pattern`` and its retry tiers."""
    body = _body(pattern)
    # Companions must not pass for topics of their own: a wildcard over T would otherwise also
    # consume T.retry.N as fresh input (and T.dlq, unless DLQs are what the pattern asks for).
    guard = r"(?!.*\.retry\.[1-9][0-9]*$)"
    if pattern.split(".")[-1] != "dlq":
        guard += r"(?!.*\.dlq$)"
    return f"^(?:{guard}(?:{body})|(?:{body})\\.retry\\.[1-9][0-9]*)$"


class TopicAdmin:
    """Creates topics explicitly (never through broker auto-creation) and remembers them."""

    def __init__(
        self,
        admin: Any,
        *,
        partitions: int,
        replication: int | None,
        configs: dict[str, str],
    ) -> None:
        self.admin = admin
        self.partitions = partitions
        self.replication = replication
        self.configs = configs
        self.known: set[str] = set()
        self._lock = asyncio.Lock()

    async def replication_factor(self) -> int:
        """The configured replication, else min(3, brokers in the cluster)."""
        if self.replication is None:
            cluster = await self.admin.describe_cluster()
            self.replication = max(1, min(3, len(cluster.get("brokers", [])) or 1))
        return self.replication

    async def ensure(self, names: Iterable[str]) -> list[str]:
        """Create whichever of ``names`` do not exist yet; return the ones created."""
        wanted = [n for n in dict.fromkeys(names) if n not in self.known]
        if not wanted:
            return []
        for name in wanted:
            validate_topic(name)
        async with self._lock:
            # List instead of describing by name: a metadata request for a missing topic may
            # auto-create it on clusters that allow that, with the broker's defaults.
            existing = set(await self.admin.list_topics())
            missing = [n for n in wanted if n not in existing and n not in self.known]
            if missing:
                await self._create(missing)
                await self._wait_for_leaders(missing)
            self.known.update(wanted)
        return missing

    async def _create(self, names: Sequence[str]) -> None:
        from aiokafka.admin import NewTopic

        replication = await self.replication_factor()
        topics = [
            NewTopic(n, self.partitions, replication, topic_configs=self.configs) for n in names
        ]
        response = await self.admin.create_topics(topics)
        problems = []
        for name, code, *rest in response.topic_errors:
            if code and code != _TOPIC_ALREADY_EXISTS:
                message = rest[0] if rest and rest[0] else f"error code {code}"
                problems.append(f"{name}: {message}")
        if problems:
            raise BrokerError("cannot create Kafka topics: " + "; ".join(problems))
        log.info("created Kafka topics %s", ", ".join(names))

    async def _wait_for_leaders(self, names: Sequence[str]) -> None:
        # A fresh topic needs a moment to elect leaders; the first publish would retry anyway,
        # but waiting here keeps that noise (and its latency) out of the hot path.
        deadline = time.monotonic() + _LEADER_WAIT
        pending = list(names)
        while pending and time.monotonic() < deadline:
            described = await self.admin.describe_topics(pending)
            ready = {
                t["topic"]
                for t in described
                if not t.get("error_code")
                and t.get("partitions")
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
            }
            pending = [n for n in pending if n not in ready]
            if pending:
                await asyncio.sleep(0.05)
        if pending:
            log.warning("Kafka topics without a leader after %.0fs: %s", _LEADER_WAIT, pending)
