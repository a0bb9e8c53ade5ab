"""Type stubs for the Rust extension ``agentflow._native`` (kept honest by mypy.stubtest)."""

from collections.abc import Mapping, Sequence

__version__: str

class Envelope:
    """Decoded ``af-*`` envelope headers of one message."""

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
    def extra(self) -> dict[str, str]: ...

def new_id() -> str:
    """Return a new time-ordered 26-character message id (ULID layout, Crockford base32)."""

def derive_id(parent_id: str, agent: str, index: int) -> str:
    """Return the deterministic id of output ``index`` of ``agent`` for input ``parent_id``."""

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
    """Build the wire headers (``af-*`` plus ``content-type`` and extras) of one message."""

def decode_headers(headers: Mapping[str, str | bytes] | Sequence[tuple[str, bytes]]) -> Envelope:
    """Parse wire headers; raises ``ValueError`` naming the header when an ``af-*`` value is garbled."""
