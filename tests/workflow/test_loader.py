from __future__ import annotations

from agentflow.workflow.loader import load


def test_positions_of_keys_and_values() -> None:
    text = "spec:\n  agents:\n    a:\n      uses: m:f\n      produces: [x, y]\n"
    loaded = load(text, "f.yaml", {})
    src = loaded.source
    assert src.key(("spec", "agents", "a")).line == 3
    uses = src.value(("spec", "agents", "a", "uses"))
    assert (uses.line, uses.column) == (4, 13)
    assert src.value(("spec", "agents", "a", "produces", 1)).column == 21
    # an unknown deeper path falls back to the closest known ancestor (the agent's mapping,
    # which starts at its first key; its own key is on line 3)
    assert src.value(("spec", "agents", "a", "nope", 3)).line == 4
    assert src.key(("spec", "agents", "a", "nope")).line == 3


def test_duplicate_keys_are_errors_at_the_second_one() -> None:
    text = "a: 1\nb: 2\na: 3\n"
    loaded = load(text, "f.yaml", {})
    [diag] = loaded.diagnostics
    assert (diag.position.line, diag.path) == (3, ("a",))
    assert "first defined at line 1" in diag.problem


def test_merge_keys_override_without_duplicate_error() -> None:
    text = "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n"
    loaded = load(text, "f.yaml", {})
    assert loaded.diagnostics == []
    assert loaded.data["other"] == {"x": 1, "y": 3}


def test_syntax_error_position() -> None:
    loaded = load("a: [1, 2\nb: 3\n", "f.yaml", {})
    assert loaded.data is None
    [diag] = loaded.diagnostics
    assert diag.problem.startswith("YAML syntax error")
    assert diag.position.line == 2


def test_safe_only() -> None:
    loaded = load("a: !!python/object/apply:os.system ['true']\n", "f.yaml", {})
    assert loaded.data == {"a": None}  # never constructed
    assert "unsupported YAML tag" in loaded.diagnostics[0].problem
    loaded = load("a: !!python/name:os.system\n", "f.yaml", {})
    assert loaded.data is None
    assert "could not determine a constructor" in loaded.diagnostics[0].problem
