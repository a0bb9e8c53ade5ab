"""Turn ``results/<broker>.json`` files into ``RESULTS.md`` and ``results.png``.

``python -m benchmarks.report [DIR]`` re-renders from the JSON without running anything.
Hand-written analysis between the ``notes`` markers of an existing RESULTS.md is kept.
"""

from __future__ import annotations

import argparse
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
    broker_cpu: Stat
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
                broker_cpu=Stat.of([_num(r.get("broker_cpu_per_100k")) for r in good]),
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


def floor_p99(data: dict[str, Any], phase: str = "fixed-rate") -> float:
    """Median p99 of the no-contender path (drawn as a line on the chart)."""
    floor = _floor(data)
    return floor[phase]["p99"].median if floor else NAN


def paired_ratio(data: dict[str, Any], a: str, b: str, key: str) -> Stat:
    """``a / b`` of ``key`` within each repeat (the two ran minutes apart, under the same
    machine load), then median and range over repeats; only repeats where both verified."""
    by_repeat: dict[int, dict[str, dict[str, Any]]] = {}
    for r in data["runs"]:
        by_repeat.setdefault(r["repeat"], {})[r["contender"]] = r
    ratios = []
    for runs in by_repeat.values():
        x, y = runs.get(a), runs.get(b)
        if x is None or y is None or x["status"] != "ok" or y["status"] != "ok":
            continue
        num, den = _num(x[key]), _num(y[key])
        if den and not (math.isnan(num) or math.isnan(den)):
            ratios.append(num / den)
    return Stat.of(ratios)


def _fmt_ratio(st: Stat) -> str:
    if st.count == 0:
        return "n/a"
    text = f"{st.median:.2f}x"
    return text + (f" ({st.low:.2f}-{st.high:.2f})" if st.count > 1 else "")


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
    idle = Stat.of([_num(r.get("idle_before")) for r in data["runs"]])
    if idle.count:
        lines[-1] += (
            f" The machine was {100 * idle.median:.0f}% idle (median; "
            f"{100 * idle.low:.0f}-{100 * idle.high:.0f}%) just before each run: other work on "
            "a shared machine is the main source of spread; CPU-seconds per message are "
            "the steadiest figure."
        )
    lines.append("")
    lines.append(
        "| contender | verified | throughput msg/s | CPU-s /100k | broker CPU-s /100k "
        "| peak RSS MiB | rate @50% | p50 / p95 / p99 ms @50% | p50 / p95 / p99 ms @fixed |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---|---|")
    for x in sums:
        verified = "exactly once" if x.ranked else f"**{x.status}**"
        half, fixed = x.lat["half-rate"], x.lat["fixed-rate"]
        lines.append(
            f"| {x.contender} | {verified} | {x.throughput.fmt()} | {x.cpu.fmt(2)} "
            f"| {x.broker_cpu.fmt(2)} | {x.rss.fmt()} | {x.rates['half-rate'].fmt()} "
            f"| {' / '.join(half[q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} "
            f"| {' / '.join(fixed[q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} |"
        )
    floor = _floor(data)
    if floor:
        lines.append(
            f"| _floor: input seen by the harness, no contender hop_ | | | | | | "
            f"| {' / '.join(floor['half-rate'][q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} "
            f"| {' / '.join(floor['fixed-rate'][q].fmt(1, False) for q in ('p50', 'p95', 'p99'))} |"
        )
    problems = [x for x in sums if not x.ranked]
    if problems:
        lines.append("")
        for x in problems:
            lines.append(f"- **{x.contender}: {x.status}**, not ranked - {x.detail}")
    lines += [
        "",
        "Ratios, paired within each repeat (contenders of one repeat ran back to back), "
        "median (min-max):",
        "",
    ]
    lines.append("| ratio | throughput | CPU-s per 100k |")
    lines.append("|---|---:|---:|")
    pairs: list[tuple[str, str]] = [
        ("agentflow", o) for o in ("raw", "faststream", "faust") if o in by
    ]
    if "agentflow-idem" in by:
        pairs.append(("agentflow-idem", "agentflow"))
    for a, b in pairs:
        lines.append(
            f"| {a} / {b} | {_fmt_ratio(paired_ratio(data, a, b, 'throughput'))} "
            f"| {_fmt_ratio(paired_ratio(data, a, b, 'cpu_per_100k'))} |"
        )
    verdicts = _verdicts(data, by)
    lines.append("")
    return lines, verdicts


def _verdicts(data: dict[str, Any], by: dict[str, Summary]) -> list[str]:
    broker, s = data["broker"], data["settings"]
    af = by.get("agentflow")
    out: list[str] = []

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    vs_raw = paired_ratio(data, "agentflow", "raw", "throughput")
    ok = None if vs_raw.count == 0 else vs_raw.median >= 1.0
    out.append(
        f"| {broker} | agentflow >= 1.0x raw throughput | {_fmt_ratio(vs_raw)} | {mark(ok)} |"
    )
    idem = paired_ratio(data, "agentflow-idem", "agentflow", "throughput")
    ok = None if idem.count == 0 else 1 - idem.median < IDEM_COST_TARGET
    cost_text = "n/a"
    if idem.count:
        cost_text = f"{round(100 * (1 - idem.median))}%"
        if idem.count > 1:
            cost_text += f" ({round(100 * (1 - idem.high))}% to {round(100 * (1 - idem.low))}%)"
    idem_cpu = paired_ratio(data, "agentflow-idem", "agentflow", "cpu_per_100k")
    verdict = mark(ok)
    if idem_cpu.count:
        cost_text += f"; CPU per message {idem_cpu.median:.2f}x"
        if ok and idem_cpu.median > 1 / (1 - IDEM_COST_TARGET):
            # Same throughput but far more CPU: something else capped both variants.
            verdict = "met on throughput only (CPU says otherwise)"
    out.append(f"| {broker} | idempotency cost < 25% (throughput) | {cost_text} | {verdict} |")
    target = P99_TARGET_MS[broker]
    p99 = af.lat["fixed-rate"]["p99"].median if af is not None and af.ranked else NAN
    ok = None if math.isnan(p99) else p99 <= target
    p99_text = "n/a" if math.isnan(p99) else f"{p99:.2f} ms"
    floor = floor_p99(data)
    if not math.isnan(p99) and not math.isnan(floor):
        p99_text += f" (no-contender floor {floor:.2f} ms)"
    out.append(
        f"| {broker} | agentflow p99 ≤ {target:g} ms at {s['fixed_rate']:.0f} msg/s "
        f"| {p99_text} | {mark(ok)} |"
    )
    return out


def machine_section(datasets: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Machine and commands",
        "",
        "Brokers ran locally, started by `scripts/services.sh start nats kafka` (the URLs below "
        "show the ports used); an `--agentflow-src` snapshot is made as in "
        "`benchmarks/README.md` (`git archive HEAD agentflow` plus the built extension).",
        "",
    ]
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


def main(argv: list[str] | None = None) -> None:
    """Re-render RESULTS.md and the chart of DIR (default: benchmarks/) from its results/."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Re-render RESULTS.md and results.png from results/*.json, running nothing.",
    )
    parser.add_argument("dir", nargs="?", type=Path, default=HERE, help="default: %(default)s")
    for p in write_report(parser.parse_args(argv).dir):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
