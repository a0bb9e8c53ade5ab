"""One contender in its own process: ``python -m benchmarks.child '<ChildSpec JSON>'``.

Prints ``READY`` on stdout once it consumes; SIGTERM/SIGINT stop it cleanly (exit code 0).
Every contender runs on uvloop, as agentflow's ``App.run`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys

from benchmarks.common import READY_LINE, ChildSpec
from benchmarks.contenders import CONTENDERS


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.child '<ChildSpec JSON>'", file=sys.stderr)
        return 2
    spec = ChildSpec.from_json(argv[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    module = importlib.import_module(CONTENDERS[spec.contender].module(spec.broker))
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def main_async() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready() -> None:
            print(READY_LINE, flush=True)

        await module.run(spec, ready, stop)

    asyncio.run(main_async())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
