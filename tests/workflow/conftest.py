"""Helpers for workflow tests: write a workflow and its handler module into a temp dir."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HANDLERS = """
from dataclasses import dataclass
from pydantic import BaseModel
from agentflow import App, Context, RetryPolicy, Reject

class Ticket(BaseModel):
    id: str
    priority: str = "normal"
    score: float = 0.0

@dataclass
class Point:
    x: int

async def passthrough(t: Ticket) -> Ticket:
    return t

async def sink(t: Ticket) -> None:
    return None

async def with_ctx(t: Ticket, ctx: Context) -> Ticket:
    return t

async def points(p: Point) -> None:
    return None

async def untyped(t) -> None:
    return None

async def undecodable(t: "NoSuchType") -> None:  # noqa: F821
    return None

def not_async(t: Ticket) -> None:
    return None

class Klass:
    pass

app = App("decorated-source")

@app.agent(
    "dec.in",
    produces="dec.out",
    retry=RetryPolicy(max_attempts=7, backoff=[1.0]),
    concurrency=3,
    timeout=3.0,
    idempotency_key="id",
    dlq="dec.dead",
)
async def decorated(t: Ticket) -> Ticket:
    return t
"""


class Files:
    """A temp dir with a fresh handler module (unique name: sys.modules caches imports)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.module = f"wfh_{uuid.uuid4().hex[:10]}"
        (root / f"{self.module}.py").write_text(HANDLERS)

    def write(self, text: str, name: str = "wf.yaml") -> Path:
        """Write a workflow (dedented; ``{m}`` is the handler module's name)."""
        path = self.root / name
        path.write_text(textwrap.dedent(text).lstrip("\n").replace("{m}", self.module))
        return path


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    """A Files helper; its handler module is dropped from sys.modules afterwards."""
    f = Files(tmp_path)
    yield f
    sys.modules.pop(f.module, None)


WriteFn = Callable[[str], Path]
