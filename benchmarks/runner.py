"""One contender run: produce the backlog, start the contender process, measure, verify."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import BACKLOG, FIXED_RATE, HALF_RATE, PHASE_NAMES, READY_LINE, ChildSpec
from benchmarks.profiling import Profiler
from benchmarks.side import Listener, Side, Topics
from benchmarks.verify import check_phase, percentile, rate_from_samples, steady_throughput

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STALL_TIMEOUT = 30.0  # no new output for this long: the contender is stuck (or lost messages)
SETTLE_TIMEOUT = 5.0
POLL = 0.02


@dataclass(frozen=True, slots=True)
class Settings:
    broker: str
    url: str
    n: int = 20_000
    concurrency: int = 100
    partitions: int = 4
    fixed_rate: float = 500.0
    latency_seconds: float = 4.0
    min_latency_messages: int = 200
    warmup_fraction: float = 0.1  # of each paced phase, left out of the percentiles
    quiet_threshold: float = 0.0  # wait for this idle fraction before each run (0 = don't)
    agentflow_src: Path | None = None  # directory holding the agentflow package to import
    log_dir: Path | None = None
    profile_dir: Path | None = None


@dataclass
class RunResult:
    contender: str
    repeat: int
    status: str = "ok"  # ok | LOSS | DUP | FAILED
    detail: str = ""
    n: int = 0
    throughput: float = float("nan")  # msg/s, steady state, from the broker's stored times
    wall_s: float = float("nan")  # READY -> last output, whole backlog
    cpu_s: float = float("nan")  # contender CPU over that window
    cpu_per_100k: float = float("nan")
    # CPU the broker process spent over the same window (it shares the machine's cores).
    broker_cpu_per_100k: float = float("nan")
    peak_rss_mib: float = float("nan")
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    # Latency of the input itself (producer -> broker -> harness listener): the floor that
    # no contender can go below on this machine.
    floor: dict[str, dict[str, float]] = field(default_factory=dict)
    delivery: dict[str, dict[str, int]] = field(default_factory=dict)
    exit_code: int | None = None
    idle_before: float = float("nan")  # machine idle fraction just before the run

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Child:
    """The contender process; reaped with ``wait4`` for its own peak RSS."""

    def __init__(
        self, spec: ChildSpec, log_path: Path, agentflow_src: Path | None = None, cwd: Path = REPO
    ) -> None:
        self.log = log_path.open("wb")
        env = dict(os.environ)
        # The contender imports agentflow from a snapshot when given one (so edits in the
        # working tree during a long run do not leak into it), else from this checkout.
        paths = [str(agentflow_src)] if agentflow_src else []
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.child", spec.to_json()],
            cwd=cwd,  # not the checkout when a snapshot is used: sys.path[0] is the cwd
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        self.rusage: Any = None
        self.exit_code: int | None = None

    async def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(
            loop.run_in_executor(None, self.proc.stdout.readline), READY_TIMEOUT
        )
        if line.decode().strip() != READY_LINE:
            raise RuntimeError(f"contender exited before it was ready (said {line[:200]!r})")

    def cpu(self) -> float:
        """User + system CPU seconds of the contender so far."""
        return process_cpu_seconds(self.proc.pid)

    async def stop(self, timeout: float = 30.0) -> None:
        if self.exit_code is not None:
            return
        # os.kill, not Popen.send_signal: that one polls first and would reap the child,
        # and with it the rusage this class reads.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                pid, status, rusage = await loop.run_in_executor(
                    None, os.wait4, self.proc.pid, os.WNOHANG
                )
                if pid:
                    self._reaped(status, rusage)
                    return
                await asyncio.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            _, status, rusage = await loop.run_in_executor(None, os.wait4, self.proc.pid, 0)
            self._reaped(status, rusage)
        except ChildProcessError:  # reaped elsewhere: the exit status is Popen's
            self.exit_code = self.proc.returncode if self.proc.returncode is not None else -1
            self.log.close()

    def peak_rss_mib(self) -> float:
        """The contender's peak resident set so far (``VmHWM``, Linux). Read while it runs:
        ``ru_maxrss`` after ``wait4`` also counts the harness's pages the child had between
        fork and exec."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return float("nan")

    def _reaped(self, status: int, rusage: Any) -> None:
        self.rusage = rusage
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.exit_code  # reaped here, not by Popen
        self.log.close()


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a live process: psutil when installed (the ``bench``
    extra), else ``/proc/<pid>/stat`` (Linux), so the CI smoke run needs no extra package."""
    try:
        import psutil
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def broker_pid(url: str) -> int | None:
    """The local process listening on the broker URL's port (None if not found or not ours
    to see): its CPU is part of what a contender costs on a shared machine."""
    try:
        import psutil
    except ImportError:
        return None
    port = urlsplit(url.split(",")[0]).port
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid) if conn.pid else None
    except (psutil.Error, OSError):
        return None
    return None


def _cpu_counters() -> tuple[int, int] | None:
    """(idle, total) jiffies of the whole machine from /proc/stat (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    return values[3] + values[4], sum(values)  # idle + iowait, all


async def wait_for_quiet(threshold: float, max_wait: float = 90.0) -> float:
    """Wait (bounded) until the machine was at least ``threshold`` idle over one second, so
    other people's work on a shared box skews a run less; returns the idle fraction seen."""
    deadline = time.monotonic() + max_wait
    idle = float("nan")
    while True:
        before = _cpu_counters()
        await asyncio.sleep(1.0)
        after = _cpu_counters()
        if before is None or after is None:
            return idle
        total = after[1] - before[1]
        idle = (after[0] - before[0]) / total if total > 0 else 1.0
        if idle >= threshold or time.monotonic() > deadline:
            return idle


async def _wait_output(side: Side, topics: Topics, n: int) -> tuple[bool, list[tuple[float, int]]]:
    """Poll the output count until it reaches ``n``; False when it stalls."""
    samples: list[tuple[float, int]] = []
    last_change = time.monotonic()
    last = -1
    while True:
        count = await side.out_count(topics)
        now = time.monotonic()
        samples.append((now, count))
        if count >= n:
            return True, samples
        if count != last:
            last, last_change = count, now
        elif now - last_change > STALL_TIMEOUT:
            return False, samples
        await asyncio.sleep(POLL)


async def _wait_stored(side: Side, topics: Topics, expected: int) -> None:
    """The harness's own producer must not lose anything (else it is not the contender's)."""
    deadline = time.monotonic() + 10.0
    while (stored := await side.in_count(topics)) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"harness producer: input holds {stored} of {expected} messages")
        await asyncio.sleep(0.05)


