from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

from agentflow.workflow import commands
from tests.workflow.conftest import Files

FAN_OUT = """
apiVersion: agentflow.dev/v1
kind: Workflow
metadata: {name: fan}
spec:
  broker: memory://fan-BROKER
  inputs: [in]
  defaults: {retry: {max_attempts: 2, backoff: 10ms}}
  agents:
    first: {uses: '{m}:passthrough', consumes: in, produces: [left, right]}
    left: {uses: '{m}:sink', consumes: left}
    right: {uses: '{m}:with_ctx', consumes: right, produces: done}
    last: {uses: '{m}:sink', consumes: done}
"""


def _fan_out(files: Files) -> Path:
    return files.write(FAN_OUT.replace("BROKER", uuid.uuid4().hex[:8]))


def test_validate_ok_and_invalid(files: Files) -> None:
    good = _fan_out(files)
    bad = files.write(
        FAN_OUT.replace("consumes: left", "consumes: left, timeout: soon"), "bad.yaml"
    )
    out, err = io.StringIO(), io.StringIO()
    assert commands.validate([good], out=out, err=err, env={}) == commands.EXIT_OK
    assert out.getvalue() == f"{good}: ok (4 agents)\n" and err.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    assert commands.validate([good, bad], out=out, err=err, env={}) == commands.EXIT_INVALID
    assert out.getvalue().splitlines() == [f"{good}: ok (4 agents)", f"{bad}: invalid (1 error(s))"]
    assert err.getvalue().startswith(f"{bad}:10:66: spec.agents.left.timeout: invalid duration")


def test_validate_prints_warnings_but_passes(files: Files) -> None:
    path = files.write(FAN_OUT.replace("  inputs: [in]\n", ""))
    out, err = io.StringIO(), io.StringIO()
    assert commands.validate([path], out=out, err=err, env={}) == commands.EXIT_OK
    assert "ok (4 agents, 1 warning(s))" in out.getvalue()
    assert "warning: spec.agents.first.consumes: topic 'in' is consumed" in err.getvalue()


def test_validate_missing_file(tmp_path: Path) -> None:
    err = io.StringIO()
    missing = tmp_path / "nope.yaml"
    assert commands.validate([missing], out=io.StringIO(), err=err) == commands.EXIT_INVALID
    assert err.getvalue().startswith(f"{missing}:1:1: (document): cannot read file")


def test_schema_is_json() -> None:
    assert json.loads(commands.schema())["title"] == "agentflow Workflow"


def test_run_until_idle_plain_output(files: Files) -> None:
    path = _fan_out(files)
    inputs = files.root / "in.jsonl"
    inputs.write_text('{"id": "a"}\n\n{"id": "b"}\n{"id": "c", "priority": "high"}\n')
    out, err = io.StringIO(), io.StringIO()
    code = commands.run_workflow(
        path, inputs={"in": inputs}, until_idle=True, out=out, err=err, env={}
    )
    assert code == commands.EXIT_OK, err.getvalue()
    text = out.getvalue()
    summary = text[text.index("summary: ") :].splitlines()
    assert summary[0].startswith("summary: workflow fan on memory://fan-")
    assert summary[0].endswith("received=12 succeeded=12 retried=0 dead-lettered=0")
    rows = {line.split(":")[0].strip(): line for line in summary[1:]}
    assert "received=3 succeeded=3 retried=0 dead-lettered=0" in rows["first"]
    assert "received=3 succeeded=3" in rows["last"]
    assert "\x1b[" not in text  # not a terminal: no escape codes


def test_run_rejects_bad_input_file(files: Files) -> None:
    path = _fan_out(files)
    inputs = files.root / "in.jsonl"
    inputs.write_text('{"id": "a"}\n{oops\n')
    err = io.StringIO()
    code = commands.run_workflow(path, inputs={"in": inputs}, until_idle=True, err=err, env={})
    assert code == commands.EXIT_INVALID
    assert err.getvalue().startswith(f"agentflow run: {inputs}:2: not JSON")


def test_run_invalid_workflow(files: Files) -> None:
    path = files.write(FAN_OUT.replace("'{m}:sink'", "'{m}:missing'"))
    err = io.StringIO()
    assert commands.run_workflow(path, until_idle=True, err=err, env={}) == commands.EXIT_INVALID
    assert "spec.agents.left.uses" in err.getvalue()


def test_live_table_renders_counters() -> None:
    from rich.console import Console

    from agentflow.stats import AgentStats
    from agentflow.workflow.live import table

    stats = {"classify": AgentStats(received=5, succeeded=3, retried=1, dead_lettered=1)}
    console = Console(record=True, width=120)
    console.print(table("workflow demo", stats, {"classify": 2.5}))
    text = console.export_text()
    assert "dead-lettered" in text and "msg/s" in text
    row = next(line for line in text.splitlines() if "classify" in line)
    assert [cell.strip() for cell in row.split("│")[2:8]] == ["5", "3", "1", "1", "0", "2.5"]
