"""Per-call cost of the native hot path (agentflow._native), in nanoseconds.

Run: python benchmarks/native_hotpath.py [--number N]
Not a timed test: prints a table so changes can be compared side by side.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable

from agentflow import _native as n

PAYLOAD = json.dumps(
    {
        "id": "t-123",
        "priority": "high",
        "customer": {"id": 42, "tier": "gold"},
        "text": "x" * 200,
        "tags": ["a", "b", "c"],
    }
).encode()
HEADERS = n.encode_headers(
    n.new_id(),
    "t-123",
    1,
    None,
    None,
    "triage",
    1_700_000_000_000,
    "application/json",
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
)
KAFKA_HEADERS = [(k, v.encode()) for k, v in HEADERS.items()]


def cases() -> dict[str, Callable[[], object]]:
    parent = n.new_id()
    program = n.CelProgram('payload.priority == "high" && payload.customer.tier == "gold"')
    router = n.Router(['payload.priority == "low"', 'headers["af-agent"] == "x"', None])
    plan = n.MessagePlan(['payload.priority == "low"', 'headers["af-agent"] == "x"', None], "id")
    dedup = n.DedupWindow(60.0, 100_000)
    counter = iter(range(10**12))
    return {
        "new_id": n.new_id,
        "derive_id": lambda: n.derive_id(parent, "triage", 3),
        "encode_headers": lambda: n.encode_headers(
            parent, "k", 1, parent, None, "triage", 1_700_000_000_000, "application/json"
        ),
        "decode_headers(dict)": lambda: n.decode_headers(HEADERS),
        "decode_headers(kafka list)": lambda: n.decode_headers(KAFKA_HEADERS),
        "decode_headers_batch(100)/msg": lambda: n.decode_headers_batch([KAFKA_HEADERS] * 100),
        "CelProgram.evaluate": lambda: program.evaluate(PAYLOAD, HEADERS, "k", "tickets.new"),
        "Router.select(3 routes)": lambda: router.select(PAYLOAD, HEADERS, "k", "tickets.new"),
        "MessagePlan.decode": lambda: plan.decode(HEADERS),
        "MessagePlan.key_of(id)": lambda: plan.key_of(PAYLOAD),
        "MessagePlan.process": lambda: plan.process(HEADERS, PAYLOAD, None, "tickets.new"),
        "output_headers": lambda: n.output_headers(
            parent, "triage", 0, "k", parent, 1_700_000_000_000, "application/json", HEADERS
        ),
        "extract_key(customer.id)": lambda: n.extract_key(PAYLOAD, "customer.id"),
        "murmur2_partition": lambda: n.murmur2_partition(b"customer-42", 12),
        "subject_matches": lambda: n.subject_matches("tickets.*.>", "tickets.new.eu.1"),
        "DedupWindow.seen(new id)": lambda: dedup.seen(str(next(counter)), 1.0),
        "DedupWindow.seen(new id, clock)": lambda: dedup.seen(str(next(counter))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{'operation':34} {'ns/call':>10}")
    for name, fn in cases().items():
        number = args.number // 100 if "batch" in name else args.number
        best = min(timeit.repeat(fn, number=number, repeat=3)) / number
        if "batch" in name:
            best /= 100
        print(f"{name:34} {best * 1e9:10.0f}")


if __name__ == "__main__":
    main()
