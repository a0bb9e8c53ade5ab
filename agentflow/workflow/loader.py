"""Safe YAML loading that remembers where every key and value came from.

PyYAML's ``safe_load`` loses positions and silently keeps the last of duplicate keys, so we
compose the node graph with the safe loader and build plain Python values ourselves, recording
a path -> position map, flagging duplicate keys and interpolating ``${VAR}`` per scalar (an
unset variable is reported at its own line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentflow.workflow.diagnostics import Diagnostic, Path, Position
from agentflow.workflow.interpolate import InterpolationError, has_reference, interpolate

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAX_DEPTH = 64  # an alias cycle would otherwise recurse forever


@dataclass
class SourceMap:
    """Where each path of a loaded document starts: its key and its value."""

    file: str
    keys: dict[Path, Position] = field(default_factory=dict)
    values: dict[Path, Position] = field(default_factory=dict)

    def key(self, path: Path) -> Position:
        """Position of the key naming ``path`` (or of the closest enclosing node)."""
        return self._lookup(path, prefer_key=True)

    def value(self, path: Path) -> Position:
        """Position of the value at ``path`` (or of the closest enclosing node)."""
        return self._lookup(path, prefer_key=False)

    def _lookup(self, path: Path, *, prefer_key: bool) -> Position:
        first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
        for end in range(len(path), -1, -1):
            sub = path[:end]
            if sub in first:
                return first[sub]
            if sub in second:
                return second[sub]
        return Position(1, 1)


@dataclass
class Loaded:
    """A parsed document (``None`` when YAML itself failed), its positions and its problems."""

    data: Any
    source: SourceMap
    diagnostics: list[Diagnostic]


def load(text: str, file: str, env: Mapping[str, str]) -> Loaded:
    """Parse one YAML document safely, interpolating scalars from ``env``."""
    source = SourceMap(file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            diag = Diagnostic(
                file, Position(1, 1), (), "the file is empty", "expected a Workflow document"
            )
            return Loaded(None, source, [diag])
        builder = _Builder(loader, source, env)
        data = builder.build(node, (), 0)
        return Loaded(data, source, builder.diagnostics)
    except yaml.MarkedYAMLError as exc:
        return Loaded(None, source, [_syntax_error(file, exc)])
    except yaml.YAMLError as exc:
        diag = Diagnostic(file, Position(1, 1), (), f"invalid YAML: {exc}", "expected valid YAML")
        return Loaded(None, source, [diag])
    finally:
        loader.dispose()


def _mark(mark: yaml.Mark | None) -> Position:
    if mark is None:
        return Position(1, 1)
    return Position(mark.line + 1, mark.column + 1)


def _syntax_error(file: str, exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if exc.context:
        problem = f"{problem} ({exc.context})"
    return Diagnostic(file, _mark(mark), (), f"YAML syntax error: {problem}", "expected valid YAML")


class _Builder:
    """Turns composed nodes into Python values while recording positions and problems."""

    def __init__(self, loader: yaml.SafeLoader, source: SourceMap, env: Mapping[str, str]):
        self.loader = loader
        self.source = source
        self.env = env
        self.diagnostics: list[Diagnostic] = []

    def error(self, at: Position, path: Path, problem: str, expected: str) -> None:
        self.diagnostics.append(Diagnostic(self.source.file, at, path, problem, expected))

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.source.values.setdefault(path, _mark(node.start_mark))
        if depth > _MAX_DEPTH:
            self.error(
                _mark(node.start_mark), path, "nesting is too deep", "expected no alias cycles"
            )
            return None
        if node.tag not in (_MAP_TAG, _SEQ_TAG) and not isinstance(node, yaml.ScalarNode):
            # The safe loader would build sets/ordered maps; a workflow has no use for them,
            # and anything else (python/* tags) must never be constructed.
            self.error(
                _mark(node.start_mark),
                path,
                f"unsupported YAML tag {node.tag}",
                "expected plain mappings, lists and scalars",
            )
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        # Duplicates are checked on the node's own entries, before `<<` merges are flattened
        # in: a key that overrides a merged one is intended, a key written twice is not.
        seen: dict[Any, Position] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.loader.construct_object(key_node)
            at = _mark(key_node.start_mark)
            if key in seen:
                first = seen[key]
                what = "agent name" if path == ("spec", "agents") else "key"
                self.error(
                    at,
                    (*path, key),
                    f"duplicate {what} '{key}' (first defined at line {first.line}; "
                    "YAML would silently keep only the last one)",
                    f"expected each {what} once",
                )
            else:
                seen[key] = at
        self.loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(
                    _mark(key_node.start_mark),
                    path,
                    "a key must be a plain value",
                    "expected a string key",
                )
                continue
            key = self.loader.construct_object(key_node)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            child = (*path, key)
            if key in result:
                # A merged key overridden by an explicit one: the explicit one (later) wins.
                self.source.keys[child] = _mark(key_node.start_mark)
                self.source.values.pop(child, None)
            else:
                self.source.keys.setdefault(child, _mark(key_node.start_mark))
            result[key] = self.build(value_node, child, depth + 1)
        return result

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        value = self.loader.construct_object(node)
        if not (isinstance(value, str) and has_reference(value)):
            return value
        try:
            text = interpolate(value, self.env)
        except InterpolationError as exc:
            self.error(_mark(node.start_mark), path, exc.problem, exc.expected)
            return value
        if node.tag != _STR_TAG or getattr(node, "style", None) is not None:
            return text  # quoted (or explicitly tagged) values stay strings
        # A plain scalar is typed after substitution, as if the value had been written there:
        # `concurrency: ${WORKERS:-8}` is the integer 8.
        tag: str = self.loader.resolve(  # type: ignore[no-untyped-call]
            yaml.ScalarNode, text, (True, False)
        )
        typed = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark)
        try:
            return self.loader.construct_object(typed)
        except yaml.YAMLError:
            return text
