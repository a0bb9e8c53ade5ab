"""The output messages of one handler call: payloads encoded, targets picked, envelopes set.

Every output gets a derived id (``af-id`` from the input's id, the agent and its index), the
input's correlation id, and the call's timestamp; a value goes to each topic the agent
produces to, or to where its route sends it (``NoRoute``/``RouteError`` dead-letter the input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentflow import _native, envelope
from agentflow.agent import AgentSpec, encode_output, outputs_of
from agentflow.brokers.base import Delivery, OutMessage
from agentflow.context import PendingOutput
from agentflow.errors import NoRoute, RouteError
from agentflow.intake import DeadLetter

__all__ = ["Outputs"]

# A handler result of these types is several outputs (a tuple, not `list | tuple`: per message).
_FAN_OUT = (list, tuple)


class Outputs:
    """Builds one agent's output messages."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self._name = spec.name
        # Where outputs go when no route picks per message (taken without a call).
        self._static_targets = spec.produces if spec.route is None else None

    def of(
        self,
        d: Delivery,
        correlation: str,
        message_id: str,
        key: str | None,
        pending: Sequence[PendingOutput],
        result: Any,
    ) -> list[OutMessage]:
        """The messages of a call's ``result`` and of what it sent through its context."""
        out: list[OutMessage] = []
        if not pending and not isinstance(result, _FAN_OUT):
            # The usual single return value (or None): no list of items to build.
            if result is not None:
                ts = envelope.now_ms()
                self._emit(d, correlation, message_id, ts, None, result, key, None, out)
            return out
        ts = envelope.now_ms()  # one timestamp for all outputs of the call
        for p in pending:
            self._emit(d, correlation, message_id, ts, p.topic, p.payload, p.key, p.headers, out)
        for value in outputs_of(result):
            self._emit(d, correlation, message_id, ts, None, value, key, None, out)
        return out

    def _emit(
        self,
        d: Delivery,
        correlation: str,
        message_id: str,
        ts: int,
        topic: str | None,
        value: Any,
        out_key: str | None,
        headers: dict[str, str] | None,
        out: list[OutMessage],
    ) -> None:
        """Append the messages of one output value (one per target topic) to ``out``."""
        payload = encode_output(value)
        if topic is not None:
            topics = [topic]
        else:
            static = self._static_targets
            topics = static if static is not None else self._targets(d, payload, out_key)
        content_type = envelope.OCTET_STREAM if isinstance(value, bytes) else envelope.JSON
        for target in topics:
            out_headers = _native.output_headers(
                message_id,
                self._name,
                len(out),
                out_key,
                correlation,
                ts,
                content_type,
                d.headers,
                headers,
            )
            out.append(OutMessage(target, payload, out_headers, out_key))

    def _targets(self, d: Delivery, payload: bytes, key: str | None) -> list[str]:
        assert self.spec.route is not None  # static targets are taken without a call
        try:
            return self.spec.route(payload, d.headers, key, d.topic)
        except NoRoute as exc:
            raise DeadLetter(envelope.REASON_NO_ROUTE, exc) from exc
        except (RouteError, ValueError) as exc:
            raise DeadLetter(envelope.REASON_ROUTE_ERROR, exc) from exc
