"""One test per class of validation error: exact file:line:column and field path."""

from __future__ import annotations

from agentflow.workflow import Severity, check_file
from tests.workflow.conftest import Files

HEAD = """
apiVersion: agentflow.dev/v1
kind: Workflow
metadata: {name: demo}
spec:
"""


def _errors(files: Files, body: str, env: dict[str, str] | None = None) -> list[str]:
    path = files.write(HEAD + body)
    checked = check_file(path, env or {})
    out = [
        d.format().removeprefix(f"{path}:")
        for d in checked.diagnostics
        if d.severity is Severity.ERROR
    ]
    assert out, "expected errors"
    assert not checked.ok
    return out


def _warnings(files: Files, body: str) -> list[str]:
    path = files.write(HEAD + body)
    checked = check_file(path, {})
    assert checked.ok, [d.format() for d in checked.diagnostics]
    return [
        d.format().removeprefix(f"{path}:")
        for d in checked.diagnostics
        if d.severity is Severity.WARNING
    ]


def test_valid_file_has_no_diagnostics(files: Files) -> None:
    path = files.write(
        HEAD
        + """
  inputs: [in]
  outputs: [out]
  agents:
    a: {uses: "{m}:passthrough", consumes: in, produces: out}
"""
    )
    checked = check_file(path, {})
    assert checked.ok and checked.diagnostics == []


def test_yaml_syntax_error(files: Files) -> None:
    [err] = _errors(files, "  agents:\n    a: {uses: x\n")
    assert err.startswith("7:1: (document): YAML syntax error:")


def test_unknown_key_with_did_you_mean(files: Files) -> None:
    [err] = _errors(
        files,
        """
  agents:
    a:
      uses: "{m}:passthrough"
      consumes: in
      timout: 5s
""",
    )
    assert err == "10:7: spec.agents.a.timout: unknown key 'timout' (did you mean 'timeout'?)"


def test_unknown_key_lists_choices_when_nothing_is_close(files: Files) -> None:
    [err] = _errors(files, "  agents: {a: {uses: '{m}:passthrough', consumes: in}}\n  zzz: 1\n")
    assert err.startswith("6:3: spec.zzz: unknown key 'zzz' (expected one of: agents, broker,")


def test_wrong_type(files: Files) -> None:
    [err] = _errors(
        files, "  agents:\n    a: {uses: '{m}:passthrough', consumes: in, concurrency: many}\n"
    )
    assert err == "6:72: spec.agents.a.concurrency: got string 'many' (expected an integer)"


def test_wrong_literal(files: Files) -> None:
    path = files.write(HEAD.replace("agentflow.dev/v1", "agentflow.dev/v2") + "  agents: {}\n")
    errs = [d.format() for d in check_file(path, {}).diagnostics]
    assert (
        errs[0]
        == f"{path}:1:13: apiVersion: got string 'agentflow.dev/v2' (expected 'agentflow.dev/v1')"
    )


def test_missing_required_key(files: Files) -> None:
    [err] = _errors(files, "  agents:\n    a:\n      consumes: in\n")
    assert err.startswith("6:5: spec.agents.a.uses: missing required key 'uses'")


def test_bad_duration(files: Files) -> None:
    [err] = _errors(
        files,
        "  defaults:\n    timeout: 30 sec\n"
        "  agents: {a: {uses: '{m}:passthrough', consumes: in}}\n",
    )
    assert err.startswith(
        "6:14: spec.defaults.timeout: invalid duration '30 sec' (expected a duration"
    )


def test_bad_duration_inside_backoff_list(files: Files) -> None:
    [err] = _errors(
        files,
        """
  policies:
    retry:
      slow: {max_attempts: 3, backoff: [1s, 2 hours]}
  agents: {a: {uses: '{m}:passthrough', consumes: in}}
""",
    )
    assert err.startswith("8:45: spec.policies.retry.slow.backoff[1]: invalid duration '2 hours'")


def test_unset_variable(files: Files) -> None:
    [err] = _errors(
        files, "  broker: ${BROKER_URL}\n  agents: {a: {uses: '{m}:passthrough', consumes: in}}\n"
    )
    assert err.startswith("5:11: spec.broker: environment variable BROKER_URL is not set")


def test_uses_not_importable(files: Files) -> None:
    [err] = _errors(files, "  agents:\n    a: {uses: 'no_such_module_xyz:f', consumes: in}\n")
    assert err == (
        "6:15: spec.agents.a.uses: cannot import module 'no_such_module_xyz': no module named "
        "'no_such_module_xyz' (expected a module importable from the workflow's directory or "
        "sys.path)"
    )


def test_uses_missing_attribute_suggests(files: Files) -> None:
    [err] = _errors(files, "  agents:\n    a: {uses: '{m}:passthru', consumes: in}\n")
    assert err.endswith("has no attribute 'passthru' (did you mean 'passthrough'?)")
    assert err.startswith("6:15: spec.agents.a.uses: ")


def test_uses_not_async(files: Files) -> None:
    errs = _errors(
        files,
        """
  agents:
    a: {uses: '{m}:not_async', consumes: in}
    b: {uses: '{m}:Klass', consumes: in}
""",
    )
    assert errs[0].startswith("7:15: spec.agents.a.uses: ")
    assert "is a plain (synchronous) function, not an async function" in errs[0]
    assert errs[1].startswith("8:15: spec.agents.b.uses: ")
    assert "is a class, not an async function" in errs[1]


