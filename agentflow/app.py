"""The App: a named set of agents bound to one broker and one idempotency store."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agentflow import envelope
from agentflow.agent import (
    DEFAULT_CONCURRENCY,
    DEFAULT_IDEMPOTENCY_TTL,
    DEFAULT_TIMEOUT,
    AgentSpec,
    Handler,
    MessageFn,
    encode_payload,
)
from agentflow.brokers import Broker, OutMessage, from_url
from agentflow.errors import ConfigError
from agentflow.idempotency import IdempotencyStore, store_from_url
from agentflow.retry import RetryPolicy
from agentflow.stats import AgentStats
from agentflow.worker import AgentWorker

log = logging.getLogger("agentflow.app")

F = TypeVar("F", bound=Handler)

DEFAULT_BROKER = "memory://"
DEFAULT_GRACE = 30.0
# The cycle collector's first threshold while agents run (Python's default is 700).
GC_YOUNG_THRESHOLD = 10_000
# Running apps that raised it, and the thresholds to give back when the last one stops.
_gc_raised: list[App] = []
_gc_saved: list[tuple[int, int, int]] = []


def default_store_url(broker_url: str, app_name: str) -> str:
    """The idempotency store an app uses when none is configured."""
    scheme = urlsplit(broker_url).scheme
    if scheme in ("nats", "tls"):
        return "nats-kv://"
    if scheme == "kafka":
        # Single-node default; multi-worker Kafka deployments configure redis:// (docs/kafka.md).
        state = Path(os.environ.get("AGENTFLOW_STATE_DIR", ".agentflow"))
        return f"sqlite:///{(state / f'{app_name}.idempotency.db').resolve()}"
    return "memory://"


class App:
    """A named set of agents on one broker.

    ``async with app:`` runs it inside a running loop; ``app.run()`` blocks until SIGTERM/SIGINT.
    ``tune_gc`` (default on) tunes the cycle collector while the agents run (see ``start``).
    """

    def __init__(
        self,
        name: str,
        broker: str | Broker | None = None,
        *,
        store: str | IdempotencyStore | None = None,
        grace_period: float = DEFAULT_GRACE,
        tune_gc: bool = True,
    ) -> None:
        if not name or any(c.isspace() for c in name):
            raise ConfigError(f"app name must be a non-empty word, got {name!r}")
        self.name = name
        if isinstance(broker, Broker):
            self.broker = broker
        else:
            self.broker = from_url(broker or os.environ.get("AGENTFLOW_BROKER") or DEFAULT_BROKER)
        self._store_arg = store if store is not None else os.environ.get("AGENTFLOW_STORE")
        self.store: IdempotencyStore | None = None
        self.grace_period = grace_period
        self.tune_gc = tune_gc
        self.specs: dict[str, AgentSpec] = {}
        self.stats: dict[str, AgentStats] = {}
        self._workers: list[AgentWorker] = []
        self._running = False
        self._connected = False

    # -- declaring agents -------------------------------------------------------------------
    def agent(
        self,
        consumes: str,
        produces: str | Sequence[str] | None = None,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        idempotency_key: str | MessageFn | None = None,
        idempotent: bool = False,
        idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        dlq: str | None = None,
        group: str | None = None,
    ) -> Callable[[F], F]:
        """Declare an async function as an agent consuming ``consumes``."""
        # Handlers declared inside functions may annotate with local classes.
        localns = dict(sys._getframe(1).f_locals)

        def register(fn: F) -> F:
            spec = AgentSpec.from_function(
                fn,
                consumes,
                produces,
                name=name,
                retry=retry,
                idempotency_key=idempotency_key,
                idempotent=idempotent,
                idempotency_ttl=idempotency_ttl,
                concurrency=concurrency,
                timeout=timeout,
                dlq=dlq,
                group=group,
                localns=localns,
            )
            self.add_agent(spec)
            fn.__agentflow_spec__ = spec  # type: ignore[attr-defined]
            return fn

        return register

    def add_agent(self, spec: AgentSpec) -> None:
        """Register an agent spec (used by the decorator and by YAML workflows)."""
        if spec.name in self.specs:
            raise ConfigError(f"app {self.name!r} already has an agent named {spec.name!r}")
        if self._running:
            raise ConfigError(f"cannot add agent {spec.name!r} to a running app")
        self.specs[spec.name] = spec
        self.stats[spec.name] = AgentStats()

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, declare topics, open the store and start every agent."""
        if self._running:
            return
        await self._connect()
        if any(s.uses_idempotency for s in self.specs.values()):
            self.store = await self._open_store()
        topics = set()
        for spec in self.specs.values():
            topics.add(spec.consumes)
            topics.update(spec.produces)
            if spec.dlq:
                topics.add(spec.dlq)
        await self.broker.ensure_topics(sorted(topics))
        self._running = True
        try:
            for spec in self.specs.values():
                self.stats[spec.name].reset()
                worker = AgentWorker(
                    spec,
                    self.broker,
                    self.store,
                    self.stats[spec.name],
                    group=spec.group or f"{self.name}.{spec.name}",
                )
                await worker.start()
                self._workers.append(worker)
        except BaseException:
            await self.stop(grace=0.0)
            raise
        if self.tune_gc:
            self._tune_gc()

    def _tune_gc(self) -> None:
        # What exists now (modules, models, clients, this app) lives as long as the process.
        # Leaving it to the cycle collector makes every full collection walk all of it
        # while messages flow: freezing cut client CPU per message by 8-10% on the NATS
        # benchmark. Reference counting still frees these objects; only cycles among them
        # would be kept, and start-up makes none worth collecting.
        gc.freeze()
        # Messages in flight come and go in batches of hundreds of objects, so Python's
        # default first threshold (700) runs a young collection every ~100 messages that
        # walks the whole in-flight set only to free nothing (refcounting already did): 6%
        # of client CPU on a Kafka backlog. A higher threshold still collects real cycles.
        # The setting is the process's: the last running app to stop gives it back.
        if self in _gc_raised:
            return
        current = gc.get_threshold()
        if not _gc_raised:
            if current[0] >= GC_YOUNG_THRESHOLD:
                return  # set higher by the process itself: leave it
            _gc_saved[:] = [current]
            gc.set_threshold(GC_YOUNG_THRESHOLD, current[1], current[2])
        _gc_raised.append(self)

    async def stop(self, grace: float | None = None) -> None:
        """Stop fetching, drain in-flight work within the grace period, close connections."""
        grace = self.grace_period if grace is None else grace
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop(grace) for w in workers), return_exceptions=True)
        self._running = False
        if self in _gc_raised:
            _gc_raised.remove(self)
            if not _gc_raised and _gc_saved:
                gc.set_threshold(*_gc_saved.pop())
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
            self.store = None
        if self._connected:
            self._connected = False
            await self.broker.close()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully (uses uvloop when present)."""
        run_until_signal(self)

    async def _connect(self) -> None:
        if not self._connected:
            await self.broker.connect()
            self._connected = True

    async def _open_store(self) -> IdempotencyStore:
        arg = self._store_arg
        if isinstance(arg, IdempotencyStore):
            store = arg
        else:
            url = arg or default_store_url(self.broker.url, self.name)
            store = store_from_url(url, broker=self.broker, app_name=self.name)
        await store.open()
        return store

    # -- producing --------------------------------------------------------------------------
    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Publish one message and wait until the broker accepted it; returns its id."""
        await self._connect()
        mid = message_id or envelope.new_id()
        data = encode_payload(payload)
        hdrs = envelope.build_headers(
            mid,
            key=key,
            correlation_id=correlation_id,
            content_type=envelope.OCTET_STREAM if isinstance(payload, bytes) else envelope.JSON,
            extra=headers,
        )
        await self.broker.publish([OutMessage(topic, data, hdrs, key)])
        return mid

    # -- observing --------------------------------------------------------------------------
    def in_flight(self) -> int:
        """Messages fetched and not yet finished, over all agents."""
        return sum(w.in_flight for w in self._workers)

    async def wait_idle(self, timeout: float = 60.0, quiet: float = 0.5) -> bool:
        """Wait until nothing is in flight and nothing happened for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = max((s.last_activity for s in self.stats.values()), default=0.0)
            # A message waiting out a retry delay is in the broker, not in flight: wait for it.
            due = max((s.retry_due for s in self.stats.values()), default=0.0)
            now = time.monotonic()
            if self.in_flight() == 0 and now - last >= quiet and now >= due + quiet:
                return True
            await asyncio.sleep(min(0.05, quiet / 4))
        return False


def install_event_loop_policy() -> None:
    """Use uvloop when it is importable (faster I/O); plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_until_signal(app: App, main: Callable[[App], Any] | None = None) -> None:
    """Start ``app``, optionally run ``main(app)`` alongside, stop on SIGTERM/SIGINT."""
    install_event_loop_policy()

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                # A second signal while draining: give up on the grace period.
                os._exit(130)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
        await app.start()
        side: asyncio.Task[Any] | None = None
        try:
            if main is not None:
                side = asyncio.ensure_future(main(app))
                side.add_done_callback(lambda _t: stop.set())
            await stop.wait()
            if side is not None and side.done() and not side.cancelled():
                side.result()  # re-raise an error of the main coroutine
        finally:
            if side is not None and not side.done():
                side.cancel()
                # Let main's own cleanup finish before the drain starts.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await side
            await app.stop()

    asyncio.run(runner())
