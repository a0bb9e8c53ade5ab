"""Type stubs for the Rust extension ``agentflow._native`` (kept honest by mypy.stubtest)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Self, final

from agentflow.brokers.base import OutMessage
from agentflow.brokers.kafka_attempts import Run

__all__ = [
    "CelProgram",
    "DedupWindow",
    "Envelope",
    "Fingerprints",
    "KafkaBatch",
    "MessagePlan",
    "PartitionTracker",
    "RecentIds",
    "Router",
    "__version__",
    "decode_headers",
    "decode_headers_batch",
    "derive_id",
    "encode_headers",
    "extract_key",
    "kafka_flush",
    "kafka_header_dict",
    "kafka_headers",
    "kv_key",
    "murmur2_partition",
    "nats_frames",
    "nats_pub_commands",
    "new_id",
    "output_headers",
    "subject_matches",
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

def output_headers(
    parent_id: str,
    agent: str,
    index: int,
    key: str | None,
    correlation_id: str,
    ts_ms: int,
    content_type: str,
    trace: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers of output ``index`` of ``agent`` for input ``parent_id``, in one call.

    ``af-id`` is ``derive_id(parent_id, agent, index)``, ``af-attempt`` 1, ``af-causation-id``
    the parent; ``traceparent`` (and ``tracestate`` with it) are copied from ``trace`` (the
    input's headers, a dict) when present; ``extra`` follows as in ``encode_headers``.
    """

def decode_headers(
    headers: Mapping[str, str | bytes] | Sequence[tuple[str, bytes]],
) -> Envelope:
    """Parse wire headers; raises ``ValueError`` naming the header when a value is garbled.

    Accepts a mapping or a sequence of (name, value) pairs (Kafka style; later duplicates win,
    a ``None`` value counts as absent). Known names match case-insensitively. ``af-attempt``
    and ``af-ts`` must be non-negative decimal integers; values must be valid UTF-8.
    """

def decode_headers_batch(
    batch: Iterable[Mapping[str, str | bytes] | Sequence[tuple[str, bytes]]],
) -> list[Envelope | ValueError | TypeError]:
    """Decode many header collections in one call, one result per input, in order.

    A garbled collection does not fail the batch: its slot holds the ``ValueError`` (or
    ``TypeError``) that ``decode_headers`` would have raised, as an exception instance.
    """

# --- routing and conditions (CEL) -------------------------------------------------------------

@final
class CelProgram:
    """A compiled CEL expression over ``payload`` (JSON), ``headers``, ``key`` and ``topic``.

    Raises ``ValueError`` (with line:column) on a syntax error.
    """

    def __new__(cls, expr: str) -> Self: ...
    @property
    def expression(self) -> str:
        """The source expression."""
    def variables(self) -> list[str]:
        """Names the expression references (sorted; includes comprehension variables)."""
    def evaluate(
        self, payload: bytes, headers: Mapping[str, str], key: str | None, topic: str
    ) -> object:
        """Evaluate; the result as bool/int/float/str/bytes/list/dict/None.

        ``payload`` is raw JSON, parsed only when the expression reads it; invalid JSON, a
        missing field or a type mismatch raises ``ValueError``.
        """

@final
class Router:
    """First-match router: one CEL condition per route, ``None`` = default (always matches).

    Only the payload members and headers the conditions name are converted for evaluation.
    A condition that reads named members/headers only keeps its outcome per distinct value
    of what it read (``cache_size`` entries per condition, 0 = off; CEL is deterministic),
    and stops caching for a while when that mostly misses.
    """

    def __new__(cls, routes: Sequence[str | None], cache_size: int = 1024) -> Self: ...
    def select(
        self, payload: bytes, headers: Mapping[str, str], key: str | None, topic: str
    ) -> int:
        """Index of the first matching route, or -1.

        The payload is validated once per call. A non-bool result or an evaluation error raises
        ``ValueError`` naming the route index and expression.
        """
    def __len__(self) -> int: ...

_DecodedHeaders = tuple[str | None, str | None, int | None, str | None]
_Processed = tuple[str | None, str | None, int | None, str | None, int, str | bytes | None]

