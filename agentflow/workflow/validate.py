"""Check a workflow file end to end: YAML, schema, references, handlers, CEL and topology."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import pydantic

from agentflow.agent import AgentSpec, input_type_of
from agentflow.workflow import spec as s
from agentflow.workflow.diagnostics import (
    Diagnostic,
    Path,
    Position,
    Severity,
    errors,
    suggestion,
)
from agentflow.workflow.loader import SourceMap, load
from agentflow.workflow.plan import AgentPlan, plan_agent
from agentflow.workflow.resolve import UsesError, importable_from, resolve
from agentflow.workflow.routing import (
    EXPECTED_CEL,
    CelUnavailable,
    compile_cel,
    is_field_path,
    unreachable_after_default,
)
from agentflow.workflow.topology import warnings as topology_warnings
from agentflow.workflow.translate import diagnostics_from

_INPUT_TYPES = "expected the first parameter annotated: pydantic model, dataclass, dict or bytes"


@dataclass
class Checked:
    """The outcome of checking one workflow file."""

    file: str
    source: SourceMap
    workflow: s.Workflow | None = None
    plans: dict[str, AgentPlan] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return self.workflow is not None and not errors(self.diagnostics)

    @property
    def name(self) -> str:
        """The workflow's metadata.name."""
        return self.workflow.metadata.name if self.workflow else FsPath(self.file).stem


def check_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Checked:
    """Read and check a workflow file; handler modules are imported from its directory."""
    file = os.fspath(path)
    try:
        text = FsPath(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        checked = Checked(file, SourceMap(file))
        checked.diagnostics.append(
            Diagnostic(
                file,
                Position(1, 1),
                (),
                f"cannot read file: {exc}",
                "expected a readable UTF-8 file",
            )
        )
        return checked
    return check_text(text, file, FsPath(file).parent, env)


def check_text(
    text: str, file: str, base_dir: FsPath, env: Mapping[str, str] | None = None
) -> Checked:
    """Check workflow ``text`` as if read from ``file``."""
    loaded = load(text, file, os.environ if env is None else env)
    checked = Checked(file, loaded.source, diagnostics=list(loaded.diagnostics))
    if loaded.data is None:
        return checked
    try:
        wf = s.Workflow.model_validate(loaded.data)
    except pydantic.ValidationError as exc:
        # Keep the loader's finding where both saw the same spot (an unset ${VAR} also fails
        # its pattern); report everything else so one run shows every problem.
        known = {d.path for d in checked.diagnostics}
        found = diagnostics_from(exc, loaded.data, loaded.source)
        checked.diagnostics += [d for d in found if d.path not in known]
        return _sorted(checked)
    if errors(checked.diagnostics):
        return _sorted(checked)
    checked.workflow = wf
    _Checker(checked, wf, base_dir).run()
    return _sorted(checked)


def _sorted(checked: Checked) -> Checked:
    order = {Severity.ERROR: 0, Severity.WARNING: 1}
    checked.diagnostics.sort(key=lambda d: (order[d.severity], d.position.line, d.position.column))
    return checked


class _Checker:
    """Semantic checks that need the whole document (and the handlers) to decide."""

    def __init__(self, checked: Checked, wf: s.Workflow, base_dir: FsPath) -> None:
        self.checked = checked
        self.wf = wf
        self.spec = wf.spec
        self.base_dir = base_dir
        self.source = checked.source

    def report(
        self,
        path: Path,
        problem: str,
        expected: str | None,
        *,
        key: bool = False,
        severity: Severity = Severity.ERROR,
    ) -> None:
        at = self.source.key(path) if key else self.source.value(path)
        self.checked.diagnostics.append(
            Diagnostic(self.checked.file, at, path, problem, expected, severity)
        )

    def run(self) -> None:
        self._policy_ref(("spec", "defaults", "retry"), self.spec.defaults.retry, "retry")
        with importable_from(self.base_dir):
            for name, agent in self.spec.agents.items():
                plan = self._agent(name, agent)
                self.checked.plans[name] = plan
        if errors(self.checked.diagnostics):
            return
        self.checked.diagnostics += topology_warnings(
            list(self.checked.plans.values()), self.spec.inputs, self.spec.outputs, self.source
        )

    def _policy_ref(self, path: Path, ref: object, kind: str) -> None:
        if not isinstance(ref, str):
            return
        known = getattr(self.spec.policies, kind)
        if ref not in known:
            self.report(
                path,
                f"no {kind} policy named '{ref}'",
                suggestion(ref, known, f"policies defined in spec.policies.{kind}"),
            )

    def _agent(self, name: str, agent: s.Agent) -> AgentPlan:
        base: Path = ("spec", "agents", name)
        self._policy_ref((*base, "retry"), agent.retry, "retry")
        self._policy_ref((*base, "idempotency"), agent.idempotency, "idempotency")
        handler, decorated = self._handler(base, agent.uses)
        plan = plan_agent(name, agent, self.spec, handler, decorated)
        if handler is not None and plan.consumes is None:
            self.report(
                base,
                f"agent '{name}' has no input topic",
                "expected consumes: <topic>, here or in the handler's @app.agent decorator",
                key=True,
            )
        if agent.routes is not None and agent.produces is not None:
            self.report(
                (*base, "routes"),
                "an agent cannot have both 'produces' and 'routes'",
                "expected one of them; a route without 'when' is the default output",
                key=True,
            )
        for i, route in enumerate(agent.routes or []):
            if route.when is not None:
                self._cel((*base, "routes", i, "when"), route.when)
        for i in unreachable_after_default([r.when for r in agent.routes or []]):
            self.report(
                (*base, "routes", i),
                "this route can never match: an earlier route has no 'when' (the default)",
                "expected the default route last",
                severity=Severity.WARNING,
            )
        if plan.idempotency_key is not None and not is_field_path(plan.idempotency_key):
            self._cel(self._idempotency_key_path(base, agent), plan.idempotency_key)
        return plan

    def _idempotency_key_path(self, base: Path, agent: s.Agent) -> Path:
        if isinstance(agent.idempotency, s.IdempotencySpec) and agent.idempotency.key:
            return (*base, "idempotency", "key")
        if isinstance(agent.idempotency, str):
            return ("spec", "policies", "idempotency", agent.idempotency, "key")
        return ("spec", "defaults", "idempotency", "key")

    def _handler(self, base: Path, uses: str) -> tuple[Any, AgentSpec | None]:
        path = (*base, "uses")
        try:
            handler = resolve(uses)
        except UsesError as exc:
            self.report(path, exc.problem, exc.expected)
            return None, None
        decorated = getattr(handler, "__agentflow_spec__", None)
        if not isinstance(decorated, AgentSpec):
            decorated = None
            try:
                input_type_of(handler)
            except TypeError as exc:
                self.report(path, f"cannot derive the input type: {exc}", _INPUT_TYPES)
                return None, None
        return handler, decorated

    def _cel(self, path: Path, expression: str) -> None:
        try:
            compile_cel(expression)
        except CelUnavailable as exc:
            self.report(path, str(exc), "expected an agentflow build with CEL support")
        except ValueError as exc:
            self.report(path, f"invalid CEL expression: {_first_line(exc)}", EXPECTED_CEL)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
