"""``agentflow dlq``: list, show, replay and purge dead-lettered messages on any broker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, TypeVar

import orjson
import typer
from rich.json import JSON
from rich.markup import escape
from rich.table import Table

from agentflow import envelope
from agentflow.brokers import Broker, OutMessage, StoredMessage
from agentflow.cli_common import (
    BROKER_HELP,
    CliError,
    dlq_topic,
    error_line,
    make_broker,
    note,
    stdout,
    warn_if_volatile,
)

T = TypeVar("T")

DEFAULT_LIMIT = 100
# show/replay look a message up by id, so they read further than a listing does.
DEFAULT_SCAN = 10_000
ERROR_WIDTH = 60

Topic = Annotated[
    str,
    typer.Argument(
        metavar="TOPIC",
        help="The original topic or its dead-letter topic (.dlq appended if missing).",
    ),
]
BrokerOpt = Annotated[
    str | None, typer.Option("--broker", "-b", help=BROKER_HELP, envvar="AGENTFLOW_BROKER")
]
Scan = Annotated[int, typer.Option("--scan", min=1, help="Look at most N messages.")]

dlq_app = typer.Typer(
    name="dlq",
    help="Inspect and repair dead-letter topics (<topic>.dlq).",
    no_args_is_help=True,
)

# Headers a dead-letter copy gained (annotations, a retry tier's due time, the DLQ publish's
# broker dedup id); a replayed message must not carry them.
_DLQ_ONLY = (
    "af-dlq-",
    envelope.DLQ_ORIGINAL_PREFIX,
    envelope.DLQ_ATTEMPTS,
    envelope.NOT_BEFORE,
    "nats-msg-id",
)


def with_broker(url: str | None, work: Callable[[Broker], Awaitable[T]]) -> T:
    """Connect to the broker, run ``work`` with it, close it again."""
    broker = make_broker(url)
    warn_if_volatile(broker)

    async def go() -> T:
        await broker.connect()
        try:
            return await work(broker)
        finally:
            await broker.close()

    return asyncio.run(go())


def message_id(msg: StoredMessage) -> str:
    """The message's ``af-id`` (or a position-based stand-in for foreign messages)."""
    return msg.headers.get(envelope.ID) or position_text(msg)


def position_text(msg: StoredMessage) -> str:
    """The broker position as ``name=value`` pairs, e.g. ``stream=x.dlq,seq=3``."""
    return ",".join(f"{k}={v}" for k, v in sorted(msg.position.items())) or "?"


