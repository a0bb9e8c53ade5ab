"""The workflow file format as pydantic models; the JSON Schema is generated from these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    Tag,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from agentflow.workflow import durations

API_VERSION = "agentflow.dev/v1"
KIND = "Workflow"
SCHEMA_ID = "https://agentflow.dev/schema/workflow.schema.json"

# Topics: dot-separated tokens; NATS wildcards `*` (one token) and `>` (the rest) are allowed.
TOPIC_PATTERN = r"^[A-Za-z0-9_\-*>]+(\.[A-Za-z0-9_\-*>]+)*$"
# Agent names become consumer-group / durable names, where NATS forbids dots.
AGENT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
POLICY_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
USES_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
INTERPOLATION_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"


def _invalid(problem: str, expected: str) -> PydanticCustomError:
    # One error type for our own checks; the message translator reads both parts from ctx.
    context = {"problem": problem, "expected": expected}
    return PydanticCustomError("af_invalid", "{problem}", context)


def _to_seconds(value: Any) -> float:
    try:
        return durations.parse_duration(value)
    except durations.DurationError as exc:
        raise _invalid(str(exc), durations.EXPECTED) from None


class _DurationJsonSchema:
    """Publishes what a duration may look like in a file (a float schema would reject 30s)."""

    def __get_pydantic_json_schema__(
        self, core: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": durations.DURATION_PATTERN},
                {"type": "string", "pattern": f"^{INTERPOLATION_PATTERN}$"},
            ],
            "description": "Seconds, or a duration such as 500ms, 30s, 5m, 24h.",
        }


Duration = Annotated[float, BeforeValidator(_to_seconds), _DurationJsonSchema()]

TopicName = Annotated[
    str,
    StringConstraints(pattern=TOPIC_PATTERN),
    Field(description="A topic (NATS subject syntax: dot-separated, * and > wildcards)."),
]


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise _invalid(f"got {describe(value)}", "expected a topic or a list of topics")


Topics = Annotated[
    list[TopicName],
    BeforeValidator(_one_or_many, json_schema_input_type=TopicName | list[TopicName]),
    Field(min_length=1),
]


def describe(value: Any) -> str:
    """Name a YAML value for a message: ``integer 5``, ``a mapping``, ``string 'x'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'number'} {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class ExponentialBackoff(_Model):
    """``initial * multiplier**(attempt-1)``, capped at ``max``, +/- ``jitter`` (a fraction)."""

    initial: Duration = Field(0.5, description="Delay before the first retry.")
    multiplier: float = Field(2.0, ge=1.0, description="Growth factor per attempt (>= 1).")
    max: Duration = Field(30.0, description="Upper bound of one delay.")
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="Random +/- fraction of each delay.")


def _backoff_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "fixed"
    if isinstance(value, dict):
        return "exponential"
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return "constant"
    return None


Backoff = Annotated[
    Annotated[list[Duration], Tag("fixed")]
    | Annotated[ExponentialBackoff, Tag("exponential")]
    | Annotated[Duration, Tag("constant")],
    Discriminator(
        _backoff_kind,
        custom_error_type="af_backoff",
        custom_error_message="not a backoff",
    ),
]


class RetrySpec(_Model):
    """How often a failing message is tried and how long to wait in between."""

    max_attempts: int = Field(5, ge=1, description="Attempts including the first.")
    backoff: Backoff | None = Field(
        None,
        description="A fixed delay, a list of delays (the last repeats) or exponential settings.",
    )


class IdempotencySpec(_Model):
    """Run the handler at most once per key; without ``key`` the message id is the key."""

    key: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        None,
        description="An input field path (customer.id) or a CEL expression (payload.id).",
    )
    ttl: Duration | None = Field(None, description="How long a completed key is remembered.")


PolicyName = Annotated[str, StringConstraints(pattern=POLICY_NAME_PATTERN)]


def _ref_or_inline(value: Any) -> str | None:
    if isinstance(value, str):
        return "policy"
    if isinstance(value, dict):
        return "inline"
    return None


