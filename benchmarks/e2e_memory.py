"""End-to-end throughput on the embedded broker: two chained agents, pydantic input model.

    python benchmarks/e2e_memory.py run [--messages N] [--concurrency C]
    python benchmarks/e2e_memory.py compare --baseline REV [--repeats R] [...]
    python benchmarks/e2e_memory.py profile [--out FILE] [...]      # py-spy, top frames

``run`` publishes N messages to ``<p>.a``; agent ``relay`` (``M -> M``) forwards each to
``<p>.b``; agent ``sink`` counts them. Reported: messages/s through the whole pipeline (first
publish to last sink call) and the publish rate.

``compare`` runs the same script against the code of git revision REV (checked out in a
temporary worktree that borrows this tree's native module, whose API is a superset) and
against this tree, alternating R times, all in one invocation, so both see the same machine.
Not a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def pipeline(messages: int, concurrency: int) -> dict[str, float]:
    from pydantic import BaseModel

    from agentflow import App

    class M(BaseModel):
        seq: int
        body: str

    app = App("bench", broker=f"memory://e2e-{uuid.uuid4().hex[:8]}")
    done = asyncio.Event()
    count = 0
    prefix = "b" + uuid.uuid4().hex[:6]

    @app.agent(consumes=f"{prefix}.a", produces=f"{prefix}.b", concurrency=concurrency)
    async def relay(m: M) -> M:
        return m

    @app.agent(consumes=f"{prefix}.b", concurrency=concurrency)
    async def sink(m: M) -> None:
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    async with app:
        start = time.perf_counter()
        body = "x" * 200
        for i in range(messages):
            await app.publish(f"{prefix}.a", {"seq": i, "body": body})
        published = time.perf_counter() - start
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - start
    return {"msgs_per_s": messages / elapsed, "publish_per_s": messages / published}


def run(messages: int, concurrency: int) -> dict[str, float]:
    import uvloop

    return uvloop.run(pipeline(messages, concurrency))


def baseline_tree(rev: str) -> Path:
    """A worktree of ``rev`` with this tree's native module copied in."""
    where = Path(tempfile.mkdtemp(prefix="af-e2e-baseline-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
        check=True,
        capture_output=True,
    )
    for native in (ROOT / "agentflow").glob("_native*.so"):
        shutil.copy2(native, where / "agentflow" / native.name)
    return where


def child(tree: Path, messages: int, concurrency: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "run",
            "--json",
            "--messages",
            str(messages),
            "--concurrency",
            str(concurrency),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def compare(rev: str, repeats: int, messages: int, concurrency: int) -> None:
    tree = baseline_tree(rev)
    try:
        rates: dict[str, list[float]] = {"baseline": [], "current": []}
        for _ in range(repeats):
            rates["baseline"].append(child(tree, messages, concurrency)["msgs_per_s"])
            rates["current"].append(child(ROOT, messages, concurrency)["msgs_per_s"])
        print(f"{messages} messages, 2 agents, concurrency {concurrency}, {repeats} runs each")
        for name, values in rates.items():
            label = f"{name} ({rev})" if name == "baseline" else name
            print(
                f"  {label:28} median {statistics.median(values):8.0f} msg/s   "
                f"runs {', '.join(f'{v:.0f}' for v in values)}"
            )
        ratio = statistics.median(rates["current"]) / statistics.median(rates["baseline"])
        print(f"  speed-up (median/median): {ratio:.2f}x")
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )


def profile(out: str, messages: int, concurrency: int) -> None:
    raw = out + ".raw"
    subprocess.run(
        [
            "py-spy",
            "record",
            "-r",
            "400",
            "-f",
            "raw",
            "-o",
            raw,
            "--",
            sys.executable,
            str(Path(__file__).resolve()),
            "run",
            "--messages",
            str(messages),
            "--concurrency",
            str(concurrency),
        ],
        check=True,
        capture_output=True,
    )
    own: dict[str, int] = {}
    total = 0
    for line in Path(raw).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    lines = [f"{100 * c / total:5.1f}%  {f}" for f, c in sorted(own.items(), key=lambda x: -x[1])]
    Path(out).write_text("\n".join(lines[:60]) + "\n")
    print("\n".join(lines[:25]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "compare", "profile"])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--baseline", default="b0df4b1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="/tmp/agentflow-e2e-profile.txt")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.mode == "run":
        result = run(args.messages, args.concurrency)
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"pipeline {result['msgs_per_s']:.0f} msg/s (2 agents), "
                f"publish {result['publish_per_s']:.0f} msg/s"
            )
    elif args.mode == "compare":
        compare(args.baseline, args.repeats, args.messages, args.concurrency)
    else:
        profile(args.out, args.messages, args.concurrency)


if __name__ == "__main__":
    main()