@final
class MessagePlan:
    """Per-message work of one agent, compiled once: decode + route + idempotency key.

    ``routes`` as for :class:`Router`; ``key_path`` a dotted payload field path (objects only,
    a leading ``payload.`` is dropped) or None.
    """

    def __new__(
        cls,
        routes: Sequence[str | None] | None = None,
        key_path: str | None = None,
        cache_size: int = 1024,
        fast_path: bool = True,
    ) -> Self:
        """``fast_path``: conditions in the common CEL subset (member access, literals,
        comparisons, ``&&``/``||``/``!``, ``in``, ``size``, ``has``, string tests) are
        evaluated by a specialised evaluator over the raw JSON, falling back to the ``cel``
        interpreter whenever it cannot decide (errors come from the interpreter); off, every
        condition is interpreted.
        """
    @property
    def fast_routes(self) -> int:
        """How many conditions the fast evaluator covers (0 with ``fast_path=False``)."""
    @property
    def fast_decisions(self) -> int:
        """Condition evaluations the fast evaluator decided so far (no interpreter)."""
    def decode(
        self, headers: Mapping[str, str | bytes] | Sequence[tuple[str, bytes]]
    ) -> _DecodedHeaders:
        """(message_id, key, attempt, correlation_id) as ``decode_headers`` reads them.

        Header values that are ``str`` are returned as the same objects (no copy). Raises
        ``ValueError``/``TypeError`` like ``decode_headers``.
        """
    def decode_batch(
        self,
        batch: Iterable[Mapping[str, str | bytes] | Sequence[tuple[str, bytes]]],
    ) -> list[_DecodedHeaders | ValueError | TypeError]:
        """``decode`` per item; a garbled one yields its exception instance in place."""
    def key_of(self, payload: bytes) -> str | bytes | None:
        """The idempotency key at ``key_path``: a string as is, an integer as its decimal
        text, any other value as its raw JSON (bytes); None when missing, null or no path.

        Invalid JSON raises ``ValueError``.
        """
    def select(
        self, payload: bytes, headers: Mapping[str, str], key: str | None, topic: str
    ) -> int:
        """Route index as :meth:`Router.select`."""
    def process(
        self,
        headers: Mapping[str, str | bytes] | Sequence[tuple[str, bytes]],
        payload: bytes,
        key: str | None,
        topic: str,
    ) -> _Processed:
        """decode + select + key_of in one call and one pass over the payload:
        (message_id, key, attempt, correlation_id, route, idempotency_key).

        Routes see ``key``, or the ``af-key`` header when ``key`` is None; ``route`` is -1
        when none matched (or there are none).
        """
    def process_batch(
        self,
        messages: Iterable[
            tuple[Mapping[str, str | bytes] | Sequence[tuple[str, bytes]], bytes, str | None, str]
        ],
    ) -> list[_Processed | ValueError | TypeError]:
        """``process`` per (headers, payload, key, topic); a bad message yields its exception."""
    def __len__(self) -> int: ...

def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject match: ``*`` is one token, a final ``>`` one or more; no empty tokens."""

# --- keys and partitions ----------------------------------------------------------------------

def extract_key(payload: bytes, path: str) -> str | None:
    """Value at dotted ``path`` (``customer.id``; digits index arrays) in raw JSON, as text.

    Strings as they are; numbers/bools as their JSON text; objects/arrays as compact JSON;
    missing or ``null`` -> None. Invalid JSON or an empty path raises ``ValueError``.
    """

def murmur2_partition(key: bytes, num_partitions: int) -> int:
    """Partition of ``key`` exactly as the Java Kafka client's default partitioner computes it."""

def kafka_headers(headers: dict[str, str]) -> tuple[list[tuple[str, bytes]], int]:
    """Kafka header pairs of ``headers`` (values as UTF-8, surrogateescape) and an upper
    bound of the bytes they take in a record."""

