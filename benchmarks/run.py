"""Benchmark harness entry point.

    python -m benchmarks.run --broker nats [--n 20000] [--repeat 3]
        [--contenders agentflow,agentflow-idem,faststream,raw,faust]

Every contender runs in its own process, one at a time, against the same broker: it consumes a
pre-produced backlog of N sequence-numbered 256-byte JSON messages, validates each into a
pydantic model, runs a no-op handler, publishes a result and acks after the publish was
accepted. The verifier reads the output topic back and checks each sequence number arrived
exactly once. Then the producer paces messages at 50% of the contender's own rate and at a fixed
rate (500 msg/s) to measure end-to-end latency. Results go to ``<out>/results/<broker>.json``,
``<out>/RESULTS.md`` and ``<out>/results.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.contenders import CONTENDERS, DEFAULT_ORDER
from benchmarks.machine import describe_machine
from benchmarks.runner import RunResult, Settings, run_contender
from benchmarks.side import Side

HERE = Path(__file__).resolve().parent
NAN = float("nan")
DEFAULT_URLS = {
    "nats": ("AGENTFLOW_TEST_NATS_URL", "nats://127.0.0.1:4222"),
    "kafka": ("AGENTFLOW_TEST_KAFKA_URL", "kafka://127.0.0.1:9092"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--broker", choices=sorted(DEFAULT_URLS), required=True)
    p.add_argument("--url", help="broker URL (default: $AGENTFLOW_TEST_<BROKER>_URL or local)")
    p.add_argument("--n", type=int, default=20_000, help="backlog messages per run")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--contenders", default=",".join(DEFAULT_ORDER))
    p.add_argument("--concurrency", type=int, default=100, help="in-flight handlers per contender")
    p.add_argument("--partitions", type=int, default=4, help="Kafka: partitions per topic")
    p.add_argument("--fixed-rate", type=float, default=500.0, help="msg/s of the fixed-rate phase")
    p.add_argument("--latency-seconds", type=float, default=4.0, help="length of each paced phase")
    p.add_argument("--min-latency-messages", type=int, default=200, help="paced-phase floor")
    p.add_argument(
        "--out", type=Path, default=HERE, help="where RESULTS.md, results/ and the chart go"
    )
    p.add_argument(
        "--quiet",
        type=float,
        default=0.8,
        help="before each run wait (up to 90 s) until the machine is this idle (0 = don't)",
    )
    p.add_argument(
        "--agentflow-src",
        type=Path,
        help="import agentflow from this directory (a snapshot: see README) instead of the tree",
    )
    p.add_argument("--logs", type=Path, help="contender logs (default: a temporary directory)")
    p.add_argument("--profile", type=Path, help="record py-spy profiles of the backlog phase here")
    p.add_argument("--no-report", action="store_true", help="write the JSON only")
    args = p.parse_args(argv)
    if args.n < 10 or args.repeat < 1:
        p.error("--n must be >= 10 and --repeat >= 1")
    return args


def make_side(broker: str, url: str, partitions: int) -> Side:
    if broker == "nats":
        from benchmarks.nats_side import NatsSide

        return NatsSide(url)
    from benchmarks.kafka_side import KafkaSide

    return KafkaSide(url, partitions)


def pick_contenders(names: str, broker: str) -> list[str]:
    chosen: list[str] = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        c = CONTENDERS.get(name)
        if c is None:
            raise SystemExit(f"unknown contender {name!r}; known: {', '.join(CONTENDERS)}")
        if broker not in c.brokers:
            print(f"skipping {name}: not available on {broker}", file=sys.stderr)
            continue
        missing = c.missing()
        if missing:
            print(
                f"skipping {name}: {', '.join(missing)} not installed (pip install -e '.[bench]')",
                file=sys.stderr,
            )
            continue
        chosen.append(name)
    return chosen


async def bench(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    env_var, fallback = DEFAULT_URLS[args.broker]
    url = args.url or os.environ.get(env_var) or fallback
    contenders = pick_contenders(args.contenders, args.broker)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="afbench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        broker=args.broker,
        url=url,
        n=args.n,
        concurrency=args.concurrency,
        partitions=args.partitions,
        fixed_rate=args.fixed_rate,
        latency_seconds=args.latency_seconds,
        min_latency_messages=args.min_latency_messages,
        quiet_threshold=args.quiet,
        agentflow_src=args.agentflow_src.resolve() if args.agentflow_src else None,
        log_dir=logs,
        profile_dir=args.profile,
    )
    side = make_side(args.broker, url, args.partitions)
    await side.open()
    runs: list[RunResult] = []
    started = time.time()
    try:
        machine = await describe_machine(side, settings.agentflow_src)
        # Interleave: repeat r runs every contender once, so drift hits all of them alike.
        for r in range(args.repeat):
            for name in contenders:
                print(
                    f"[{args.broker}] {name} run {r + 1}/{args.repeat} ...",
                    file=sys.stderr,
                    flush=True,
                )
                res = await run_contender(side, name, r, settings)
                runs.append(res)
                print(f"    {_one_line(res)}", file=sys.stderr, flush=True)
    finally:
        await side.close()
    print(f"contender logs: {logs}", file=sys.stderr)
    return {
        "broker": args.broker,
        "url": url,
        "command": "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in argv),
        "started": started,
        "duration_s": time.time() - started,
        "settings": {
            "n": args.n,
            "repeat": args.repeat,
            "concurrency": args.concurrency,
            "partitions": args.partitions if args.broker == "kafka" else None,
            "fixed_rate": args.fixed_rate,
            "latency_seconds": args.latency_seconds,
            "quiet": args.quiet,
            "contenders": contenders,
        },
        "machine": machine,
        "runs": [r.to_dict() for r in runs],
    }


def _one_line(r: RunResult) -> str:
    if r.status == "FAILED":
        return f"FAILED {r.detail}"
    half = r.latency.get("half-rate", {})
    fixed = r.latency.get("fixed-rate", {})
    text = (
        f"{r.status} {r.throughput:,.0f} msg/s, {r.cpu_per_100k:.2f} CPU-s/100k "
        f"(broker {r.broker_cpu_per_100k:.2f}), "
        f"{r.peak_rss_mib:.0f} MiB, p99 {half.get('p99_ms', NAN):.2f} ms"
        f" @{half.get('rate', 0):.0f}/s"
        f", {fixed.get('p99_ms', NAN):.2f} ms @{fixed.get('rate', 0):.0f}/s"
    )
    if r.idle_before == r.idle_before:  # not NaN
        text += f"; machine {100 * r.idle_before:.0f}% idle before"
    return text + (f" ({r.detail})" if r.detail else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    data = asyncio.run(bench(args, argv))
    out: Path = args.out
    (out / "results").mkdir(parents=True, exist_ok=True)
    json_path = out / "results" / f"{args.broker}.json"
    json_path.write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    print(f"wrote {json_path}", file=sys.stderr)
    if not args.no_report:
        from benchmarks.report import write_report

        for path in write_report(out):
            print(f"wrote {path}", file=sys.stderr)
    failed = [r for r in data["runs"] if r["status"] == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
