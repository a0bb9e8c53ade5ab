from __future__ import annotations

from agentflow.workflow import commands
from tests.workflow.conftest import Files

WF = """
apiVersion: agentflow.dev/v1
kind: Workflow
metadata: {name: g}
spec:
  inputs: [in]
  outputs: [out.a, out.b, 'out.*']
  agents:
    first: {uses: '{m}:passthrough', consumes: in, produces: [out.a, out.b]}
    watch: {uses: '{m}:sink', consumes: 'out.*', dlq: watch.dead}
"""

ROUTED = """
apiVersion: agentflow.dev/v1
kind: Workflow
metadata: {name: r}
spec:
  inputs: [in]
  outputs: [hi, lo]
  agents:
    pick:
      uses: '{m}:passthrough'
      consumes: in
      routes:
        - when: payload.priority == "high" && payload.score > 2.0
          to: hi
        - to: lo
"""


def test_mermaid(files: Files) -> None:
    text = commands.graph(files.write(WF), "mermaid", env={})
    assert text.startswith("flowchart LR\n")
    assert '  topic_in(["in"])' in text
    assert "  topic_in --> agent_first" in text
    assert "  agent_first --> topic_out_a" in text and "  agent_first --> topic_out_b" in text
    assert "  topic_out_a -.- topic_out__" in text  # wildcard subscription fed by out.a
    assert '  agent_first -.->|"dead letters"| topic_in_dlq' in text
    assert '  topic_watch_dead[("watch.dead")]' in text


def test_dot(files: Files) -> None:
    text = commands.graph(files.write(WF), "dot", env={})
    assert text.startswith('digraph "g" {')
    assert '"t:in" -> "a:first";' in text
    assert '"a:watch" -> "t:watch.dead" [label="dead letters", style=dashed' in text
    assert '"t:watch.dead" [label="watch.dead", shape=cylinder' in text


def test_route_conditions_are_edge_labels(files: Files) -> None:
    path = files.write(ROUTED)
    mer = commands.graph(path, "mermaid", env={})
    label = "payload.priority == #34;high#34; #38;#38; payload.score #62; 2.0"
    assert f'  agent_pick -->|"{label}"| topic_hi' in mer
    assert '  agent_pick -->|"default"| topic_lo' in mer
    dot = commands.graph(path, "dot", env={})
    assert (
        '"a:pick" -> "t:hi" [label="payload.priority == \\"high\\" && payload.score > 2.0"];' in dot
    )


def test_invalid_workflow_raises(files: Files) -> None:
    path = files.write(WF.replace("passthrough", "nope"))
    try:
        commands.graph(path, "mermaid", env={})
    except commands.WorkflowInvalid as exc:
        assert "spec.agents.first.uses" in str(exc)
    else:
        raise AssertionError("expected WorkflowInvalid")
