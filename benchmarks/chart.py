"""The results chart: one panel per figure, contenders on the x axis, one bar per broker."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from benchmarks.report import Stat, Summary, floor_p99

COLORS = {"nats": "#3b7dd8", "kafka": "#e07b39"}
PANELS: tuple[tuple[str, str, bool], ...] = (
    ("throughput", "steady-state throughput (msg/s, higher is better)", False),
    ("cpu", "client CPU-seconds per 100k messages (lower is better)", False),
    ("p99-half", "p99 end-to-end latency at 50% of own max (ms, log)", True),
    ("p99-fixed", "p99 end-to-end latency at the fixed rate (ms, log)", True),
)


def _stat(x: Summary, key: str) -> Stat:
    if key == "throughput":
        return x.throughput
    if key == "cpu":
        return x.cpu
    return x.lat["half-rate" if key == "p99-half" else "fixed-rate"]["p99"]


def draw(datasets: list[dict[str, Any]], summaries: list[list[Summary]], path: Path) -> None:
    names: list[str] = []
    for sums in summaries:
        for x in sums:
            if x.contender not in names:
                names.append(x.contender)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), constrained_layout=True)
    width = 0.8 / max(len(datasets), 1)
    for ax, (key, title, log) in zip(axes.flat, PANELS, strict=True):
        for i, (data, sums) in enumerate(zip(datasets, summaries, strict=True)):
            broker = data["broker"]
            by = {x.contender: x for x in sums}
            for j, name in enumerate(names):
                found = by.get(name)
                if found is None:
                    continue
                x = found
                st = _stat(x, key)
                if st.count == 0 or math.isnan(st.median):
                    continue
                pos = j + (i - (len(datasets) - 1) / 2) * width
                err = [[st.median - st.low], [st.high - st.median]]
                ax.bar(
                    pos,
                    st.median,
                    width,
                    color=COLORS.get(broker, "grey"),
                    hatch=None if x.ranked else "//",
                    edgecolor="black" if not x.ranked else None,
                    yerr=err if st.count > 1 else None,
                    capsize=3,
                    label=broker if j == 0 or name == names[0] else None,
                )
                label = f"{st.median:,.0f}" if st.median >= 10 else f"{st.median:.2g}"
                if not x.ranked:
                    label += f"\n{x.status}"
                ax.annotate(
                    label,
                    (pos, st.high if st.count > 1 else st.median),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=8,
                )
        if key == "p99-fixed":
            for data in datasets:
                floor = floor_p99(data)
                if floor == floor:  # not NaN
                    ax.axhline(
                        floor,
                        color=COLORS.get(data["broker"], "grey"),
                        ls="--",
                        lw=1,
                        label=f"{data['broker']} floor, no contender: {floor:.1f} ms",
                    )
            ax.legend(loc="upper left", fontsize=7, frameon=False)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(names)), names, fontsize=9)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    handles = [Patch(color=COLORS.get(d["broker"], "grey")) for d in datasets]
    fig.legend(handles, [d["broker"] for d in datasets], loc="outside lower center", ncols=2)
    machine = datasets[0]["machine"] if datasets else {}
    fig.suptitle(
        "agentflow vs FastStream / faust / raw clients - median of repeats, bars = min-max "
        f"({machine.get('cores', '?')} cores, {machine.get('cpu', '?')}); hatched = lost or "
        "duplicated messages, not ranked",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
