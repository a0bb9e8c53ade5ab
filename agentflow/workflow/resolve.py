"""Resolve ``uses: module:function`` to the handler a workflow agent runs."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentflow.workflow.diagnostics import suggestion


class UsesError(Exception):
    """``uses`` names something that cannot serve as a handler."""

    def __init__(self, problem: str, expected: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected


@contextmanager
def importable_from(directory: Path) -> Iterator[None]:
    """Let handler modules next to the workflow file be imported by their plain names."""
    entry = str(directory.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def is_async_callable(obj: Any) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - we need the bound method itself
    return not inspect.isclass(obj) and call is not None and inspect.iscoroutinefunction(call)


def resolve(uses: str) -> Any:
    """Import ``module:attr.path`` and return the async callable it names."""
    module_name, _, attr_path = uses.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsesError(
                f"cannot import module '{module_name}': no module named '{exc.name}'",
                "expected a module importable from the workflow's directory or sys.path",
            ) from exc
        raise UsesError(
            f"importing module '{module_name}' failed: ModuleNotFoundError: {exc}",
            "expected the module's own imports to succeed",
        ) from exc
    except Exception as exc:  # the module's own code raised while importing
        raise UsesError(
            f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}",
            "expected a module that imports cleanly",
        ) from exc
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            handlers = [n for n in names if is_async_callable(getattr(obj, n, None))]
            raise UsesError(
                f"'{walked}' has no attribute '{part}'",
                suggestion(part, handlers or names, "async functions there"),
            )
        obj = getattr(obj, part)
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    if not is_async_callable(obj):
        kind = "a class" if inspect.isclass(obj) else f"a {type(obj).__name__}"
        if inspect.isfunction(obj):
            kind = "a plain (synchronous) function"
        raise UsesError(
            f"'{uses}' is {kind}, not an async function", "expected an async def handler"
        )
    return obj
