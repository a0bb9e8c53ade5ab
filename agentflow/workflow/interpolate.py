"""``${VAR}`` and ``${VAR:-default}`` substitution in workflow scalar values.

``$${`` writes a literal ``${``. A default is used when the variable is unset or empty, like
the shell's ``:-``. Only values are interpolated, never keys, so a file's structure is fixed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A reference is malformed or names an unset variable without a default."""

    def __init__(self, problem: str, expected: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected


def has_reference(text: str) -> bool:
    """Whether ``text`` contains anything interpolation would change."""
    return "${" in text


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute every ``${VAR}`` / ``${VAR:-default}`` in ``text`` from ``env``."""
    out: list[str] = []
    i = 0
    while True:
        start = text.find("${", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        if start > 0 and text[start - 1] == "$":
            # `$${` is an escaped literal `${`: drop one `$` and copy the brace through.
            out.append(text[i : start - 1] + "${")
            i = start + 2
            continue
        out.append(text[i:start])
        end = text.find("}", start)
        if end < 0:
            raise InterpolationError(
                f"unterminated reference in {text!r}", "${VAR} or ${VAR:-default}"
            )
        out.append(_resolve(text[start + 2 : end], env))
        i = end + 1


def _resolve(body: str, env: Mapping[str, str]) -> str:
    name, sep, default = body.partition(":-")
    if not _NAME.fullmatch(name):
        raise InterpolationError(
            f"invalid variable reference '${{{body}}}'",
            "${NAME} or ${NAME:-default} with NAME made of letters, digits and _",
        )
    value = env.get(name)
    if value:
        return value
    if sep:
        return default
    if value is not None:
        return value  # set but empty, and no default asked for: keep it empty
    raise InterpolationError(
        f"environment variable {name} is not set",
        f"export {name}, or give a default: ${{{name}:-value}}",
    )