def kafka_header_dict(pairs: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """A record's header pairs as text (invalid UTF-8 becomes U+FFFD; a later duplicate wins;
    a header without a value is left out)."""

@final
class KafkaBatch:
    """A Kafka record batch (format v2) for one topic partition, built natively; what
    ``AIOKafkaProducer.send_batch`` takes as a batch builder."""

    def __new__(cls, batch_size: int, transactional: bool = False) -> Self: ...
    def add(
        self, value: bytes | None, key: bytes | None, headers: dict[str, str], ts_ms: int
    ) -> int:
        """Add a record; its size in the batch, or 0 when the batch is full (the first record
        always fits)."""
    def append(self, **_kwargs: object) -> None:
        """aiokafka's ``BatchBuilder.append``: a closed batch takes nothing more."""
    def close(self) -> None:
        """Take no more records."""
    def closed(self) -> bool:
        """Whether the batch takes no more records."""
    def size(self) -> int:
        """Bytes of the batch, header included."""
    def record_count(self) -> int:
        """Records in the batch."""
    def _set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None:
        """The idempotent producer's id, epoch and first sequence number."""
    def _build(self) -> bytes:
        """The batch on the wire (closes it)."""

def kafka_flush(
    messages: Sequence[OutMessage],
    recent: RecentIds,
    now: float,
    targets: dict[str, tuple[list[int], int]],
    batch_size: int,
    ts_ms: int,
    max_request_size: int,
) -> tuple[list[tuple[str, int, KafkaBatch]], Fingerprints, tuple[str, int] | None]:
    """A flush's outputs as record batches of at most ``batch_size`` bytes:
    ``(batches as (topic, partition, batch), dedup ids accepted (for
    ``recent.add_fingerprints`` once sent), first oversized record as (topic, bytes) or
    None)``. ``targets``: per topic, its sorted partitions and the one for
    keyless records; ids ``recent`` saw at ``now`` (or seen earlier in the flush) are dropped."""

@final
class PartitionTracker:
    """Offsets handed out from one partition during one assignment, in fetch order: what is
    done, what to commit, and how often each offset was handed out (see kafka_offsets)."""

    committed: int | None
    """Offset the group had committed when this member got the partition (None: no commit)."""

    def __new__(cls, committed: int | None = None, prior: Iterable[Run] | None = None) -> Self:
        """``prior``: the previous owner's attempt record, sorted and non-overlapping runs
        (what ``kafka_attempts.decode`` returns)."""
    @property
    def has_prior(self) -> bool:
        """Whether the previous owner left a record to look up (rarely: a crash or handover)."""
    @property
    def next_offset(self) -> int | None:
        """One past the highest tracked offset (None before the first)."""
    @property
    def in_flight(self) -> int:
        """Tracked offsets that are not done."""
    def prior_state(self, offset: int) -> int:
        """DONE if the attempt record says ``offset`` finished, else its earlier hand-outs."""
    def is_new(self, offset: int) -> bool:
        """True if ``offset`` lies past everything tracked (records may be refetched)."""
    def track(self, offset: int, prior: int | None = None) -> int:
        """Start tracking ``offset`` as handed out once more; return its hand-out count.

        ``prior`` is its ``prior_state`` when the caller looked it up already. An offset not
        past ``next_offset`` raises ``ValueError``.
        """
    def skip(self, offset: int) -> None:
        """Track ``offset`` as done without handing it out (filtered or already finished)."""
    def handed_out_again(self, offset: int) -> int:
        """Count one more hand-out of a tracked offset (redelivery); return the new count.

        ``KeyError`` if ``offset`` is not tracked (never, or done and below the commit point).
        """
    def attempts(self, offset: int) -> int:
        """How often a tracked offset was handed out (``KeyError`` if not tracked)."""
    def is_done(self, offset: int) -> bool:
        """True if ``offset`` is done (or was committed past)."""
    def done(self, offset: int) -> bool:
        """Mark ``offset`` done; False if it was not tracked or already done."""
    def commit_offset(self) -> int | None:
        """The offset to commit: the first not-done one, else one past the last tracked."""
    def runs(self) -> list[Run]:
        """The attempt record above the commit point: tracked slots, then untouched prior runs."""

# --- NATS wire --------------------------------------------------------------------------------

def nats_frames(
    buf: bytearray,
) -> tuple[list[tuple[int, bytes, bytes, bytes, bytes | None]], int, int]:
    """``(frames, consumed, rest)`` of a NATS read buffer; each frame is the argument tuple of
    nats-py's ``Client._process_msg``: ``(sid, subject, reply, payload, headers or None)``.
    ``rest`` is 0 (all consumed), 1 (wait for more bytes) or 2 (another operation follows)."""

def nats_pub_commands(
    frames: list[tuple[str, bytes, bytes]], reply_prefix: str, first_token: int
) -> bytes:
    """The ``PUB``/``HPUB`` commands of ``(subject, header block, payload)`` messages as one
    write; message ``i`` asks for its reply on ``<reply_prefix>.<first_token + i>`` (no reply
    subject when ``reply_prefix`` is empty). Subjects and blocks are checked by the caller."""

def kv_key(key: str) -> str:
    """Encode an arbitrary idempotency key as a valid JetStream KV key (deterministic):
    URL-safe base64 of its UTF-8 without padding, or ``h_`` + hex SHA-256 when that is empty
    or longer than 200 characters."""

# --- dedup ------------------------------------------------------------------------------------

@final
class Fingerprints:
    """Fingerprints of the ids a flush accepted, for the ``RecentIds`` they were taken for."""

    def __len__(self) -> int: ...

@final
class RecentIds:
    """Ids accepted in the last ``window`` seconds (at most ``max_size``): a lookup records
    nothing, an add restarts the id's window; a window of 0 or less keeps nothing."""

    def __new__(cls, window: float, max_size: int = 100_000) -> Self: ...
    @property
    def window(self) -> float:
        """The window in seconds (0 when nothing is kept)."""
    def seen(self, item: str, now: float) -> bool:
        """Whether ``item`` was added within the window before ``now`` (``time.monotonic``)."""
    def __contains__(self, key: str, /) -> bool: ...
    def add(self, item: str) -> None:
        """Remember ``item`` for the window, from now."""
    def add_all(self, items: Iterable[str]) -> None:
        """Remember every item for the window, reading the clock once."""
    def add_fingerprints(self, accepted: Fingerprints) -> None:
        """Remember the ids a flush accepted (taken for this window), from now."""
    def __len__(self) -> int: ...

@final
class DedupWindow:
    """Recently seen message ids: kept ``window_seconds`` from first sighting, at most
    ``max_entries`` (oldest evicted first)."""

    def __new__(cls, window_seconds: float, max_entries: int) -> Self: ...
    def seen(self, message_id: str, now: float | None = None) -> bool:
        """Record ``message_id``; True if already recorded less than ``window_seconds`` before.

        ``now`` defaults to ``time.monotonic()``; a repeat does not extend the entry.
        """
    def __len__(self) -> int:
        """Entries held (expired ones are evicted on the next ``seen``)."""
