"""Per-message cost of decode headers + route (5 routes) + idempotency key, native vs Python.

Run: python benchmarks/native_micro.py [--messages N] [--rounds R] [--json]

Each message is ~256 bytes of JSON with 6 headers; values vary per message (unique ids and
amounts, a realistic spread of priorities, currencies, tags and regions), so the routes are
not always decided by the first condition. Both sides compute the same thing, and the
benchmark checks that they agree on every message before timing:

- Python: the best pure-Python equivalent — ``orjson.loads``, dict look-ups of the envelope
  headers (exact lower-case names only, which is easier than the native case-insensitive
  decode), strict integer checks, the five conditions as precompiled lambdas, ``dict.get`` for
  the key.
- native: ``MessagePlan.process`` (one call per message) and ``process_batch`` (one call per
  64 messages), with the fast CEL evaluator (default; ``rust_ext/src/fast.rs``) and with it
  off (``fast_path=False``: every condition interpreted by the ``cel`` crate, behind the
  decision cache, or with the cache off too).
- floor: ``MessagePlan().process`` with no routes and no key path (header decode, the call and
  the result tuple only): what any per-message native call costs here, before any routing.

Numbers are ns per message (best of R rounds over all messages), and the ratio Python/native
from the same run. Not a timed test: run it by hand and compare.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from agentflow import _native as n

TOPIC = "orders.new"
ROUTES: list[str | None] = [
    'payload.priority == "high"',
    'payload.amount > 1000 && payload.currency == "EUR"',
    '"vip" in payload.tags',
    'headers["x-region"] == "eu"',
    None,
]
KEY_PATH = "id"
BATCH = 64

Message = tuple[dict[str, str], bytes, str | None, str]
Result = tuple[str | None, str | None, int | None, str | None, int, str | bytes | None]


def make_messages(count: int, seed: int = 7) -> list[Message]:
    """``count`` distinct messages of about 256 bytes with 6 headers each."""
    rng = random.Random(seed)
    out: list[Message] = []
    for i in range(count):
        customer = f"c-{rng.randrange(5000):04d}"
        body: dict[str, Any] = {
            "id": f"ord-{i:08d}",
            "priority": rng.choices(["low", "normal", "high"], [3, 6, 1])[0],
            "amount": round(rng.uniform(1, 3000), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "tags": rng.sample(["new", "vip", "returning", "promo"], rng.randrange(0, 3)),
            "customer": {"id": customer, "tier": rng.choice(["gold", "silver"]), "cc": "DE"},
        }
        pad = 256 - len(orjson.dumps({**body, "note": ""}))
        body["note"] = "n" * max(0, pad)
        mid = n.new_id()
        headers = {
            "af-id": mid,
            "af-key": customer,
            "af-attempt": "1",
            "af-correlation-id": mid,
            "af-ts": str(1_700_000_000_000 + i),
            "x-region": rng.choice(["eu", "us", "apac"]),
        }
        out.append((headers, orjson.dumps(body), None, TOPIC))
    return out


# --- the pure-Python equivalent -----------------------------------------------------------------
Cond = Callable[[dict[str, Any], dict[str, str], str | None, str], bool]
PY_CONDITIONS: list[Cond | None] = [
    lambda p, h, k, t: p["priority"] == "high",
    lambda p, h, k, t: p["amount"] > 1000 and p["currency"] == "EUR",
    lambda p, h, k, t: "vip" in p["tags"],
    lambda p, h, k, t: h["x-region"] == "eu",
    None,
]


def _uint(value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"expected a positive integer (or 0), got {value!r}")
    return int(value)


def py_process(
    headers: dict[str, str],
    payload: bytes,
    key: str | None,
    topic: str,
    loads: Callable[[bytes], Any] = orjson.loads,
    conditions: Sequence[Cond | None] = PY_CONDITIONS,
) -> Result:
    """Decode + route + key in Python, as fast as it reasonably gets."""
    get = headers.get
    msg_key = get("af-key")
    attempt = _uint(get("af-attempt"))
    _uint(get("af-ts"))
    body = loads(payload)
    route_key = key if key is not None else msg_key
    route = -1
    for i, cond in enumerate(conditions):
        if cond is None or cond(body, headers, route_key, topic):
            route = i
            break
    found = body.get(KEY_PATH) if isinstance(body, dict) else None
    idem: str | bytes | None
    if found is None or isinstance(found, str):
        idem = found
    elif isinstance(found, int) and not isinstance(found, bool):
        idem = str(found)
    else:
        idem = orjson.dumps(found)
    return (get("af-id"), msg_key, attempt, get("af-correlation-id"), route, idem)


# --- timing -------------------------------------------------------------------------------------
def best_ns(fn: Callable[[], object], count: int, rounds: int) -> float:
    """Best wall time of ``fn`` over ``rounds`` runs, in ns per message."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - start)
    return best / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    messages = make_messages(args.messages)
    fast = n.MessagePlan(ROUTES, key_path=KEY_PATH)
    cached = n.MessagePlan(ROUTES, key_path=KEY_PATH, fast_path=False)
    uncached = n.MessagePlan(ROUTES, key_path=KEY_PATH, cache_size=0, fast_path=False)
    floor = n.MessagePlan()
    for msg in messages:
        want = py_process(*msg)
        for plan in (fast, cached, uncached):
            got = plan.process(*msg)
            if got != want:
                raise SystemExit(f"native and Python disagree on {msg}: {got} != {want}")
    routes = [py_process(*m)[4] for m in messages]
    spread = {i: routes.count(i) for i in sorted(set(routes))}
    chunks = [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]

    def python_loop() -> None:
        for m in messages:
            py_process(*m)

    def per_message(plan: n.MessagePlan) -> Callable[[], None]:
        def run() -> None:
            process = plan.process
            for h, p, k, t in messages:
                process(h, p, k, t)

        return run

    def batched(plan: n.MessagePlan) -> Callable[[], None]:
        def run() -> None:
            for chunk in chunks:
                plan.process_batch(chunk)

        return run

    count, rounds = len(messages), args.rounds
    results = {
        "python": best_ns(python_loop, count, rounds),
        "native": best_ns(per_message(fast), count, rounds),
        "native_batch": best_ns(batched(fast), count, rounds),
        "interpreted_cache": best_ns(per_message(cached), count, rounds),
        "interpreted_batch_cache": best_ns(batched(cached), count, rounds),
        "interpreted_nocache": best_ns(per_message(uncached), count, rounds),
        "floor_no_routes": best_ns(per_message(floor), count, rounds),
        "floor_batch_no_routes": best_ns(batched(floor), count, rounds),
    }
    if args.json:
        print(json.dumps({"ns_per_message": results, "route_spread": spread}))
        return
    print(f"{count} messages of ~256 B JSON, 6 headers, 5 routes; route spread {spread}")
    print(f"{'variant':24} {'ns/msg':>8} {'vs python':>10}")
    for name, ns in results.items():
        print(f"{name:24} {ns:8.0f} {results['python'] / ns:9.1f}x")


if __name__ == "__main__":
    main()
