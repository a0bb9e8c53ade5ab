"""``agentflow run``: run a Python app (module:app) or a YAML workflow until done or signalled."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import typer
from rich.logging import RichHandler

from agentflow.app import App, run_until_signal
from agentflow.cli_common import CliError, load_app, make_broker, note, stderr, stdout
from agentflow.cli_progress import cancel_quietly, print_summary, watch

MainFn = Callable[[App], Awaitable[Any]]
WORKFLOW_SUFFIXES = (".yaml", ".yml")
LOG_LEVELS = ("debug", "info", "warning", "error")


def workflow_commands() -> ModuleType:
    """The YAML workflow commands module, imported only when a workflow command runs."""
    name = "agentflow.workflow.commands"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a missing commands module means "not available"; other import errors are bugs.
        if exc.name not in (name, "agentflow.workflow"):
            raise
        raise CliError(
            f"YAML workflow support is not available in this installation ({name} is missing)"
        ) from exc


def run(
    target: str,
    *,
    broker: str | None,
    grace: float | None,
    inputs: list[str] | None,
    until_idle: bool,
    log_level: str,
) -> None:
    """Run ``target``; see ``agentflow run --help``."""
    configure_logging(log_level)
    if target.lower().endswith(WORKFLOW_SUFFIXES):
        run_workflow_file(target, broker=broker, grace=grace, inputs=inputs, until_idle=until_idle)
        return
    if inputs or until_idle:
        raise CliError(
            "--input and --until-idle apply to YAML workflows; a Python app feeds itself "
            "from an `async def main(app)` in its module"
        )
    app, module = load_app(target)
    if broker:
        app.broker = make_broker(broker)  # before start: the app connects on start
    if grace is not None:
        app.grace_period = grace
    run_app(app, main_of(module))


def run_app(app: App, main: MainFn | None) -> None:
    """Run ``app`` (and ``main`` alongside) with progress and a closing summary."""
    out = stdout()
    started: float | None = None
    agents = ", ".join(f"{s.name} ({s.consumes})" for s in app.specs.values()) or "no agents"
    out.print(f"running {app.name} on {app.broker.url}: {agents}", style="bold")

    async def side(app: App) -> None:
        nonlocal started
        started = time.monotonic()
        watcher = asyncio.create_task(watch(app.stats, out))
        try:
            if main is not None:
                await main(app)
            else:
                await asyncio.Event().wait()  # until SIGTERM/SIGINT cancels us
        finally:
            await cancel_quietly(watcher)

    try:
        run_until_signal(app, side)
    finally:
        # Also after a failure of main: the counters say how far it got.
        if started is not None:
            print_summary(app.stats, out, time.monotonic() - started)


def main_of(module: ModuleType) -> MainFn | None:
    """The module's ``async def main(app)`` (or ``main()``), if it defines one."""
    fn = getattr(module, "main", None)
    if fn is None:
        return None
    if not inspect.iscoroutinefunction(fn):
        note(
            f"{module.__name__}.main is not an async function, so agentflow run ignores it "
            "(it runs `async def main(app)` alongside the app)"
        )
        return None
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        params = []
    if len(params) > 1:
        raise CliError(f"{module.__name__}.main must take the app as its only argument")
    if not params:
        no_arg: Callable[[], Awaitable[Any]] = fn
        return lambda _app: no_arg()
    with_app: MainFn = fn
    return with_app


def run_workflow_file(
    path: str,
    *,
    broker: str | None,
    grace: float | None,
    inputs: list[str] | None,
    until_idle: bool,
) -> None:
    """Run a YAML workflow through :func:`agentflow.workflow.commands.run_workflow`."""
    file = Path(path)
    if not file.is_file():
        raise CliError(f"no such workflow file: {path!r}")
    feeds: dict[str, Path] = {}
    for topic, name in parse_inputs(inputs):
        if topic in feeds:
            raise CliError(f"--input {topic}=...: one input file per topic")
        feeds[topic] = name
    if grace is not None:
        note("--grace is not used by YAML workflow runs yet; the app's default applies")
    commands = workflow_commands()
    # run_workflow reports its own problems (diagnostics, broker errors) and returns the code.
    code = commands.run_workflow(file, broker=broker, inputs=feeds, until_idle=until_idle)
    if code:
        raise typer.Exit(code)


def parse_inputs(inputs: list[str] | None) -> list[tuple[str, Path]]:
    """Parse ``--input TOPIC=FILE.jsonl`` options (a topic may be fed from several files)."""
    feeds: list[tuple[str, Path]] = []
    for item in inputs or []:
        topic, sep, name = item.partition("=")
        if not sep or not topic.strip() or not name:
            raise CliError(f"invalid --input {item!r}: expected TOPIC=FILE.jsonl")
        if not Path(name).is_file():
            raise CliError(f"invalid --input {item!r}: no such file {name!r}")
        feeds.append((topic.strip(), Path(name)))
    return feeds


def configure_logging(level: str) -> None:
    """Send log records to stderr: rich on a terminal, timestamped plain lines otherwise."""
    name = level.lower()
    if name not in LOG_LEVELS:
        raise CliError(f"invalid --log-level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
    console = stderr()
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    # A host that configured logging already (an embedding program, pytest) keeps its setup.
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(name.upper())
    logging.getLogger("agentflow").setLevel(name.upper())
