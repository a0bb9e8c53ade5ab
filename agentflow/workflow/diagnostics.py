"""Validation findings and how they print: ``file:line:column: field.path: problem (expected)``."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PathPart = str | int
Path = tuple[PathPart, ...]


class Severity(enum.StrEnum):
    """Errors make a workflow invalid; warnings are printed but do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in a workflow file."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a workflow file, located at a line and column."""

    file: str
    position: Position
    path: Path
    problem: str
    expected: str | None = None
    severity: Severity = Severity.ERROR

    @property
    def field(self) -> str:
        """The dotted field path, e.g. ``spec.agents.route.routes[0].when``."""
        return format_path(self.path)

    def format(self) -> str:
        """The one-line rendering the CLI prints."""
        level = "warning: " if self.severity is Severity.WARNING else ""
        tail = f" ({self.expected})" if self.expected else ""
        where = f"{self.file}:{self.position.line}:{self.position.column}"
        return f"{where}: {level}{self.field}: {self.problem}{tail}"


def format_path(path: Sequence[PathPart]) -> str:
    """Render a path as ``a.b[0].c``; the empty path is the whole document."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``word``, if any is close enough."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def suggestion(word: str, choices: Iterable[str], what: str = "one of") -> str:
    """``did you mean 'x'?`` when a choice is close, else the list of valid choices."""
    options = sorted(choices)
    close = did_you_mean(word, options)
    if close is not None:
        return f"did you mean '{close}'?"
    if not options:
        return "nothing is defined there"
    return f"expected {what}: " + ", ".join(options)


def errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Only the errors."""
    return [d for d in diagnostics if d.severity is Severity.ERROR]
