"""Sampling profiles of a contender process with py-spy (``--profile DIR``).

py-spy attaches to the running contender after it is ready and samples it during the backlog
phase only (the maximum-throughput steady state); the collapsed stacks go to
``DIR/<broker>-<contender>-r<repeat>.txt`` and :func:`summarize` ranks functions from them.
Run ``python -m benchmarks.profiling FILE`` to print the ranking.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLE_RATE = 250  # Hz


class Profiler:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path) -> None:
        self.proc = proc
        self.out = out

    @classmethod
    def attach(
        cls, pid: int, profile_dir: Path | None, broker: str, contender: str, repeat: int
    ) -> Profiler | None:
        if profile_dir is None:
            return None
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        profile_dir.mkdir(parents=True, exist_ok=True)
        out = profile_dir / f"{broker}-{contender}-r{repeat}.txt"
        cmd = [exe, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--format", "raw"]
        cmd += ["--output", str(out), "--nonblocking"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return cls(proc, out)

    async def stop(self) -> None:
        """Stop sampling (SIGINT makes py-spy write its output)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self.proc.wait), 30.0)
        except TimeoutError:
            self.proc.kill()


def _frame_name(frame: str) -> str:
    """``fn (path/to/module.py:123)`` -> ``fn (module.py)``, stable across line numbers."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def summarize(
    path: Path, top: int = 25
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(total samples, top functions by own samples, top functions by inclusive samples)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    return total, own.most_common(top), incl.most_common(top)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m benchmarks.profiling PROFILE.txt [TOP]", file=sys.stderr)
        return 2
    top = int(argv[1]) if len(argv) > 1 else 25
    total, own, incl = summarize(Path(argv[0]), top)
    print(f"{total} samples")
    print("\nown time (self):")
    for name, count in own:
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\ninclusive:")
    for name, count in incl:
        print(f"  {100 * count / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
