"""Turn ``results/<broker>.json`` files into ``RESULTS.md`` and ``results.png``.

``python -m benchmarks.report [DIR]`` re-renders from the JSON without running anything.
Hand-written analysis between the ``notes`` markers of an existing RESULTS.md is kept.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
NOTES_START = "<!-- notes:start -->"
NOTES_END = "<!-- notes:end -->"
BROKERS = ("nats", "kafka")
P99_TARGET_MS = {"nats": 1.2, "kafka": 20.0}
IDEM_COST_TARGET = 0.25
NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Stat:
    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        vals = [v for v in values if v is not None and not math.isnan(v)]
        if not vals:
            return cls(NAN, NAN, NAN, 0)
        return cls(statistics.median(vals), min(vals), max(vals), len(vals))

    def fmt(self, digits: int = 0, thousands: bool = True) -> str:
        if self.count == 0:
            return "n/a"
        spec = f"{',' if thousands else ''}.{digits}f"
        text = format(self.median, spec)
        if self.count > 1:
            text += f" ({format(self.low, spec)}-{format(self.high, spec)})"
        return text


@dataclass
class Summary:
    contender: str
    status: str  # ok, or LOSS/DUP/FAILED with details
    detail: str
    runs: int
    throughput: Stat
    cpu: Stat
    rss: Stat
    lat: dict[str, dict[str, Stat]]
    rates: dict[str, Stat]

    @property
    def ranked(self) -> bool:
        return self.status == "ok"


def _num(value: Any) -> float:
    return NAN if value is None else float(value)


def summarize(data: dict[str, Any]) -> list[Summary]:
    order = list(data["settings"]["contenders"])
    out: list[Summary] = []
    for name in order:
        runs = [r for r in data["runs"] if r["contender"] == name]
        bad = [r for r in runs if r["status"] != "ok"]
        status = bad[0]["status"] if bad else "ok"
        detail = "; ".join(f"run {r['repeat'] + 1}: {r['detail']}" for r in bad)
        good = [r for r in runs if r["status"] == "ok"] or runs
        lat: dict[str, dict[str, Stat]] = {}
        rates: dict[str, Stat] = {}
        for phase in ("half-rate", "fixed-rate"):
            entries = [r["latency"][phase] for r in good if phase in r["latency"]]
            lat[phase] = {
                q: Stat.of([_num(e.get(f"{q}_ms")) for e in entries]) for q in ("p50", "p95", "p99")
            }
            rates[phase] = Stat.of([_num(e.get("rate")) for e in entries])
        out.append(
            Summary(
                contender=name,
                status=status,
                detail=detail,
                runs=len(runs),
                throughput=Stat.of([_num(r["throughput"]) for r in good]),
                cpu=Stat.of([_num(r["cpu_per_100k"]) for r in good]),
                rss=Stat.of([_num(r["peak_rss_mib"]) for r in good]),
                lat=lat,
                rates=rates,
            )
        )
    return out


def _floor(data: dict[str, Any]) -> dict[str, dict[str, Stat]]:
    """Latency of the producer -> broker -> listener path alone, over every run."""
    runs = [r for r in data["runs"] if r.get("floor")]
    if not runs:
        return {}
    return {
        phase: {
            q: Stat.of([_num(r["floor"].get(phase, {}).get(f"{q}_ms")) for r in runs])
            for q in ("p50", "p95", "p99")
        }
        for phase in ("half-rate", "fixed-rate")
    }


def _ratio(a: Summary | None, b: Summary | None, attr: str) -> float:
    if a is None or b is None or not (a.ranked and b.ranked):
        return NAN
    x, y = getattr(a, attr).median, getattr(b, attr).median
    return x / y if y else NAN


def _fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def broker_section(data: dict[str, Any], chart_name: str) -> tuple[list[str], list[str]]:
    """Markdown lines for one broker, and target verdict lines."""
    broker = data["broker"]
    s = data["settings"]
    sums = summarize(data)
    by = {x.contender: x for x in sums}
    lines = [f"## {broker.upper()}", ""]
    lines.append(
        f"N = {s['n']:,} per run, {s['repeat']} repeat(s), concurrency {s['concurrency']}; "
        f"median (min-max) over repeats. Latency is end-to-end (producer send → result seen "
        f"by the verifier), at 50% of each contender's own throughput and at "
        f"{s['fixed_rate']:.0f} msg/s. See the chart `{chart_name}`."
    )
    lines.append("")
    lines.append(
        "| contender | verified | throughput msg/s | CPU-s /100k | peak RSS MiB "
        "| rate @50% | p50 / p95 / p99 ms @50% | p50 / p95 / p99 ms @fixed |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---|---|")
    for x in sums:
        verified = "exactly once" if x.ranked else f"**{x.status}**"
        half, fixed = x.lat["half-rate"], x.lat["fixed-rate"]
        lines.append(
            f"| {x.contender} | {verified} | {x.throughput.fmt()} | {x.cpu.fmt(2)} "
            f"| {x.rss.fmt()} | {x.rates['half-rate'].fmt()} "
            f"| {' / '.join(half[q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} "
            f"| {' / '.join(fixed[q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} |"
        )
    floor = _floor(data)
    if floor:
        lines.append(
            f"| _floor: input seen by the harness, no contender hop_ | | | | | "
            f"| {' / '.join(floor['half-rate'][q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} "
            f"| {' / '.join(floor['fixed-rate'][q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} |"
        )
    problems = [x for x in sums if not x.ranked]
    if problems:
        lines.append("")
        for x in problems:
            lines.append(f"- **{x.contender}: {x.status}**, not ranked - {x.detail}")
    af, idem = by.get("agentflow"), by.get("agentflow-idem")
    lines += ["", "Ratios (medians):", ""]
    lines.append("| ratio | throughput | CPU-s per 100k |")
    lines.append("|---|---:|---:|")
    for other in ("raw", "faststream", "faust"):
        if other in by:
            lines.append(
                f"| agentflow / {other} | {_fmt_ratio(_ratio(af, by[other], 'throughput'))} "
                f"| {_fmt_ratio(_ratio(af, by[other], 'cpu'))} |"
            )
    if idem is not None:
        lines.append(
            f"| agentflow-idem / agentflow | {_fmt_ratio(_ratio(idem, af, 'throughput'))} "
            f"| {_fmt_ratio(_ratio(idem, af, 'cpu'))} |"
        )
    verdicts = _verdicts(broker, s, by)
    lines.append("")
    return lines, verdicts


def _verdicts(broker: str, s: dict[str, Any], by: dict[str, Summary]) -> list[str]:
    af = by.get("agentflow")
    out: list[str] = []

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    vs_raw = _ratio(af, by.get("raw"), "throughput")
    ok = None if math.isnan(vs_raw) else vs_raw >= 1.0
    out.append(
        f"| {broker} | agentflow ≥ 1.0x raw throughput | {_fmt_ratio(vs_raw)} | {mark(ok)} |"
    )
    idem_ratio = _ratio(by.get("agentflow-idem"), af, "throughput")
    cost = 1 - idem_ratio if not math.isnan(idem_ratio) else NAN
    ok = None if math.isnan(cost) else cost < IDEM_COST_TARGET
    cost_text = "n/a" if math.isnan(cost) else f"{100 * cost:.0f}%"
    out.append(f"| {broker} | idempotency cost < 25% | {cost_text} | {mark(ok)} |")
    target = P99_TARGET_MS[broker]
    p99 = af.lat["fixed-rate"]["p99"].median if af is not None and af.ranked else NAN
    ok = None if math.isnan(p99) else p99 <= target
    p99_text = "n/a" if math.isnan(p99) else f"{p99:.2f} ms"
    out.append(
        f"| {broker} | agentflow p99 ≤ {target:g} ms at {s['fixed_rate']:.0f} msg/s "
        f"| {p99_text} | {mark(ok)} |"
    )
    return out


def machine_section(datasets: list[dict[str, Any]]) -> list[str]:
    lines = ["## Machine and commands", ""]
    for data in datasets:
        m = data["machine"]
        pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        lines.append(
            f"- **{data['broker']}**: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
            f"{m['os']}, Python {m['python']}; {m['broker']}; agentflow {m['agentflow_commit']}; "
            f"{pk}. Load average at start {m['loadavg_at_start']}; "
            f"took {data['duration_s'] / 60:.1f} min."
        )
        lines.append(f"  `{data['command']}`")
    lines.append("")
    return lines


def render(datasets: list[dict[str, Any]], notes: str, chart_name: str) -> str:
    lines = [
        "# Benchmarks: agentflow vs FastStream, faust-streaming and tuned raw clients",
        "",
        "Generated by `python -m benchmarks.run` (see `benchmarks/README.md`); the numbers "
        "below come from `benchmarks/results/*.json`. Every contender ran in its own process, "
        "one at a time, on the same broker and machine, with at-least-once semantics (ack or "
        "commit only after the result was accepted by the broker).",
        "",
        f"![benchmark chart]({chart_name})",
        "",
        "## Targets (issue 7)",
        "",
        "| broker | target | measured | verdict |",
        "|---|---|---:|---|",
    ]
    body: list[str] = []
    for data in datasets:
        section, verdicts = broker_section(data, chart_name)
        lines += verdicts
        body += section
    lines.append("")
    lines += body
    lines += machine_section(datasets)
    lines += [NOTES_START, notes.strip("\n"), NOTES_END, ""]
    return "\n".join(lines)


def load(out_dir: Path) -> list[dict[str, Any]]:
    datasets = []
    for broker in BROKERS:
        path = out_dir / "results" / f"{broker}.json"
        if path.exists():
            datasets.append(orjson.loads(path.read_bytes()))
    return datasets


def existing_notes(path: Path) -> str:
    if not path.exists():
        return "\n## Analysis\n\n(none yet)\n"
    text = path.read_text()
    start, end = text.find(NOTES_START), text.find(NOTES_END)
    if start < 0 or end < start:
        return "\n## Analysis\n\n(none yet)\n"
    return text[start + len(NOTES_START) : end]


def write_report(out_dir: Path) -> list[Path]:
    datasets = load(out_dir)
    if not datasets:
        raise SystemExit(f"no results in {out_dir / 'results'}")
    md = out_dir / "RESULTS.md"
    png = out_dir / "results.png"
    written = [md]
    try:
        from benchmarks.chart import draw

        draw(datasets, [summarize(d) for d in datasets], png)
        written.append(png)
    except ImportError:
        print("matplotlib not installed: no chart (pip install -e '.[bench]')", file=sys.stderr)
    md.write_text(render(datasets, existing_notes(md), png.name))
    return written


if __name__ == "__main__":
    for p in write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(f"wrote {p}")
