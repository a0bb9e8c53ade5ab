"""Type stubs for the Rust extension ``agentflow._native`` (kept honest by mypy.stubtest)."""

from collections.abc import Mapping, Sequence
from typing import final

__all__ = [
    "Envelope",
    "__version__",
    "decode_headers",
    "derive_id",
    "encode_headers",
    "new_id",
]

__version__: str

@final
class Envelope:
    """Decoded ``af-*`` envelope headers of one message (immutable)."""

    @property
    def message_id(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def attempt(self) -> int | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def causation_id(self) -> str | None: ...
    @property
    def agent(self) -> str | None: ...
    @property
    def ts_ms(self) -> int | None: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def traceparent(self) -> str | None: ...
    @property
    def tracestate(self) -> str | None: ...
    @property
    def extra(self) -> dict[str, str]:
        """Every other header (a fresh dict); ``af-*`` names lower-cased, other names as sent."""

def new_id() -> str:
    """Return a new time-ordered 26-character message id (ULID layout, Crockford base32).

    Ids are strictly increasing within one process (same millisecond: random part + 1).
    """

def derive_id(parent_id: str, agent: str, index: int) -> str:
    """Return the deterministic id of output ``index`` of ``agent`` for input ``parent_id``.

    A ULID parent keeps its 10-character timestamp prefix; the other 16 characters (or, for a
    non-ULID parent, all 26) come from SHA-256 of (parent_id, agent, index). ``index`` >= 0.
    """

def encode_headers(
    message_id: str,
    key: str | None,
    attempt: int,
    correlation_id: str | None,
    causation_id: str | None,
    agent: str | None,
    ts_ms: int,
    content_type: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the wire headers (``af-*`` plus ``content-type`` and extras) of one message.

    ``af-key``/``af-causation-id``/``af-agent`` are omitted when None; ``af-correlation-id``
    defaults to ``message_id``. Extras follow; an extra named like one of the headers set here
    (``af-id``, ``af-key``, ``af-attempt``, ``af-correlation-id``, ``af-causation-id``,
    ``af-agent``, ``af-ts``, ``content-type``; case-insensitive) is dropped.
    """

def decode_headers(
    headers: Mapping[str, str | bytes] | Sequence[tuple[str, bytes]],
) -> Envelope:
    """Parse wire headers; raises ``ValueError`` naming the header when a value is garbled.

    Accepts a mapping or a sequence of (name, value) pairs (Kafka style; later duplicates win,
    a ``None`` value counts as absent). Known names match case-insensitively. ``af-attempt``
    and ``af-ts`` must be non-negative decimal integers; values must be valid UTF-8.
    """
