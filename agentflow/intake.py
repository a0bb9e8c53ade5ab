"""What a delivery becomes before its call runs: envelope and payload decoded, claim named.

Nothing here waits, so the runtime can prepare a group of deliveries and claim all their
idempotency keys in one store call (see ``Processor.claim_group``).
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic

from agentflow import _native, envelope
from agentflow.agent import AgentSpec, PayloadDecoder, describe_invalid, field_path, input_type_of
from agentflow.brokers.base import Delivery
from agentflow.idempotency.base import Claim

# What MessagePlan.decode(_batch) gives for one delivery: (message_id, key, attempt,
# correlation_id), or the ValueError/TypeError of garbled headers.
Decoded = tuple[str | None, str | None, int | None, str | None] | ValueError | TypeError


class DeadLetter(Exception):
    """A delivery that no retry can help: it goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, error: BaseException | str) -> None:
        super().__init__(str(error))
        self.reason = reason
        self.error = error


class Prepared:
    """A delivery decoded for its call: envelope fields, payload, claim key (and claim)."""

    __slots__ = ("claim", "claim_key", "correlation", "error", "key", "message_id", "value")

    def __init__(
        self,
        error: Exception | None,
        message_id: str = "",
        key: str | None = None,
        correlation: str = "",
        value: Any = None,
        claim_key: str | None = None,
    ) -> None:
        self.error = error
        self.message_id = message_id
        self.key = key
        self.correlation = correlation
        self.value = value
        self.claim_key = claim_key
        # Set when claimed ahead with its group: the store's answer, or why it gave none.
        self.claim: Claim | Exception | None = None


class Intake:
    """Decodes one agent's deliveries (natively where it can) and names their claims."""

    def __init__(self, spec: AgentSpec, claims: bool) -> None:
        self.spec = spec
        self.claims = claims and spec.uses_idempotency
        self.decoder = PayloadDecoder(input_type_of(spec.handler, spec.localns))
        self._prefix = f"{spec.name}:"  # of every claim key: keys are namespaced by agent
        # Native header decode (and the idempotency key when it is a payload field path).
        key_path = spec.idempotency_key if isinstance(spec.idempotency_key, str) else None
        try:
            self.plan = _native.MessagePlan(None, key_path)
            self.native_key = key_path is not None
        except ValueError:  # a path the native reader does not take: read it in Python
            self.plan = _native.MessagePlan(None, None)
            self.native_key = False

    def prepare(self, d: Delivery, decoded: Decoded | None = None) -> Prepared:
        """Decode a delivery's envelope and payload and name its claim (errors kept in it)."""
        try:
            return Prepared(None, *self.decode(d, decoded))
        except Exception as exc:  # dead-lettered, or retried (a failing key function)
            return Prepared(exc)

    def decode(
        self, d: Delivery, decoded: Decoded | None = None
    ) -> tuple[str, str | None, str, Any, str | None]:
        """``(message_id, key, correlation_id, value, claim_key)`` of a delivery; raises
        ``DeadLetter`` for what no retry can help (and a failing key function's error)."""
        if decoded is None:
            try:
                decoded = self.plan.decode(d.headers)
            except (ValueError, TypeError) as exc:
                decoded = exc
        if not isinstance(decoded, tuple):  # the ValueError/TypeError of garbled headers
            raise DeadLetter(envelope.REASON_INVALID_HEADERS, decoded)
        env_id, env_key, _, env_correlation = decoded
        message_id = env_id or d.fallback_id
        key = d.key if d.key is not None else env_key
        try:
            value = self.decoder.decode(d.payload)
        except (ValueError, pydantic.ValidationError) as exc:
            raise DeadLetter(envelope.REASON_INVALID_PAYLOAD, describe_invalid(exc)) from exc
        claim_key: str | None = None
        if self.claims:
            claim_key = self._prefix + self._idempotency_key(d, message_id, key)
        return message_id, key, env_correlation or message_id, value, claim_key

    def _idempotency_key(self, d: Delivery, message_id: str, key: str | None) -> str:
        spec_key = self.spec.idempotency_key
        found: Any
        if self.native_key:  # the usual case first: a payload field read natively
            try:
                found = self.plan.key_of(d.payload)
            except ValueError:
                found = None  # not JSON: no key (as the Python reader)
            if type(found) is str and found:
                return found
            # A non-string, non-integer value comes back as its JSON; render it as Python did.
            if isinstance(found, bytes):
                found = orjson.loads(found)
        elif spec_key is None:
            return message_id
        elif callable(spec_key):
            found = spec_key(d.payload, d.headers, key, d.topic)
        else:
            found = field_path(d.payload, spec_key)
        if found is None or found == "":
            raise DeadLetter(
                envelope.REASON_INVALID_PAYLOAD, f"idempotency key {spec_key!r} missing in payload"
            )
        return str(found)
