"""``agentflow dlq`` against NATS: list, show, replay inside the dedup window, purge."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from agentflow import App, Context, Reject
from agentflow.brokers.nats import NatsBroker
from tests.nats.support import wait_for

pytestmark = pytest.mark.nats


async def cli(*args: str) -> str:
    """Run ``agentflow`` in a subprocess; return its output, failing on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentflow",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def test_dlq_list_show_replay_purge(nats_url: str, prefix: str) -> None:
    topic = f"{prefix}.in"
    healed = False
    handled: list[str] = []
    app = App(f"cli{prefix}", broker=nats_url)

    @app.agent(consumes=topic)
    async def picky(msg: dict[str, str], ctx: Context) -> None:
        if not healed:
            raise Reject(f"not yet {msg['id']}")
        handled.append(ctx.message_id)

    b = NatsBroker(nats_url)
    await b.connect()
    try:
        async with app:
            for i in range(3):
                await app.publish(topic, {"id": str(i)}, message_id=f"{prefix}-m{i}")

            async def three_dead() -> bool:
                return len(await b.browse(f"{topic}.dlq")) >= 3

            await wait_for(three_dead, 20, "three dead letters")

            listing = await cli("dlq", "list", topic, "-b", nats_url)
            for i in range(3):
                assert f"{prefix}-m{i}" in listing
            assert "rejected" in listing
            shown = await cli("dlq", "show", topic, f"{prefix}-m1", "-b", nats_url)
            assert "af-original-stream" in shown and "not yet 1" in shown

            # Seconds after the original publish: its Nats-Msg-Id is still inside the
            # stream's duplicate window, yet the replay must arrive.
            healed = True
            replayed = await cli("dlq", "replay", topic, f"{prefix}-m1", "-b", nats_url)
            assert "replayed 1" in replayed
            await wait_for(lambda: handled, 20, "the replayed message")
            assert handled == [f"{prefix}-m1"], "replay kept the message id"
            left = [m.headers["af-id"] for m in await b.browse(f"{topic}.dlq")]
            assert left == [f"{prefix}-m0", f"{prefix}-m2"]

            purged = await cli("dlq", "purge", topic, "--yes", "-b", nats_url)
            assert "2" in purged
            assert await b.browse(f"{topic}.dlq") == []
            assert len(await b.browse(topic)) == 4  # the topic itself is untouched
    finally:
        await b.close()
