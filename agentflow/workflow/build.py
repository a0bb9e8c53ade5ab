"""Turn a checked workflow into a runnable :class:`agentflow.App`."""

from __future__ import annotations

import dataclasses
from typing import Any

from agentflow.agent import AgentSpec
from agentflow.app import App
from agentflow.errors import ConfigError
from agentflow.workflow.plan import AgentPlan, retry_policy
from agentflow.workflow.routing import key_function
from agentflow.workflow.validate import Checked


def agent_spec(plan: AgentPlan) -> AgentSpec:
    """The runtime spec for one planned agent (YAML values over the decorator's)."""
    if plan.handler is None or plan.consumes is None:
        raise ConfigError(f"agent {plan.name!r} is not resolved; validate the workflow first")
    overrides: dict[str, Any] = {"name": plan.name, "consumes": plan.consumes}
    if plan.routes is not None:
        overrides["route"] = plan.routes.router()
        # Every route target is still declared as an output, so the app creates those topics
        # (streams on NATS) before the first message; the route picks among them per message.
        overrides["produces"] = sorted({t for targets in plan.routes.targets for t in targets})
    else:
        overrides["produces"] = list(plan.produces)
        overrides["route"] = None
    if plan.retry is not None:
        overrides["retry"] = retry_policy(plan.retry)
    if plan.timeout is not None:
        overrides["timeout"] = plan.timeout
    if plan.concurrency is not None:
        overrides["concurrency"] = plan.concurrency
    if plan.idempotency_key is not None:
        overrides["idempotency_key"] = key_function(plan.idempotency_key)
    if plan.idempotent is not None:
        overrides["idempotent"] = plan.idempotent
    if plan.idempotency_ttl is not None:
        overrides["idempotency_ttl"] = plan.idempotency_ttl
    if plan.dlq is not None:
        overrides["dlq"] = plan.dlq
    if plan.group is not None:
        overrides["group"] = plan.group
    if plan.decorated is not None:
        return dataclasses.replace(plan.decorated, **overrides)
    consumes = overrides.pop("consumes")
    route = overrides.pop("route")
    spec = AgentSpec.from_function(plan.handler, consumes, **overrides)
    spec.route = route
    return spec


def with_topic_prefix(plan: AgentPlan, prefix: str) -> AgentPlan:
    """A copy of ``plan`` whose every topic starts with ``prefix`` (isolates test runs)."""
    if not prefix:
        return plan
    routes = plan.routes
    if routes is not None:
        targets = tuple(tuple(prefix + t for t in ts) for ts in routes.targets)
        routes = dataclasses.replace(routes, targets=targets)
    return dataclasses.replace(
        plan,
        consumes=prefix + plan.consumes if plan.consumes else None,
        produces=[prefix + t for t in plan.produces],
        routes=routes,
        dlq=prefix + plan.dlq if plan.dlq else None,
    )


def build_app(
    checked: Checked,
    broker: str | None = None,
    store: str | None = None,
    *,
    topic_prefix: str = "",
) -> App:
    """An App with every agent of a valid workflow; ``broker`` overrides spec.broker."""
    if not checked.ok or checked.workflow is None:
        raise ConfigError(f"{checked.file}: the workflow has errors; run agentflow validate")
    wf = checked.workflow.spec
    kwargs: dict[str, Any] = {}
    if wf.grace_period is not None:
        kwargs["grace_period"] = wf.grace_period
    app = App(checked.name, broker=broker or wf.broker, store=store or wf.store, **kwargs)
    for plan in checked.plans.values():
        app.add_agent(agent_spec(with_topic_prefix(plan, topic_prefix)))
    return app
