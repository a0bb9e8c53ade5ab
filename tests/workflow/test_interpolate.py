from __future__ import annotations

import pytest

from agentflow.workflow.interpolate import InterpolationError, interpolate
from agentflow.workflow.loader import load


def test_variable_and_default() -> None:
    env = {"HOST": "nats://h:4222", "EMPTY": ""}
    assert interpolate("${HOST}", env) == "nats://h:4222"
    assert interpolate("${NOPE:-memory://}", env) == "memory://"
    assert interpolate("${EMPTY:-fallback}", env) == "fallback"
    assert interpolate("${EMPTY}", env) == ""
    assert interpolate("a-${HOST}-b ${NOPE:-}", env) == "a-nats://h:4222-b "
    assert interpolate("cost: $5 and $${HOST}", env) == "cost: $5 and ${HOST}"


def test_missing_variable_names_it() -> None:
    with pytest.raises(InterpolationError, match="environment variable NOPE is not set"):
        interpolate("${NOPE}", {})


@pytest.mark.parametrize("bad", ["${1X}", "${A B}", "${}", "${OPEN"])
def test_malformed(bad: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(bad, {})


def test_plain_scalars_are_typed_after_substitution() -> None:
    text = "a: ${N:-8}\nb: '${N:-8}'\nc: ${FLAG:-true}\nd: ${T:-30s}\n"
    loaded = load(text, "x.yaml", {})
    assert loaded.diagnostics == []
    assert loaded.data == {"a": 8, "b": "8", "c": True, "d": "30s"}


def test_missing_variable_is_reported_at_its_line() -> None:
    loaded = load("a: 1\nb:\n  c: x-${MISSING}\n", "x.yaml", {})
    [diag] = loaded.diagnostics
    assert (diag.position.line, diag.position.column) == (3, 6)
    assert diag.path == ("b", "c")
    assert diag.format().startswith("x.yaml:3:6: b.c: environment variable MISSING is not set")
