"""The topic graph of a workflow: who feeds whom, dangling topics and cycles."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agentflow.workflow.diagnostics import Diagnostic, Path, Severity
from agentflow.workflow.loader import SourceMap
from agentflow.workflow.plan import AgentPlan


def subject_matches(pattern: str, topic: str) -> bool:
    """NATS subject matching: ``*`` is one token, a trailing ``>`` one or more."""
    want, have = pattern.split("."), topic.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


@dataclass(frozen=True, slots=True)
class Edge:
    """An agent publishing to a topic, with the route condition (None: unconditional)."""

    agent: str
    topic: str
    condition: str | None
    routed: bool
    path: Path


def outputs(plan: AgentPlan) -> list[Edge]:
    """Every topic an agent can publish to (dead letters excluded)."""
    if plan.routes is not None:
        return [
            Edge(plan.name, topic, cond, True, (*plan.path, "routes", i, "to"))
            for i, (cond, targets) in enumerate(
                zip(plan.routes.conditions, plan.routes.targets, strict=True)
            )
            for topic in targets
        ]
    return [
        Edge(plan.name, t, None, False, (*plan.path, "produces", i))
        for i, t in enumerate(plan.produces)
    ]


def _consumed_by(topic: str, plans: Iterable[AgentPlan]) -> list[str]:
    return [p.name for p in plans if p.consumes and subject_matches(p.consumes, topic)]


def _covered(topic: str, declared: Sequence[str]) -> bool:
    return any(subject_matches(d, topic) or subject_matches(topic, d) for d in declared)


def warnings(
    plans: Sequence[AgentPlan], inputs: Sequence[str], outputs_: Sequence[str], source: SourceMap
) -> list[Diagnostic]:
    """Topics produced but never consumed, consumed but never produced, and cycles."""
    found: list[Diagnostic] = []
    edges = [e for p in plans for e in outputs(p)]
    warned: set[str] = set()
    for e in edges:
        if e.topic in warned or _consumed_by(e.topic, plans) or _covered(e.topic, outputs_):
            continue
        warned.add(e.topic)
        found.append(
            Diagnostic(
                source.file,
                source.value(e.path),
                e.path,
                f"topic '{e.topic}' is produced but no agent consumes it",
                "list it in spec.outputs if something outside the workflow reads it",
                Severity.WARNING,
            )
        )
    for p in plans:
        if not p.consumes or _covered(p.consumes, inputs):
            continue
        if any(subject_matches(p.consumes, e.topic) for e in edges):
            continue
        path = (*p.path, "consumes")
        found.append(
            Diagnostic(
                source.file,
                source.value(path),
                path,
                f"topic '{p.consumes}' is consumed but no agent produces it",
                "list it in spec.inputs if it is fed from outside the workflow",
                Severity.WARNING,
            )
        )
    for cycle in cycles(plans):
        path = cycle[0].path
        found.append(
            Diagnostic(
                source.file,
                source.key(path),
                path,
                "agents form a cycle: " + " -> ".join([c.name for c in cycle] + [cycle[0].name]),
                "expected an acyclic flow, or a loop that ends by design",
                Severity.WARNING,
            )
        )
    return found


def cycles(plans: Sequence[AgentPlan]) -> list[list[AgentPlan]]:
    """Each elementary cycle found by depth-first search, reported once (dead letters ignored)."""
    by_name = {p.name: p for p in plans}
    succ = {
        p.name: sorted({c for e in outputs(p) for c in _consumed_by(e.topic, plans)}) for p in plans
    }
    seen_sets: set[frozenset[str]] = set()
    out: list[list[AgentPlan]] = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in succ[node]:
            if nxt in stack:
                loop = stack[stack.index(nxt) :]
                key = frozenset(loop)
                if key not in seen_sets:
                    seen_sets.add(key)
                    out.append([by_name[n] for n in loop])
            elif nxt not in done:
                visit(nxt, [*stack, nxt])
        done.add(node)

    done: set[str] = set()
    for p in plans:
        if p.name not in done:
            visit(p.name, [p.name])
    return out
