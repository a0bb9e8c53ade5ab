"""Turn pydantic validation errors into located, human-worded diagnostics."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Union

import pydantic
from pydantic.fields import FieldInfo

from agentflow.workflow.diagnostics import Diagnostic, Path, suggestion
from agentflow.workflow.loader import SourceMap
from agentflow.workflow.spec import (
    AGENT_NAME_PATTERN,
    TOPIC_PATTERN,
    USES_PATTERN,
    Workflow,
    describe,
)

_SIMPLE_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "af_backoff": "expected a duration, a list of durations, or {initial, multiplier, max, jitter}",
    "af_retry_ref": "expected the name of a spec.policies.retry entry, or an inline mapping",
    "af_idempotency_ref": (
        "expected the name of a spec.policies.idempotency entry, or an inline mapping"
    ),
}
_PATTERN_EXPECTED = {
    TOPIC_PATTERN: "expected a topic: dot-separated letters, digits, _ and -, wildcards * and >",
    AGENT_NAME_PATTERN: "expected a name of letters, digits, _ and - (no dots)",
    USES_PATTERN: "expected module:function, e.g. my_agents:classify",
}


def diagnostics_from(
    exc: pydantic.ValidationError, data: Any, source: SourceMap
) -> list[Diagnostic]:
    """One diagnostic per offending path (the first error pydantic reports there)."""
    out: list[Diagnostic] = []
    seen: set[Path] = set()
    for err in exc.errors(include_url=False):
        path = data_path(err["loc"], data)
        if path in seen:
            continue
        seen.add(path)
        out.append(_one(err, path, source))
    return out


def data_path(loc: tuple[int | str, ...], data: Any) -> Path:
    """Map a pydantic ``loc`` onto the document, dropping union tags that are not keys."""
    path: list[int | str] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
            path.append(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            path.append(part)
        elif i == len(loc) - 1 and isinstance(current, dict):
            path.append(part)  # a missing key: it names a place that has no node yet
    return tuple(path)


def _one(err: Any, path: Path, source: SourceMap) -> Diagnostic:
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    file = source.file
    if kind == "extra_forbidden":
        key = str(path[-1])
        choices = allowed_keys(path[:-1])
        return Diagnostic(
            file, source.key(path), path, f"unknown key '{key}'", suggestion(key, choices)
        )
    if kind == "missing":
        parent = path[:-1]
        where = source.key(parent) if parent in source.keys else source.value(parent)
        described = field_description(path)
        hint = f"expected: {described}" if described else "this key is required"
        return Diagnostic(file, where, path, f"missing required key '{path[-1]}'", hint)
    at = source.value(path)
    if kind == "af_invalid":
        return Diagnostic(file, at, path, str(ctx["problem"]), str(ctx["expected"]))
    if kind in _SIMPLE_EXPECTED:
        return Diagnostic(file, at, path, f"got {describe(value)}", _SIMPLE_EXPECTED[kind])
    if kind == "literal_error":
        expected = f"expected {ctx.get('expected')}"
        return Diagnostic(file, at, path, f"got {describe(value)}", expected)
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        hint = _PATTERN_EXPECTED.get(pattern, f"expected a string matching {pattern}")
        return Diagnostic(file, at, path, f"invalid value {value!r}", hint)
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return Diagnostic(
            file, at, path, f"{value!r} is out of range", f"expected a number {bound} {limit}"
        )
    if kind in ("too_short", "string_too_short"):
        return Diagnostic(file, at, path, "is empty", "expected at least one entry")
    described = field_description(path)
    hint = f"expected: {described}" if described else "see schema/workflow.schema.json"
    return Diagnostic(file, at, path, str(err["msg"]), hint)


def _candidates(tp: Any) -> list[Any]:
    """Flatten Annotated/Union/Optional into the concrete alternatives of a type."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _candidates(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [c for arg in typing.get_args(tp) for c in _candidates(arg)]
    return [tp]


def _fields(model: type[pydantic.BaseModel]) -> dict[str, FieldInfo]:
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _is_model(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, pydantic.BaseModel)


def _step(tp: Any, part: int | str) -> Any:
    for cand in _candidates(tp):
        if _is_model(cand) and isinstance(part, str):
            field = _fields(cand).get(part)
            if field is not None:
                return field.annotation
        origin = typing.get_origin(cand)
        if origin is list and isinstance(part, int):
            return typing.get_args(cand)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(cand)[1]
    return None


def _type_at(path: Path) -> Any:
    tp: Any = Workflow
    for part in path:
        tp = _step(tp, part)
        if tp is None:
            return None
    return tp


def allowed_keys(path: Path) -> list[str]:
    """The keys a mapping at ``path`` may have (empty when it is not a model)."""
    for cand in _candidates(_type_at(path)):
        if _is_model(cand):
            return list(_fields(cand))
    return []


def field_description(path: Path) -> str | None:
    """The schema description of the field at ``path``, if it has one."""
    if not path or not isinstance(path[-1], str):
        return None
    for cand in _candidates(_type_at(path[:-1])):
        if _is_model(cand):
            field = _fields(cand).get(path[-1])
            if field is not None and field.description:
                return field.description.rstrip(".")
    return None
