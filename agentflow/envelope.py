"""Envelope header names and helpers around the native codec (DESIGN §5)."""

from __future__ import annotations

import time

from agentflow import _native

ID = "af-id"
KEY = "af-key"
ATTEMPT = "af-attempt"
CORRELATION_ID = "af-correlation-id"
CAUSATION_ID = "af-causation-id"
AGENT = "af-agent"
TS = "af-ts"
CONTENT_TYPE = "content-type"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
NOT_BEFORE = "af-not-before"

DLQ_REASON = "af-dlq-reason"
DLQ_ERROR_TYPE = "af-dlq-error-type"
DLQ_ERROR = "af-dlq-error"
DLQ_ATTEMPTS = "af-attempts"
DLQ_ORIGINAL_TOPIC = "af-original-topic"
DLQ_ORIGINAL_PREFIX = "af-original-"

# Values of af-dlq-reason: why a message was dead-lettered.
REASON_INVALID_HEADERS = "invalid-headers"
REASON_INVALID_PAYLOAD = "invalid-payload"
REASON_MAX_ATTEMPTS = "max-attempts"
REASON_REJECTED = "rejected"
REASON_GAVE_UP = "non-retryable"
REASON_NO_ROUTE = "no-route"
REASON_ROUTE_ERROR = "route-error"

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"

Envelope = _native.Envelope
decode_headers = _native.decode_headers
new_id = _native.new_id
derive_id = _native.derive_id

# Long error texts are cut so a DLQ header stays well under broker header limits.
_MAX_ERROR_CHARS = 2000


def now_ms() -> int:
    """Wall-clock milliseconds, as carried in ``af-ts``."""
    return time.time_ns() // 1_000_000


def build_headers(
    message_id: str,
    *,
    key: str | None = None,
    attempt: int = 1,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    agent: str | None = None,
    content_type: str = JSON,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Encode the envelope of a new message (one native call)."""
    return _native.encode_headers(
        message_id,
        key,
        attempt,
        correlation_id or message_id,
        causation_id,
        agent,
        now_ms(),
        content_type,
        extra,
    )


def dlq_headers(
    original: dict[str, str],
    *,
    reason: str,
    error: BaseException | str | None,
    attempts: int,
    agent: str,
    topic: str,
    position: dict[str, str],
) -> dict[str, str]:
    """The original headers plus the dead-letter annotations."""
    headers = dict(original)
    if isinstance(error, BaseException):
        error_type = type(error).__qualname__
        text = str(error) or error_type
    else:
        error_type = reason
        text = error or reason
    headers[DLQ_REASON] = reason
    headers[DLQ_ERROR_TYPE] = error_type
    headers[DLQ_ERROR] = _one_line(text)[:_MAX_ERROR_CHARS]
    headers[DLQ_ATTEMPTS] = str(attempts)
    if AGENT in original:
        # Keep who produced the message; af-agent now names the agent that gave up on it.
        headers[f"{DLQ_ORIGINAL_PREFIX}agent"] = original[AGENT]
    headers[AGENT] = agent
    headers[DLQ_ORIGINAL_TOPIC] = topic
    for name, value in position.items():
        headers[f"{DLQ_ORIGINAL_PREFIX}{name}"] = str(value)
    return headers


def _one_line(text: str) -> str:
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())
