"""What ``agentflow validate|graph|schema|run FILE.yaml`` do; the CLI only parses arguments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson

from agentflow.app import App, install_event_loop_policy
from agentflow.pipeline import BUSY_DELAY
from agentflow.workflow.build import build_app
from agentflow.workflow.diagnostics import Severity
from agentflow.workflow.graph import render
from agentflow.workflow.live import View
from agentflow.workflow.spec import json_schema
from agentflow.workflow.validate import Checked, check_file

EXIT_OK = 0
EXIT_INVALID = 1  # the workflow (or an --input file) has errors
EXIT_FAILED = 2  # the run itself failed (broker unreachable, handler import side effects...)

_PollSeconds = 0.25


class WorkflowInvalid(Exception):
    """A workflow has errors; ``str()`` is the formatted diagnostics, one per line."""

    def __init__(self, checked: Checked) -> None:
        self.checked = checked
        lines = [d.format() for d in checked.diagnostics if d.severity is Severity.ERROR]
        super().__init__("\n".join(lines))


def _print_diagnostics(checked: Checked, err: IO[str]) -> None:
    for d in checked.diagnostics:
        print(d.format(), file=err)


def validate(
    files: Sequence[str | os.PathLike[str]],
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Check each file; print diagnostics to ``err`` and a verdict per file to ``out``."""
    out = out or sys.stdout
    err = err or sys.stderr
    status = EXIT_OK
    for file in files:
        checked = check_file(file, env)
        _print_diagnostics(checked, err)
        warnings = sum(d.severity is Severity.WARNING for d in checked.diagnostics)
        if checked.ok:
            note = f", {warnings} warning(s)" if warnings else ""
            print(f"{os.fspath(file)}: ok ({len(checked.plans)} agents{note})", file=out)
        else:
            errors = len(checked.diagnostics) - warnings
            print(f"{os.fspath(file)}: invalid ({errors} error(s))", file=out)
            status = EXIT_INVALID
    return status


def graph(
    file: str | os.PathLike[str], fmt: str = "mermaid", *, env: Mapping[str, str] | None = None
) -> str:
    """The workflow drawn in ``fmt`` (mermaid or dot); raises WorkflowInvalid / ValueError."""
    checked = check_file(file, env)
    if not checked.ok:
        raise WorkflowInvalid(checked)
    return render(checked.name, list(checked.plans.values()), fmt)


def schema() -> str:
    """The workflow JSON Schema, as committed in schema/workflow.schema.json."""
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def read_inputs(inputs: Mapping[str, str | os.PathLike[str]]) -> dict[str, list[Any]]:
    """Parse ``--input TOPIC=FILE.jsonl`` files: one JSON payload per non-blank line."""
    out: dict[str, list[Any]] = {}
    for topic, path in inputs.items():
        items = out.setdefault(topic, [])
        with open(path, encoding="utf-8") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    items.append(orjson.loads(raw))
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{os.fspath(path)}:{number}: not JSON: {exc}") from None
    return out


def settle_time(app: App) -> float:
    """How long nothing must happen before the run counts as idle.

    A message waiting out a retry (or busy-claim) delay is in no handler, so "idle" must
    outlast the longest delay any agent may wait; otherwise --until-idle would stop early.
    """
    longest = 0.0
    if any(spec.uses_idempotency for spec in app.specs.values()):
        # A duplicate arriving while the first copy runs is handed back for BUSY_DELAY.
        longest = BUSY_DELAY
    for spec in app.specs.values():
        policy = spec.retry
        if policy.max_attempts <= 1:
            continue
        for attempt in range(1, policy.max_attempts):
            longest = max(longest, policy.base_delay(attempt) * (1 + policy.jitter))
    return max(0.5, longest + 0.5)


async def drive(
    app: App,
    payloads: Mapping[str, list[Any]],
    *,
    until_idle: bool,
    view: View | None = None,
    quiet: float | None = None,
    topic_prefix: str = "",
) -> None:
    """Start ``app``, publish ``payloads``, run until idle (or a signal), then stop it."""
    if quiet is None:
        quiet = settle_time(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with app:
            for topic, items in payloads.items():
                for item in items:
                    await app.publish(topic_prefix + topic, item)
            while not stop.is_set():
                if view is not None:
                    view.refresh()
                if until_idle:
                    if await app.wait_idle(timeout=_PollSeconds, quiet=quiet):
                        break
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), _PollSeconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def run_workflow(
    file: str | os.PathLike[str],
    broker: str | None = None,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    until_idle: bool = False,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
    topic_prefix: str = "",
) -> int:
    """Run a workflow file until SIGINT/SIGTERM (or until idle); returns the exit code."""
    err = err or sys.stderr
    checked = check_file(file, env)
    _print_diagnostics(checked, err)
    if not checked.ok:
        return EXIT_INVALID
    try:
        payloads = read_inputs(inputs or {})
    except (OSError, ValueError) as exc:
        print(f"agentflow run: {exc}", file=err)
        return EXIT_INVALID
    app = build_app(checked, broker=broker, topic_prefix=topic_prefix)
    view = View(f"workflow {checked.name} on {app.broker.url}", app.stats, out)
    install_event_loop_policy()
    try:
        asyncio.run(
            drive(app, payloads, until_idle=until_idle, view=view, topic_prefix=topic_prefix)
        )
    except Exception as exc:  # a broker that cannot be reached, a store that cannot open
        view.close()
        print(f"agentflow run: {type(exc).__name__}: {exc}", file=err)
        return EXIT_FAILED
    view.close()
    return EXIT_OK


__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "WorkflowInvalid",
    "drive",
    "graph",
    "read_inputs",
    "run_workflow",
    "schema",
    "validate",
]
