"""Small helpers shared by the NATS tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check`` (sync or async) until truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