RetryRef = Annotated[
    Annotated[PolicyName, Tag("policy")] | Annotated[RetrySpec, Tag("inline")],
    Discriminator(
        _ref_or_inline, custom_error_type="af_retry_ref", custom_error_message="not a retry policy"
    ),
]
IdempotencyRef = Annotated[
    Annotated[PolicyName, Tag("policy")] | Annotated[IdempotencySpec, Tag("inline")],
    Discriminator(
        _ref_or_inline,
        custom_error_type="af_idempotency_ref",
        custom_error_message="not an idempotency policy",
    ),
]


class Route(_Model):
    """Where one output goes: the first route whose ``when`` holds, or the default (no when)."""

    when: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        None, description="CEL over payload, headers, key, topic; omit for the default route."
    )
    to: Topics = Field(description="Topic or topics the output is published to.")


class Agent(_Model):
    """One agent: a handler wired to topics, with delivery settings."""

    uses: Annotated[str, StringConstraints(pattern=USES_PATTERN)] = Field(
        description="The handler as module:function (an async function, decorated or not)."
    )
    description: str | None = None
    consumes: TopicName | None = Field(
        None, description="Input topic; may be omitted when the handler's decorator names it."
    )
    produces: Topics | None = Field(
        None, description="Output topic, or a list: every output goes to each (fan-out)."
    )
    routes: list[Route] | None = Field(
        None, min_length=1, description="Ordered conditional outputs; replaces produces."
    )
    retry: RetryRef | None = None
    timeout: Duration | None = Field(None, description="Time limit of one attempt.")
    concurrency: int | None = Field(None, ge=1, description="In-flight messages per worker.")
    idempotency: IdempotencyRef | None = None
    dlq: TopicName | None = Field(None, description="Dead-letter topic (default <consumes>.dlq).")
    group: str | None = Field(None, description="Consumer group (default: the agent name).")


class Defaults(_Model):
    """Settings every agent gets unless it sets its own (see docs/workflows.md, precedence)."""

    retry: RetryRef | None = None
    timeout: Duration | None = None
    concurrency: int | None = Field(None, ge=1)
    idempotency: IdempotencySpec | None = Field(
        None, description="Merged field by field into agents that declare idempotency."
    )


class Policies(_Model):
    """Named policies agents refer to by name (``retry: patient``)."""

    retry: dict[PolicyName, RetrySpec] = Field(default_factory=dict)
    idempotency: dict[PolicyName, IdempotencySpec] = Field(default_factory=dict)


AgentName = Annotated[str, StringConstraints(pattern=AGENT_NAME_PATTERN)]


class WorkflowSpec(_Model):
    """The body of a workflow."""

    broker: str | None = Field(
        None, description="Broker URL (memory://, nats://..., kafka://...); --broker overrides."
    )
    store: str | None = Field(None, description="Idempotency store URL.")
    grace_period: Duration | None = Field(None, description="Shutdown grace period.")
    inputs: list[TopicName] = Field(
        default_factory=list, description="Topics fed from outside the workflow."
    )
    outputs: list[TopicName] = Field(
        default_factory=list, description="Topics read outside the workflow."
    )
    defaults: Defaults = Field(default_factory=Defaults)
    policies: Policies = Field(default_factory=Policies)
    agents: dict[AgentName, Agent] = Field(min_length=1)


class Metadata(_Model):
    """Names the workflow; ``name`` is also the app's name."""

    name: Annotated[str, StringConstraints(pattern=AGENT_NAME_PATTERN)]
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Workflow(_Model):
    """An agentflow workflow file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="agentflow Workflow",
        json_schema_extra={"$id": SCHEMA_ID},
    )

    api_version: Literal["agentflow.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Workflow"]
    metadata: Metadata
    spec: WorkflowSpec


def json_schema() -> dict[str, Any]:
    """The JSON Schema of workflow files (what ``agentflow schema`` prints)."""
    schema = Workflow.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