def test_uses_bad_syntax(files: Files) -> None:
    [err] = _errors(files, "  agents:\n    a: {uses: 'just_a_module', consumes: in}\n")
    assert err.startswith(
        "6:15: spec.agents.a.uses: invalid value 'just_a_module' (expected module:function"
    )


def test_duplicate_agent_names(files: Files) -> None:
    [err] = _errors(
        files,
        """
  agents:
    a: {uses: '{m}:passthrough', consumes: in}
    b: {uses: '{m}:passthrough', consumes: in}
    a: {uses: '{m}:sink', consumes: x}
""",
    )
    assert err.startswith("9:5: spec.agents.a: duplicate agent name 'a' (first defined at line 7;")


def test_input_type_not_derivable(files: Files) -> None:
    [err] = _errors(files, "  agents:\n    a: {uses: '{m}:undecodable', consumes: in}\n")
    assert err.startswith("6:15: spec.agents.a.uses: cannot derive the input type: ")
    assert err.endswith(
        "(expected the first parameter annotated: pydantic model, dataclass, dict or bytes)"
    )


def test_unknown_policy_reference(files: Files) -> None:
    [err] = _errors(
        files,
        """
  policies:
    retry:
      patient: {max_attempts: 9}
  agents:
    a: {uses: '{m}:passthrough', consumes: in, retry: patiant}
""",
    )
    assert (
        err
        == "10:66: spec.agents.a.retry: no retry policy named 'patiant' (did you mean 'patient'?)"
    )


def test_produces_and_routes_together(files: Files) -> None:
    [err] = _errors(
        files,
        """
  agents:
    a:
      uses: '{m}:passthrough'
      consumes: in
      produces: out
      routes: [{to: other}]
""",
    )
    assert err.startswith(
        "11:7: spec.agents.a.routes: an agent cannot have both 'produces' and 'routes'"
    )


def test_no_input_topic(files: Files) -> None:
    [err] = _errors(files, "  agents:\n    a: {uses: '{m}:passthrough'}\n")
    assert err.startswith("6:5: spec.agents.a: agent 'a' has no input topic")


def test_bad_topic_name(files: Files) -> None:
    [err] = _errors(
        files,
        "  agents:\n    a: {uses: '{m}:passthrough', consumes: 'in', produces: [ok, 'not ok']}\n",
    )
    assert err.startswith(
        "6:76: spec.agents.a.produces[1]: invalid value 'not ok' (expected a topic"
    )


def test_bad_cel(files: Files) -> None:
    [err] = _errors(
        files,
        """
  agents:
    a:
      uses: '{m}:passthrough'
      consumes: in
      routes:
        - when: payload.priority == "high"
          to: hi
        - when: payload.priority ==
          to: lo
""",
    )
    assert err.startswith("13:17: spec.agents.a.routes[1].when: invalid CEL expression: ")
    assert err.endswith("(expected a CEL expression over payload, headers, key and topic)")


def test_bad_cel_idempotency_key(files: Files) -> None:
    [err] = _errors(
        files,
        "  agents:\n"
        "    a: {uses: '{m}:passthrough', consumes: in, idempotency: {key: 'payload.id +'}}\n",
    )
    assert err.startswith("6:78: spec.agents.a.idempotency.key: invalid CEL expression: ")


def test_every_error_at_once(files: Files) -> None:
    errs = _errors(
        files,
        """
  defaults: {timeout: forever}
  agents:
    a: {uses: '{m}:passthrough', consumes: in, concurency: 2}
    b: {uses: '{m}:passthrough', consumes: in, timeout: -1}
""",
    )
    assert [e.split(": ")[0] for e in errs] == ["6:23", "8:59", "9:68"]


def test_warnings_dangling_topics_and_cycles(files: Files) -> None:
    warns = _warnings(
        files,
        """
  agents:
    a: {uses: '{m}:passthrough', consumes: in, produces: [mid, nowhere]}
    b: {uses: '{m}:passthrough', consumes: mid, produces: back}
    c: {uses: '{m}:passthrough', consumes: back, produces: mid}
""",
    )
    assert warns == [
        "7:55: warning: spec.agents.a.consumes: topic 'in' is consumed but no agent produces it "
        "(list it in spec.inputs if it is fed from outside the workflow)",
        "7:75: warning: spec.agents.a.produces[1]: topic 'nowhere' is produced but no agent "
        "consumes it (list it in spec.outputs if something outside the workflow reads it)",
        "8:5: warning: spec.agents.b: agents form a cycle: b -> c -> b (expected an acyclic "
        "flow, or a loop that ends by design)",
    ]


def test_declared_inputs_outputs_and_wildcards_silence_warnings(files: Files) -> None:
    warns = _warnings(
        files,
        """
  inputs: [orders.>]
  outputs: [done]
  agents:
    a: {uses: '{m}:passthrough', consumes: 'orders.*', produces: [items.x, done]}
    b: {uses: '{m}:sink', consumes: 'items.*'}
""",
    )
    assert warns == []


def test_unreachable_route_warning(files: Files) -> None:
    warns = _warnings(
        files,
        """
  outputs: [x, y]
  inputs: [in]
  agents:
    a:
      uses: '{m}:passthrough'
      consumes: in
      routes:
        - to: x
        - to: y
""",
    )
    assert warns == [
        "14:11: warning: spec.agents.a.routes[1]: this route can never match: an earlier route "
        "has no 'when' (the default) (expected the default route last)"
    ]
