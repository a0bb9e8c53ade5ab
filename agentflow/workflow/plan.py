"""The effective settings of each workflow agent, with the documented precedence applied.

Precedence, highest first: the agent's own YAML keys, then ``spec.defaults``, then the
arguments of the handler's ``@app.agent`` decorator, then agentflow's built-in defaults.
A retry policy is taken whole from the first level that sets one; idempotency ``key`` and
``ttl`` are taken field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentflow.agent import AgentSpec
from agentflow.retry import RetryPolicy
from agentflow.workflow import spec as s
from agentflow.workflow.diagnostics import Path
from agentflow.workflow.routing import RouteTable


@dataclass
class AgentPlan:
    """One agent as the workflow will run it; ``None`` means "keep the handler's setting"."""

    name: str
    uses: str
    handler: Any = None  # None until `uses` resolved
    decorated: AgentSpec | None = None  # the @app.agent spec of the handler, if any
    consumes: str | None = None
    produces: list[str] = field(default_factory=list)
    routes: RouteTable | None = None
    retry: s.RetrySpec | None = None
    timeout: float | None = None
    concurrency: int | None = None
    idempotency_key: str | None = None
    idempotent: bool | None = None
    idempotency_ttl: float | None = None
    dlq: str | None = None
    group: str | None = None

    @property
    def path(self) -> Path:
        """Where this agent lives in the document."""
        return ("spec", "agents", self.name)

    def dead_letter_topic(self) -> str | None:
        """The topic this agent's dead letters go to."""
        if self.dlq:
            return self.dlq
        return f"{self.consumes}.dlq" if self.consumes else None


def retry_spec_of(
    ref: str | s.RetrySpec | None, policies: dict[str, s.RetrySpec]
) -> s.RetrySpec | None:
    """An inline policy as is, a named one looked up (unknown names were reported already)."""
    if isinstance(ref, str):
        return policies.get(ref)
    return ref


def idempotency_spec_of(
    ref: str | s.IdempotencySpec | None, policies: dict[str, s.IdempotencySpec]
) -> s.IdempotencySpec | None:
    """Same as retry_spec_of, for idempotency policies."""
    if isinstance(ref, str):
        return policies.get(ref)
    return ref


def plan_agent(
    name: str, agent: s.Agent, wf: s.WorkflowSpec, handler: Any, decorated: AgentSpec | None
) -> AgentPlan:
    """Merge one agent's YAML with the workflow defaults and its decorator's arguments."""
    d = wf.defaults
    plan = AgentPlan(name=name, uses=agent.uses, handler=handler, decorated=decorated)
    plan.consumes = agent.consumes or (decorated.consumes if decorated else None)
    if agent.routes is not None:
        plan.routes = RouteTable(
            tuple(r.when for r in agent.routes), tuple(tuple(r.to) for r in agent.routes)
        )
    elif agent.produces is not None:
        plan.produces = list(agent.produces)
    elif decorated is not None:
        plan.produces = list(decorated.produces)
    plan.retry = retry_spec_of(agent.retry, wf.policies.retry) or retry_spec_of(
        d.retry, wf.policies.retry
    )
    plan.timeout = agent.timeout if agent.timeout is not None else d.timeout
    plan.concurrency = agent.concurrency if agent.concurrency is not None else d.concurrency
    own = idempotency_spec_of(agent.idempotency, wf.policies.idempotency)
    dflt = d.idempotency
    plan.idempotency_key = (own.key if own else None) or (dflt.key if dflt else None)
    plan.idempotency_ttl = _first(own.ttl if own else None, dflt.ttl if dflt else None)
    if plan.idempotency_key is None and own is not None:
        # `idempotency: {}` (or only a ttl) opts in; the decorator's key wins over the id.
        has_key = decorated is not None and decorated.idempotency_key is not None
        plan.idempotent = None if has_key else True
    plan.dlq = agent.dlq
    plan.group = agent.group
    return plan


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def retry_policy(spec: s.RetrySpec) -> RetryPolicy:
    """The runtime policy for a workflow retry block."""
    backoff = spec.backoff
    if isinstance(backoff, s.ExponentialBackoff):
        return RetryPolicy.exponential(
            initial=backoff.initial,
            multiplier=backoff.multiplier,
            max_delay=backoff.max,
            jitter=backoff.jitter,
            max_attempts=spec.max_attempts,
        )
    if backoff is None:
        return RetryPolicy(max_attempts=spec.max_attempts)
    delays = backoff if isinstance(backoff, list) else [backoff]
    return RetryPolicy(max_attempts=spec.max_attempts, backoff=delays)
