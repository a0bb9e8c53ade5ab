"""``agentflow dlq`` against Kafka: list, show, replay (keeping the id), purge."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from agentflow import App, Context, Reject
from tests.kafka.support import connected, eventually, fast, name

pytestmark = pytest.mark.kafka


async def agentflow_cli(*args: str) -> str:
    """Run ``python -m agentflow``; its output (AssertionError on a non-zero exit)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentflow", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_dlq_list_show_replay_purge(kafka_url: str) -> None:
    url = fast(kafka_url)
    topic = f"{name('cli')}.in"
    healed = False
    handled: list[str] = []
    app = App(name("cliapp"), broker=url)

    @app.agent(consumes=topic)
    async def picky(msg: dict[str, str], ctx: Context) -> None:
        if not healed:
            raise Reject(f"not yet {msg['id']}")
        handled.append(ctx.message_id)

    b = await connected(url)
    try:
        async with app:
            for i in range(3):
                await app.publish(topic, {"id": str(i)}, key="one", message_id=f"{topic}-m{i}")
            deadline = asyncio.get_running_loop().time() + 30
            while len(await b.browse(f"{topic}.dlq")) < 3:
                assert asyncio.get_running_loop().time() < deadline, "three dead letters"
                await asyncio.sleep(0.3)

            listing = await agentflow_cli("dlq", "list", topic, "-b", url)
            for i in range(3):
                assert f"{topic}-m{i}" in listing
            assert "rejected" in listing
            shown = await agentflow_cli("dlq", "show", topic, f"{topic}-m1", "-b", url)
            assert "af-original-offset" in shown and "not yet 1" in shown

            healed = True
            replayed = await agentflow_cli("dlq", "replay", topic, f"{topic}-m1", "-b", url)
            assert "replayed 1" in replayed
            await eventually(lambda: bool(handled), 30, "the replayed message")
            assert handled == [f"{topic}-m1"], "replay kept the message id"
            left = [m.headers["af-id"] for m in await b.browse(f"{topic}.dlq")]
            assert left == [f"{topic}-m0", f"{topic}-m2"], "the replayed one is removed"

            purged = await agentflow_cli("dlq", "purge", topic, "--yes", "-b", url)
            assert "purged 2" in purged
            assert await b.browse(f"{topic}.dlq") == []
    finally:
        await b.close()
