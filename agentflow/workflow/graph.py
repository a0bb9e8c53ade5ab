"""Draw a workflow as Mermaid or Graphviz DOT: agents, topics, routes and dead-letter topics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agentflow.workflow.plan import AgentPlan
from agentflow.workflow.topology import outputs, subject_matches

FORMATS = ("mermaid", "dot")


@dataclass(frozen=True, slots=True)
class _Picture:
    topics: list[str]
    dlqs: list[str]
    # (from, to, label, style) with style one of "flow", "dlq", "match"
    edges: list[tuple[str, str, str | None, str]]


def _picture(plans: Sequence[AgentPlan]) -> _Picture:
    topics: list[str] = []
    dlqs: list[str] = []
    edges: list[tuple[str, str, str | None, str]] = []

    def topic(name: str, bucket: list[str]) -> None:
        if name not in topics and name not in dlqs:
            bucket.append(name)

    for p in plans:
        if p.consumes:
            topic(p.consumes, topics)
            edges.append((f"t:{p.consumes}", f"a:{p.name}", None, "flow"))
        for e in outputs(p):
            topic(e.topic, topics)
            label = (e.condition or "default") if e.routed else None
            edges.append((f"a:{p.name}", f"t:{e.topic}", label, "flow"))
    for p in plans:
        dlq = p.dead_letter_topic()
        if dlq:
            topic(dlq, dlqs)
            edges.append((f"a:{p.name}", f"t:{dlq}", "dead letters", "dlq"))
    # A wildcard subscription is drawn as fed by each concrete topic it matches.
    for pattern in [t for t in topics if "*" in t or ">" in t]:
        for t in topics:
            if t != pattern and subject_matches(pattern, t):
                edges.append((f"t:{t}", f"t:{pattern}", None, "match"))
    return _Picture(topics, dlqs, edges)


def _ident(ref: str) -> str:
    kind, _, name = ref.partition(":")
    return ("agent_" if kind == "a" else "topic_") + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _mermaid_text(text: str) -> str:
    # Mermaid labels are HTML-ish and `|` / quotes end them: use its entity codes.
    for char, code in (("&", "#38;"), ('"', "#34;"), ("|", "#124;"), ("<", "#60;"), (">", "#62;")):
        text = text.replace(char, code)
    return text


def mermaid(name: str, plans: Sequence[AgentPlan]) -> str:
    """A Mermaid flowchart of the workflow."""
    pic = _picture(plans)
    lines = ["flowchart LR", f"  %% workflow {name}"]
    for p in plans:
        label = f"{_mermaid_text(p.name)}<br/><small>{_mermaid_text(p.uses)}</small>"
        lines.append(f'  {_ident("a:" + p.name)}["{label}"]')
    for t in pic.topics:
        lines.append(f'  {_ident("t:" + t)}(["{_mermaid_text(t)}"])')
    for t in pic.dlqs:
        lines.append(f'  {_ident("t:" + t)}[("{_mermaid_text(t)}")]')
    for src, dst, edge_label, style in pic.edges:
        arrow = {"flow": "-->", "dlq": "-.->", "match": "-.-"}[style]
        shown = f'|"{_mermaid_text(edge_label)}"|' if edge_label else ""
        lines.append(f"  {_ident(src)} {arrow}{shown} {_ident(dst)}")
    lines += [
        "  classDef agent fill:#e8f0fe,stroke:#3367d6",
        "  classDef topic fill:#f1f3f4,stroke:#5f6368",
        "  classDef dlq fill:#fce8e6,stroke:#c5221f",
    ]
    for cls, refs in (
        ("agent", [f"a:{p.name}" for p in plans]),
        ("topic", [f"t:{t}" for t in pic.topics]),
        ("dlq", [f"t:{t}" for t in pic.dlqs]),
    ):
        if refs:
            lines.append(f"  class {','.join(_ident(r) for r in refs)} {cls}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(name: str, plans: Sequence[AgentPlan]) -> str:
    """A Graphviz DOT digraph of the workflow."""
    pic = _picture(plans)
    lines = [
        f"digraph {_dot_text(name)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=10];',
    ]
    for p in plans:
        text = _dot_text(f"{p.name}\n{p.uses}")
        lines.append(
            f"  {_dot_text('a:' + p.name)} [label={text}, shape=box, "
            'style="rounded,filled", fillcolor="#e8f0fe"];'
        )
    for t in pic.topics:
        lines.append(f"  {_dot_text('t:' + t)} [label={_dot_text(t)}, shape=ellipse];")
    for t in pic.dlqs:
        lines.append(
            f"  {_dot_text('t:' + t)} [label={_dot_text(t)}, shape=cylinder, "
            'style=filled, fillcolor="#fce8e6"];'
        )
    for src, dst, label, style in pic.edges:
        attrs = []
        if label:
            attrs.append(f"label={_dot_text(label)}")
        if style == "dlq":
            attrs.append('style=dashed, color="#c5221f"')
        elif style == "match":
            attrs.append("style=dotted, arrowhead=none")
        tail = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_dot_text(src)} -> {_dot_text(dst)}{tail};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(name: str, plans: Sequence[AgentPlan], fmt: str) -> str:
    """Render in ``fmt`` (mermaid or dot); ValueError for another format."""
    if fmt == "mermaid":
        return mermaid(name, plans)
    if fmt == "dot":
        return dot(name, plans)
    raise ValueError(f"unknown graph format {fmt!r} (expected one of: {', '.join(FORMATS)})")
