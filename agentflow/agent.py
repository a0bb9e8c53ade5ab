"""Agent declarations: what an agent consumes and produces, and how its payloads are typed."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic

from agentflow.errors import ConfigError
from agentflow.retry import RetryPolicy

Handler = Callable[..., Awaitable[Any]]
# (payload bytes, headers, key, topic) -> value; used for idempotency keys and routes.
MessageFn = Callable[[bytes, dict[str, str], str | None, str], Any]

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 30.0
DEFAULT_IDEMPOTENCY_TTL = 86_400.0


@dataclass
class AgentSpec:
    """Everything the runtime needs to run one agent."""

    name: str
    handler: Handler
    consumes: str
    produces: list[str] = field(default_factory=list)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    idempotency_key: str | MessageFn | None = None
    idempotent: bool = False
    idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    dlq: str | None = None
    group: str | None = None
    # Target topics for one output message; replaces ``produces`` when set.
    route: Callable[[bytes, dict[str, str], str | None, str], list[str]] | None = None
    # Names visible where the handler was declared, to resolve string annotations of locals.
    localns: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not inspect.iscoroutinefunction(self.handler):
            raise ConfigError(f"agent {self.name!r}: handler must be an async function")
        if not self.consumes:
            raise ConfigError(f"agent {self.name!r}: 'consumes' must name a topic")
        if self.concurrency < 1:
            raise ConfigError(f"agent {self.name!r}: concurrency must be >= 1")
        if self.timeout <= 0:
            raise ConfigError(f"agent {self.name!r}: timeout must be > 0 seconds")
        input_type_of(self.handler, self.localns)  # fail at declaration, not on first message

    @property
    def uses_idempotency(self) -> bool:
        """Whether a claim is taken in the idempotency store before the handler runs."""
        return self.idempotent or self.idempotency_key is not None

    @classmethod
    def from_function(
        cls,
        fn: Handler,
        consumes: str,
        produces: str | Sequence[str] | None = None,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        idempotency_key: str | MessageFn | None = None,
        idempotent: bool = False,
        idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        dlq: str | None = None,
        group: str | None = None,
        localns: dict[str, Any] | None = None,
    ) -> AgentSpec:
        """Build a spec for a plain async function."""
        return cls(
            name=name or fn.__name__,
            handler=fn,
            consumes=consumes,
            produces=_topics(produces),
            retry=retry or RetryPolicy(),
            idempotency_key=idempotency_key,
            idempotent=idempotent,
            idempotency_ttl=idempotency_ttl,
            concurrency=concurrency,
            timeout=timeout,
            dlq=dlq,
            group=group,
            localns=localns,
        )


def _topics(produces: str | Sequence[str] | None) -> list[str]:
    if produces is None:
        return []
    if isinstance(produces, str):
        return [produces]
    return list(produces)


def input_type_of(fn: Handler, localns: dict[str, Any] | None = None) -> Any:
    """The type of a handler's first parameter; ``TypeError`` when it cannot be derived."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError(f"handler {fn.__qualname__} takes no parameter for the message")
    try:
        hints = typing.get_type_hints(fn, localns=localns)
    except Exception as exc:  # an annotation that names something undefined
        raise TypeError(f"handler {fn.__qualname__}: cannot resolve annotations: {exc}") from exc
    annotation = hints.get(params[0].name, inspect.Parameter.empty)
    if annotation is inspect.Parameter.empty or annotation is Any:
        return dict
    try:
        pydantic.TypeAdapter(annotation)
    except Exception as exc:
        raise TypeError(
            f"handler {fn.__qualname__}: input type {annotation!r} cannot be decoded ({exc})"
        ) from exc
    return annotation


def wants_context(fn: Handler) -> bool:
    """Whether the handler takes a second (context) parameter."""
    return len(inspect.signature(fn).parameters) >= 2


class PayloadDecoder:
    """Turns raw payload bytes into the handler's input type (pydantic does the JSON parse)."""

    def __init__(self, input_type: Any) -> None:
        self.input_type = input_type
        # decode(payload): the input value; raises ``ValueError`` (pydantic's) on bad input.
        # Bound once to the validator itself: it runs for every message.
        self.decode: Callable[[bytes], Any]
        model = input_type if isinstance(input_type, type) else None
        if input_type is bytes:
            self.decode = _as_is
        elif model is not None and issubclass(model, pydantic.BaseModel):
            plain = getattr(model.model_validate_json, "__func__", None) is _VALIDATE_JSON
            if plain and model.__pydantic_complete__:
                # What model_validate_json calls, without its frame.
                self.decode = model.__pydantic_validator__.validate_json
            else:  # overridden, or not built yet: pydantic's own entry point
                self.decode = model.model_validate_json
        else:
            self.decode = pydantic.TypeAdapter(input_type).validate_json


def _as_is(payload: bytes) -> bytes:
    return payload


_VALIDATE_JSON = pydantic.BaseModel.model_validate_json.__func__  # type: ignore[attr-defined]


def encode_payload(value: Any) -> bytes:
    """Serialise one output value to JSON bytes (bytes pass through)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json().encode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return orjson.dumps(value)
    try:
        return orjson.dumps(value)
    except TypeError:
        # Types orjson does not know (e.g. nested models inside a dict) go through pydantic.
        return pydantic.TypeAdapter(type(value)).dump_json(value)


def outputs_of(result: Any) -> list[Any]:
    """A handler's return value as a list of outputs (None -> none, list -> fan-out)."""
    if result is None:
        return []
    if isinstance(result, (list, tuple)):  # a tuple of types: `list | tuple` is built per call
        return [r for r in result if r is not None]
    return [result]


def field_path(payload: bytes, path: str) -> Any:
    """The value at a dotted field path of a JSON payload (``None`` when absent or not JSON)."""
    try:
        node: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    for part in path.removeprefix("payload.").split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


_MODEL_DUMP_JSON = pydantic.BaseModel.model_dump_json
# Model classes that keep pydantic's model_dump_json: serialised straight to bytes.
_PLAIN_MODELS: set[type] = set()


def encode_output(value: Any) -> bytes:
    """``encode_payload``, with pydantic models serialised straight to bytes (the same JSON as
    ``model_dump_json``, without its str round trip) unless the model overrides that."""
    cls = type(value)
    if cls in _PLAIN_MODELS:  # known per class: no isinstance check per message
        return cls.__pydantic_serializer__.to_json(value)  # type: ignore[no-any-return]
    if isinstance(value, pydantic.BaseModel) and cls.model_dump_json is _MODEL_DUMP_JSON:
        _PLAIN_MODELS.add(cls)
        return cls.__pydantic_serializer__.to_json(value)  # type: ignore[no-any-return]
    return encode_payload(value)


def describe_invalid(exc: Exception) -> str:
    """A one-line summary of why a payload failed to decode (first five errors)."""
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            parts.append(f"{loc}: {err['msg']}")
        return f"{exc.error_count()} validation error(s) for {exc.title}: " + "; ".join(parts)
    return str(exc)
