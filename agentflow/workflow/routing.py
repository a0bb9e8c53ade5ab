"""CEL for workflows: route selection and idempotency keys, compiled once, evaluated natively.

Expressions see four variables: ``payload`` (the JSON message), ``headers`` (a string map),
``key`` (the message key or null) and ``topic`` (the input topic).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentflow import _native
from agentflow.errors import NoRoute, Reject, RouteError

RouteFn = Callable[[bytes, dict[str, str], str | None, str], list[str]]
KeyFn = Callable[[bytes, dict[str, str], str | None, str], str | None]

# A dotted identifier path that is not rooted at a CEL variable other than `payload`
# names a payload field; the runtime resolves those itself without CEL.
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_CEL_ROOTS = {"headers", "key", "topic"}
EXPECTED_CEL = "expected a CEL expression over payload, headers, key and topic"


class CelUnavailable(RuntimeError):
    """The installed agentflow._native was built without CEL support."""


def _native_attr(name: str) -> Any:
    found = getattr(_native, name, None)
    if found is None:
        raise CelUnavailable(
            f"agentflow._native has no {name}: rebuild the extension (pip install -e .)"
        )
    return found


def compile_cel(expression: str) -> Any:
    """Compile one expression; ValueError on a syntax error, CelUnavailable without CEL."""
    program = _native_attr("CelProgram")
    return program(expression)


def is_field_path(text: str) -> bool:
    """Whether an idempotency key is a plain payload field path rather than CEL."""
    if not _FIELD_PATH.fullmatch(text):
        return False
    root = text.split(".", 1)[0]
    return root not in _CEL_ROOTS and text != "payload"


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Ordered routes; ``None`` as a condition marks the default route."""

    conditions: tuple[str | None, ...]
    targets: tuple[tuple[str, ...], ...]

    def router(self) -> RouteFn:
        """Compile the conditions into one native Router and return the route callable."""
        router = _native_attr("Router")(list(self.conditions))
        targets = [list(t) for t in self.targets]
        conditions = self.conditions

        def route(
            payload: bytes, headers: dict[str, str], key: str | None, topic: str
        ) -> list[str]:
            try:
                index: int = router.select(payload, headers, key, topic)
            except ValueError as exc:
                raise RouteError(f"route condition failed: {exc}") from exc
            if index < 0:
                raise NoRoute(
                    f"no route matched ({len(conditions)} conditions) and there is no default"
                )
            return targets[index]

        return route


def key_function(expression: str) -> str | KeyFn:
    """The runtime's idempotency_key for a workflow key: a field path as is, CEL as a callable."""
    if is_field_path(expression):
        return expression
    program = compile_cel(expression)

    def key(payload: bytes, headers: dict[str, str], msg_key: str | None, topic: str) -> str | None:
        try:
            value = program.evaluate(payload, headers, msg_key, topic)
        except ValueError as exc:
            # Deterministic for this message: retrying cannot help, dead-letter it now.
            raise Reject(f"idempotency key {expression!r} failed: {exc}") from exc
        if value is None:
            return None  # the runtime dead-letters a message whose key is missing
        if isinstance(value, dict | list):
            raise Reject(f"idempotency key {expression!r} gave a {type(value).__name__}")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return key


def unreachable_after_default(conditions: Sequence[str | None]) -> list[int]:
    """Indexes of routes that can never match because a default route comes first."""
    for i, cond in enumerate(conditions):
        if cond is None:
            return list(range(i + 1, len(conditions)))
    return []
