"""Helpers shared by the CLI commands: consoles, errors, targets, brokers, argument parsing."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from rich.console import Console
from rich.text import Text

from agentflow.app import DEFAULT_BROKER, App
from agentflow.brokers import Broker, from_url

BROKER_HELP = "Broker URL (memory://, nats://host:4222, kafka://host:9092). Env: AGENTFLOW_BROKER."
DLQ_SUFFIX = ".dlq"


class CliError(Exception):
    """A user-facing error: printed as one red line, exit status 1."""


def stdout() -> Console:
    """A console on the current stdout (looked up per call so test runners can swap it)."""
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    """A console on the current stderr; soft-wrapped so an error stays one line."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """Print one red ``error:`` line on stderr, newlines folded so it stays one line."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    stderr().print(Text(f"error: {text}", style="bold red"))


def note(message: str) -> None:
    """Print a dim note on stderr (not an error)."""
    stderr().print(Text(f"note: {message}", style="dim"))


def describe(exc: BaseException) -> str:
    """An exception as one line; our own errors speak for themselves, others show their type."""
    from agentflow.brokers import BrokerError
    from agentflow.errors import AgentflowError

    text = str(exc).strip()
    if isinstance(exc, CliError | BrokerError | AgentflowError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- brokers -------------------------------------------------------------------------------------
def broker_url(url: str | None) -> str:
    """The broker URL to use: the option, else AGENTFLOW_BROKER, else the embedded broker."""
    return url or os.environ.get("AGENTFLOW_BROKER") or DEFAULT_BROKER


def make_broker(url: str | None) -> Broker:
    """An unconnected broker for ``url`` (BrokerError for an unknown scheme)."""
    return from_url(broker_url(url))


def warn_if_volatile(broker: Broker) -> None:
    """Tell the user that a memory:// broker opened by a one-shot command dies with it."""
    if broker.url.startswith("memory:"):
        note(
            f"{broker.url} is the in-process broker: it lives only as long as this command; "
            "use --broker or AGENTFLOW_BROKER to reach NATS or Kafka"
        )


def dlq_topic(topic: str) -> str:
    """The dead-letter topic for ``topic`` (given as the original topic or the .dlq topic)."""
    return topic if topic.endswith(DLQ_SUFFIX) else f"{topic}{DLQ_SUFFIX}"


# -- arguments -----------------------------------------------------------------------------------
def parse_json(text: str, argument: str) -> Any:
    """Parse a JSON argument (``-`` reads stdin); CliError names the argument on failure."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"invalid JSON in argument {argument}: {exc}") from None


def parse_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """Parse repeated ``name=value`` options into a dict; CliError names the option."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliError(f"invalid {option} {item!r}: expected NAME=VALUE")
        out[name.strip()] = value
    return out


# -- targets -------------------------------------------------------------------------------------
def split_target(target: str) -> tuple[str, str]:
    """Split ``module:attr`` (attr defaults to ``app``); a Windows drive colon is not a split."""
    module, sep, attr = target.rpartition(":")
    if not sep or not module or "/" in attr or "\\" in attr:
        return target, "app"
    return module, attr


def _is_path(module: str) -> bool:
    return "/" in module or "\\" in module or module.endswith(".py")


def _dotted_under_cwd(path: Path) -> str | None:
    """``a/b/c.py`` under the current directory as ``a.b.c``, if every part is an identifier."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return None
    parts = [*rel.parent.parts, rel.stem]
    if all(p.isidentifier() for p in parts):
        return ".".join(parts)
    return None


def import_module(module: str) -> ModuleType:
    """Import a dotted module or a ``path/to/file.py`` with the current directory importable."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if not _is_path(module):
        try:
            return importlib.import_module(module)
        except Exception as exc:
            raise CliError(f"cannot import {module!r}: {describe_import(exc)}") from exc
    path = Path(module if module.endswith(".py") else f"{module}.py")
    if not path.is_file():
        raise CliError(f"cannot import {module!r}: no such file {str(path)!r}")
    dotted = _dotted_under_cwd(path)
    try:
        if dotted is not None:
            mod = _import_dotted(dotted)
            # A same-named package elsewhere on sys.path may win; then load the file itself.
            if mod is not None and _same_file(mod, path):
                return mod
        return _import_file(path)
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"cannot import {module!r}: {describe_import(exc)}") from exc


def _import_dotted(dotted: str) -> ModuleType | None:
    """Import ``dotted``; None when the name itself (or a parent package) is not found."""
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and (dotted == exc.name or dotted.startswith(f"{exc.name}.")):
            return None
        raise


def _same_file(mod: ModuleType, path: Path) -> bool:
    return Path(getattr(mod, "__file__", None) or "").resolve() == path.resolve()


def _import_file(path: Path) -> ModuleType:
    """Import a file outside the current directory; its own directory becomes importable."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot import {str(path)!r}: not a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def describe_import(exc: BaseException) -> str:
    """An import failure as one line (ImportError messages are already clear on their own)."""
    if isinstance(exc, ImportError):
        return str(exc)
    return describe(exc)


def load_app(target: str) -> tuple[App, ModuleType]:
    """Resolve ``module:attr`` (or ``path/file.py:attr``) to an App and its module."""
    module_name, attr = split_target(target)
    module = import_module(module_name)
    if not hasattr(module, attr):
        apps = sorted(n for n, v in vars(module).items() if isinstance(v, App))
        hint = f" (Apps defined there: {', '.join(apps)})" if apps else ""
        raise CliError(f"module {module_name!r} has no attribute {attr!r}{hint}")
    obj = getattr(module, attr)
    if not isinstance(obj, App):
        raise CliError(
            f"'{module_name}:{attr}' is of type {type(obj).__name__}, not an agentflow App "
            "(expected something like app = App('name'))"
        )
    return obj, module