def age(timestamp_ms: int, now_ms: int | None = None) -> str:
    """A compact age such as ``42s``, ``3m10s``, ``2h5m`` or ``4d3h``."""
    if timestamp_ms <= 0:
        return "?"
    secs = max(0, ((now_ms if now_ms is not None else envelope.now_ms()) - timestamp_ms) // 1000)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60}s"
    if secs < 86_400:
        return f"{secs // 3600}h{secs % 3600 // 60}m"
    return f"{secs // 86_400}d{secs % 86_400 // 3600}h"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def replay_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers of a replayed copy: dead-letter annotations removed, a fresh first attempt."""
    out = {k: v for k, v in headers.items() if not k.lower().startswith(_DLQ_ONLY)}
    # af-agent was overwritten with the agent that gave up; restore the producer.
    producer = headers.get(f"{envelope.DLQ_ORIGINAL_PREFIX}agent")
    out.pop(envelope.AGENT, None)
    if producer:
        out[envelope.AGENT] = producer
    if envelope.ATTEMPT in out:
        out[envelope.ATTEMPT] = "1"
    return out


def replay_message(msg: StoredMessage, to: str | None) -> OutMessage:
    """The message to publish for one dead letter (same ``af-id``, its own dedup id)."""
    target = to or msg.headers.get(envelope.DLQ_ORIGINAL_TOPIC)
    if not target:
        raise CliError(f"message {message_id(msg)} has no af-original-topic header; use --to")
    mid = message_id(msg)
    # The original id is inside every broker's dedup window already; replay needs its own.
    return OutMessage(
        target,
        msg.payload,
        replay_headers(msg.headers),
        msg.key,
        dedup_id=f"{mid}:replay:{position_text(msg)}",
    )


def select(messages: Sequence[StoredMessage], ids: Sequence[str]) -> list[StoredMessage]:
    """The messages whose id is in ``ids``; CliError names the ids that are not there."""
    wanted = set(ids)
    found = [m for m in messages if message_id(m) in wanted]
    missing = wanted - {message_id(m) for m in found}
    if missing:
        raise CliError(f"not in the dead-letter topic: {', '.join(sorted(missing))}")
    return found


@dlq_app.command("list")
def list_(
    topic: Topic,
    broker: BrokerOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most N.")] = (
        DEFAULT_LIMIT
    ),
) -> None:
    """List dead letters: id, reason, error, attempts, age."""
    name = dlq_topic(topic)
    messages = with_broker(broker, lambda b: b.browse(name, limit))
    out = stdout()
    if not messages:
        out.print(f"no dead letters in {name}")
        return
    table = Table(title=f"{name} ({len(messages)} shown)", title_justify="left")
    for col in ("id", "reason", "error", "attempts", "agent", "age"):
        table.add_column(col, overflow="fold" if col == "id" else "ellipsis")
    now = envelope.now_ms()
    for m in messages:
        h = m.headers
        error = h.get(envelope.DLQ_ERROR, "")
        kind = h.get(envelope.DLQ_ERROR_TYPE, "")
        text = f"{kind}: {error}" if kind and kind not in error else error
        table.add_row(
            escape(message_id(m)),
            escape(h.get(envelope.DLQ_REASON, "?")),
            escape(_clip(text, ERROR_WIDTH)),
            h.get(envelope.DLQ_ATTEMPTS, "?"),
            escape(h.get(envelope.AGENT, "")),
            age(m.timestamp_ms, now),
        )
    out.print(table)


@dlq_app.command("show")
def show(
    topic: Topic,
    message: Annotated[str, typer.Argument(metavar="ID", help="The message id (af-id).")],
    broker: BrokerOpt = None,
    scan: Scan = DEFAULT_SCAN,
) -> None:
    """Show one dead letter: headers and payload."""
    name = dlq_topic(topic)
    messages = with_broker(broker, lambda b: b.browse(name, scan))
    msg = select(messages, [message])[0]
    out = stdout()
    table = Table(title=f"{name} {message}", title_justify="left", show_header=False)
    table.add_column("header", style="bold")
    table.add_column("value", overflow="fold")
    for k in sorted(msg.headers):
        table.add_row(escape(k), escape(msg.headers[k]))
    table.add_row("(key)", escape(msg.key or ""))
    table.add_row("(position)", escape(position_text(msg)))
    out.print(table)
    try:
        out.print(JSON.from_data(orjson.loads(msg.payload)))
    except orjson.JSONDecodeError:
        out.print(f"payload ({len(msg.payload)} bytes, not JSON): {msg.payload[:2000]!r}")


@dlq_app.command("replay")
def replay(
    topic: Topic,
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="ID", help="Ids to replay (or --all).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter of the topic.")
    ] = False,
    to: Annotated[
        str | None, typer.Option("--to", help="Publish to this topic instead of af-original-topic.")
    ] = None,
    broker: BrokerOpt = None,
    scan: Scan = DEFAULT_SCAN,
) -> None:
    """Republish dead letters to their original topic, keeping their message ids.

    Each entry is removed from the dead-letter topic only after its republish was accepted.
    """
    if bool(ids) == all_:
        raise CliError("give the ids to replay, or --all (not both)")
    name = dlq_topic(topic)

    async def work(b: Broker) -> tuple[int, list[str]]:
        messages = await b.browse(name, scan)
        if len(messages) >= scan:
            note(f"looked at the first {scan} messages of {name} only (raise --scan)")
        chosen = list(messages) if all_ else select(messages, ids or [])
        done, failed = 0, list[str]()
        for msg in chosen:
            try:
                out = replay_message(msg, to)
            except CliError as exc:
                failed.append(str(exc))
                continue
            await b.publish([out])
            await b.remove(name, [msg])  # only now: the copy is safely back in its topic
            done += 1
        return done, failed

    done, failed = with_broker(broker, work)
    for problem in failed:
        error_line(problem)
    stdout().print(f"replayed {done} message(s) from {name}")
    if failed:
        raise typer.Exit(1)


@dlq_app.command("purge")
def purge(
    topic: Topic,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    broker: BrokerOpt = None,
) -> None:
    """Delete every dead letter of a topic."""
    name = dlq_topic(topic)
    if not yes and not typer.confirm(f"Delete every message of {name}?", default=False):
        stdout().print("nothing deleted")
        raise typer.Exit(1)
    count = with_broker(broker, lambda b: b.purge(name))
    stdout().print(f"purged {count} message(s) from {name}")
