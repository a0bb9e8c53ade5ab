"""The per-message context a handler receives as its second argument."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PendingOutput:
    """An output buffered during a handler call; published only if the handler succeeds."""

    topic: str
    payload: Any
    key: str | None
    headers: dict[str, str] | None


@dataclass(slots=True)
class Context:
    """What a handler knows about the message it handles, and how it emits more."""

    message_id: str
    attempt: int
    key: str | None
    correlation_id: str
    headers: dict[str, str]
    topic: str
    agent: str
    _base_logger: logging.Logger
    _heartbeat: Callable[[], Awaitable[None]]
    _outputs: list[PendingOutput] = field(default_factory=list)

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that tags records with this message's id, attempt and topic."""
        # Built on first use: most handlers never log, and an adapter per message adds up.
        extra = {"message_id": self.message_id, "attempt": self.attempt, "topic": self.topic}
        return logging.LoggerAdapter(self._base_logger, extra)

    async def publish(
        self,
        topic: str,
        payload: Any,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Emit a message to ``topic``; it is sent, with a derived id, when the handler returns.

        Buffering keeps a failed attempt from leaking messages: only a successful attempt
        publishes, and a redelivered input re-publishes the same ids (deduplicated downstream).
        """
        self._outputs.append(PendingOutput(topic, payload, key, headers))

    async def in_progress(self) -> None:
        """Tell the broker this message is still being worked on (extends its ack deadline)."""
        await self._heartbeat()
