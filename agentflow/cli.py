"""The ``agentflow`` command line: run apps and workflows, publish, repair dead letters."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from agentflow import __version__
from agentflow.app import App
from agentflow.brokers import BrokerError
from agentflow.cli_common import (
    BROKER_HELP,
    CliError,
    describe,
    error_line,
    make_broker,
    parse_json,
    parse_pairs,
    stdout,
    warn_if_volatile,
)
from agentflow.cli_dlq import dlq_app
from agentflow.cli_run import LOG_LEVELS, workflow_commands
from agentflow.cli_run import run as run_target
from agentflow.errors import AgentflowError

DEBUG_HINT = " (run with --debug for the traceback)"


def _click_exception() -> type[Exception]:
    """Click's ClickException, wherever this typer version keeps click (vendored or not)."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException" and issubclass(cls, Exception):
            return cls
    return typer.BadParameter


# Exceptions the command-line framework reports itself (usage errors, --help, typer.Exit).
_FRAMEWORK = (typer.Exit, typer.Abort, _click_exception())


class _Group(TyperGroup):
    """Turns any error of a command into one red line (and a traceback with --debug)."""

    # ``ctx`` is click's Context, vendored inside typer in recent versions: left untyped here.
    def invoke(self, ctx: Any) -> Any:
        """Run the command; report an error as one line and exit with status 1."""
        try:
            return super().invoke(ctx)
        except _FRAMEWORK:
            raise
        except Exception as exc:
            debug = bool(ctx.params.get("debug"))
            if debug:
                traceback.print_exc()
            # Our own errors (and the broker's) say all there is to say; others get the hint.
            known = isinstance(exc, CliError | BrokerError | AgentflowError)
            error_line(describe(exc) + ("" if debug or known else DEBUG_HINT))
            raise typer.Exit(1) from None


cli = typer.Typer(
    cls=_Group,
    name="agentflow",
    help="Event-driven agents on NATS JetStream, Kafka or the embedded broker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
cli.add_typer(dlq_app, name="dlq")


def _version(value: bool) -> None:
    if value:
        stdout().print(f"agentflow {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="AGENTFLOW_DEBUG", help="Show tracebacks of errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Event-driven agents on NATS JetStream, Kafka or the embedded broker.

    Errors print one line and exit non-zero; add --debug for the traceback.
    """


@cli.command()
def run(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET", help="module:app, path/to/file.py:app, or a workflow .yaml/.yml file."
        ),
    ],
    broker: Annotated[
        str | None,
        typer.Option("--broker", "-b", help="Use this broker instead of the app's. " + BROKER_HELP),
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds to finish in-flight work on SIGTERM/SIGINT."),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="TOPIC=FILE.jsonl",
            help="YAML only: publish each JSON line of FILE to TOPIC after start.",
        ),
    ] = None,
    until_idle: Annotated[
        bool,
        typer.Option("--until-idle", help="YAML only: stop once nothing is in flight or arriving."),
    ] = False,
    log_level: Annotated[str, typer.Option(help=f"Log level: {', '.join(LOG_LEVELS)}.")] = (
        "warning"
    ),
) -> None:
    """Run an app or a YAML workflow until it finishes or gets SIGTERM/SIGINT.

    For module:app: if the module defines `async def main(app)`, it runs alongside the
    started app, and the app stops gracefully when main returns; otherwise the app runs until
    SIGTERM/SIGINT. Progress shows while it runs; a summary (processed / retried /
    dead-lettered per agent) closes the run.
    """
    run_target(
        target,
        broker=broker,
        grace=grace,
        inputs=inputs,
        until_idle=until_idle,
        log_level=log_level,
    )


@cli.command()
def publish(
    topic: Annotated[str, typer.Argument(help="Topic to publish to.")],
    payload: Annotated[
        str, typer.Argument(metavar="JSON", help="The payload as JSON; - reads stdin.")
    ],
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="Message key (per-key order, partition).")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", metavar="NAME=VALUE", help="Extra header (repeatable)."),
    ] = None,
    message_id: Annotated[
        str | None,
        typer.Option("--id", help="Message id (af-id); a new time-ordered id by default."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option("--broker", "-b", help=BROKER_HELP, envvar="AGENTFLOW_BROKER"),
    ] = None,
) -> None:
    """Publish one message and print its id once the broker accepted it."""
    value = parse_json(payload, "JSON")
    headers = parse_pairs(header, "--header")
    b = make_broker(broker)
    warn_if_volatile(b)
    app = App("cli", broker=b)

    async def go() -> str:
        try:
            return await app.publish(
                topic, value, key=key, headers=headers or None, message_id=message_id
            )
        finally:
            await app.stop()

    stdout().print(asyncio.run(go()))


@cli.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Workflow YAML files to check.")],
) -> None:
    """Check workflow files; errors name the file, line and field."""
    code = workflow_commands().validate(files)
    if code:
        raise typer.Exit(code)


@cli.command()
def graph(
    file: Annotated[Path, typer.Argument(help="Workflow YAML file.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot.")] = "mermaid",
) -> None:
    """Print a workflow's topology as a Mermaid or DOT picture."""
    commands = workflow_commands()
    try:
        picture = commands.graph(file, fmt)
    except commands.WorkflowInvalid as exc:
        # Diagnostics are one per line (file:line:col: field: problem); keep them that way.
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(picture)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of workflow files."""
    typer.echo(workflow_commands().schema(), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli()