async def _wait_listener(listener: Listener, phase: int, n: int) -> bool:
    last_change, last = time.monotonic(), -1
    while True:
        count = listener.count(phase)
        if count >= n:
            return True
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > 10.0:
            return False
        await asyncio.sleep(POLL)


async def _wait_settled(side: Side, topics: Topics) -> bool:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        if await side.settled(topics):
            return True
        await asyncio.sleep(0.05)
    return False


def _latency_summary(values_ns: list[int], rate: float, achieved: float) -> dict[str, float]:
    ms = [v / 1e6 for v in values_ns]
    return {
        "rate": rate,
        "achieved_rate": achieved,
        "count": float(len(ms)),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


async def run_contender(side: Side, contender: str, repeat: int, s: Settings) -> RunResult:
    """Run ``contender`` once through the backlog and both paced phases."""
    result = RunResult(contender=contender, repeat=repeat, n=s.n)
    run = f"{contender.replace('-', '')[:6]}{uuid.uuid4().hex[:6]}"
    topics = await side.create(run)
    log_dir = s.log_dir or Path(tempfile.gettempdir())
    child: Child | None = None
    expected = {BACKLOG: s.n}
    try:
        if s.quiet_threshold > 0:
            result.idle_before = await wait_for_quiet(s.quiet_threshold)
        await side.produce_backlog(topics, run, BACKLOG, s.n)
        stored = await side.in_count(topics)
        if stored != s.n:
            raise RuntimeError(f"harness produced {s.n} but the input topic holds {stored}")
        with tempfile.TemporaryDirectory(prefix="afbench-") as state_dir:
            spec = ChildSpec(
                contender=contender,
                broker=s.broker,
                url=s.url,
                topic_in=topics.topic_in,
                topic_out=topics.topic_out,
                group=topics.group,
                concurrency=s.concurrency,
                partitions=s.partitions,
                stream_in=topics.stream_in,
                stream_out=topics.stream_out,
                state_dir=state_dir,
            )
            child = Child(
                spec,
                log_dir / f"{s.broker}-{contender}-r{repeat}.log",
                s.agentflow_src,
                cwd=Path(state_dir),
            )
            await child.wait_ready()
            profiler = Profiler.attach(child.proc.pid, s.profile_dir, s.broker, contender, repeat)
            bpid = broker_pid(s.url)
            bcpu0 = process_cpu_seconds(bpid) if bpid else float("nan")
            t0, cpu0 = time.monotonic(), child.cpu()
            complete, samples = await _wait_output(side, topics, s.n)
            t1, cpu1 = time.monotonic(), child.cpu()
            bcpu1 = process_cpu_seconds(bpid) if bpid else float("nan")
            if profiler is not None:
                await profiler.stop()
            result.wall_s = t1 - t0
            result.cpu_s = cpu1 - cpu0
            result.cpu_per_100k = result.cpu_s / s.n * 100_000
            result.broker_cpu_per_100k = (bcpu1 - bcpu0) / s.n * 100_000
            await _wait_settled(side, topics)
            if complete:
                live_rate = rate_from_samples(samples, s.n)
                if not live_rate > 0:
                    # Everything arrived between two polls (tiny N, fast contender): the
                    # whole run's average is the only estimate there is.
                    live_rate = s.n / max(result.wall_s, 1e-3)
                await _paced_phases(side, topics, run, s, live_rate, result, expected)
            await _wait_settled(side, topics)
            result.peak_rss_mib = child.peak_rss_mib()
            await child.stop()
        result.exit_code = child.exit_code
        records = await side.read_out(topics, timeout=60.0)
        backlog_stamps = [r.stored_ns for r in records if r.phase == BACKLOG]
        result.throughput = steady_throughput(backlog_stamps)
        problems = []
        for phase, count in expected.items():
            d = check_phase(records, phase, count)
            result.delivery[PHASE_NAMES[phase]] = {
                "expected": d.expected,
                "missing": d.missing,
                "duplicates": d.duplicates,
                "unexpected": d.unexpected,
            }
            if d.missing:
                problems.append(("LOSS", f"{PHASE_NAMES[phase]}: {d.missing} of {count} missing"))
            if d.duplicates or d.unexpected:
                problems.append(
                    (
                        "DUP",
                        f"{PHASE_NAMES[phase]}: {d.duplicates} duplicate(s), "
                        f"{d.unexpected} unexpected",
                    )
                )
        if problems:
            result.status = problems[0][0]
            result.detail = "; ".join(p[1] for p in problems)
    except Exception as exc:
        result.status = "FAILED"
        result.detail = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    finally:
        if child is not None:
            await child.stop()
            result.exit_code = child.exit_code
        with contextlib.suppress(Exception):
            await side.delete(topics)
    return result


def _values(listener: Listener, phase: int, skip: int) -> list[int]:
    return [v for (p, seq), v in listener.latencies_ns.items() if p == phase and seq >= skip]


async def _paced_phases(
    side: Side,
    topics: Topics,
    run: str,
    s: Settings,
    live_rate: float,
    result: RunResult,
    expected: dict[int, int],
) -> None:
    """Latency at 50% of this contender's own measured rate, then at the fixed rate."""
    listener = Listener()
    floor = Listener()  # the input as the broker accepts it: producer + broker + listener
    await side.listen(topics, topics.topic_out, listener)
    await side.listen(topics, topics.topic_in, floor)
    try:
        for phase, rate in ((HALF_RATE, 0.5 * live_rate), (FIXED_RATE, s.fixed_rate)):
            if not rate > 0:
                continue
            count = max(s.min_latency_messages, int(rate * s.latency_seconds))
            expected[phase] = count
            before = await side.in_count(topics)
            achieved = await side.produce_paced(topics, run, phase, count, rate)
            await _wait_stored(side, topics, before + count)
            await _wait_listener(listener, phase, count)
            skip = int(count * s.warmup_fraction)
            name = PHASE_NAMES[phase]
            result.latency[name] = _latency_summary(_values(listener, phase, skip), rate, achieved)
            result.floor[name] = _latency_summary(_values(floor, phase, skip), rate, achieved)
    finally:
        await side.unlisten()
