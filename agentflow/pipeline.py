"""Processing of one delivery, step by step.

decode headers -> decode/validate payload -> idempotency claim (``intake.py``; the worker
claims the deliveries about to start as a group) -> handler under timeout -> publish outputs
with derived ids (awaiting the broker, through the outbox) -> complete the claim -> ack.
Any failure either naks the delivery with the policy's delay or dead-letters it; nothing is
acked before its outputs are durably accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from agentflow import envelope
from agentflow.agent import AgentSpec
from agentflow.agent import wants_context as _wants_context
from agentflow.brokers.base import Broker, Delivery, OutMessage
from agentflow.context import Context
from agentflow.deadlines import Clock
from agentflow.errors import Reject, Retry
from agentflow.idempotency.base import Claim, ClaimState, IdempotencyStore
from agentflow.intake import DeadLetter, Decoded, Intake, Prepared
from agentflow.outbox import Outbox
from agentflow.outputs import Outputs
from agentflow.stats import AgentStats

log = logging.getLogger("agentflow.pipeline")

# A key held by another worker is retried after this long (the other worker may still finish).
BUSY_DELAY = 1.0


class _Finished:
    """A call whose handler finished: its outputs wait in the outbox, its input unsettled."""

    __slots__ = ("attempt", "claim_key", "d", "out")

    def __init__(
        self, d: Delivery, out: list[OutMessage], claim_key: str | None, attempt: int
    ) -> None:
        self.d = d
        self.out = out
        self.claim_key = claim_key
        self.attempt = attempt


class Processor:
    """Runs one agent's pipeline on single deliveries."""

    def __init__(
        self,
        spec: AgentSpec,
        broker: Broker,
        store: IdempotencyStore | None,
        stats: AgentStats,
        ack_wait: float,
        on_settled: Callable[[list[Delivery]], None] | None = None,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] | None = None,
    ) -> None:
        self.spec = spec
        self.broker = broker
        self.store = store
        self.stats = stats
        self.ack_wait = ack_wait
        self.intake = Intake(spec, store is not None)
        self.plan = self.intake.plan
        self.wants_context = _wants_context(spec.handler)
        self.outputs = Outputs(spec)
        # Read per message: kept as attributes of their own.
        self._handler = spec.handler
        self._max_attempts = spec.retry.max_attempts
        self.logger = logging.getLogger(f"agentflow.agent.{spec.name}")
        # Outputs of finished calls are published in coalesced batches (see outbox.py); the
        # worker hears of the deliveries settled there through ``on_settled``.
        self.on_settled = on_settled or (lambda ds: None)
        self.outbox: Outbox[_Finished] = Outbox(
            self._settle, self._abandon, spawn or asyncio.create_task
        )
        # Claim keys of calls waiting in the outbox -> a future for a duplicate waiting on it.
        self._unsettled: dict[str, asyncio.Future[None] | None] = {}

    async def claim_group(self, group: list[Prepared]) -> None:
        """Claim the keys of deliveries about to start in one store call (sets ``claim``)."""
        if self.store is None:
            return
        claiming = [(p, p.claim_key) for p in group if p.claim_key is not None]
        if not claiming:
            return
        keys = [key for _, key in claiming]
        try:
            claims = await self.store.claim_many(keys, lease=self.ack_wait)
        except Exception as exc:
            claims = [exc] * len(keys)
        for (p, _), claim in zip(claiming, claims, strict=True):
            p.claim = claim

    async def process(
        self,
        d: Delivery,
        clock: Clock | None = None,
        decoded: Decoded | None = None,
        prepared: Prepared | None = None,
    ) -> bool:
        """Handle one delivery: ack, nak or dead-letter it now, or hand it to the outbox.

        Returns True when the delivery is settled, False when it waits in the outbox for its
        outputs to be published (``on_settled`` is called once it is settled there).
        ``clock`` (of the runner task calling this) lets a worker enforce the handler
        timeout without a timer per call; without it ``asyncio.timeout`` is used.
        ``decoded`` is the envelope when the worker decoded it already (per batch);
        ``prepared`` the delivery when the worker prepared and claimed it already (per group).
        """
        stats = self.stats
        stats.received += 1  # (activity: the worker counts it in flight until settled)
        attempt = d.delivery_count or 1  # (never below 1)
        claim_key: str | None = None
        queued = False
        try:
            if prepared is None:
                message_id, key, correlation, value, claim_key = self.intake.decode(d, decoded)
                claim: Claim | Exception | None = None
            else:
                if prepared.error is not None:
                    raise prepared.error
                message_id, key = prepared.message_id, prepared.key
                correlation, value = prepared.correlation, prepared.value
                claim, claim_key = prepared.claim, prepared.claim_key
            if claim_key is not None and self.store is not None:
                if claim is None:
                    claim = await self.store.claim(claim_key, lease=self.ack_wait)
                elif isinstance(claim, Exception):
                    raise claim
                if claim.state is ClaimState.BUSY and claim_key in self._unsettled:
                    # Held by our own call whose outputs wait in the outbox: its outcome
                    # comes within one flush, so wait for it rather than retry in a second.
                    await self._settled(claim_key)
                    claim = await self.store.claim(claim_key, lease=self.ack_wait)
                if claim.state is ClaimState.COMPLETED:
                    stats.duplicates += 1
                    claim_key = None
                    await d.ack()
                    return True
                if claim.state is ClaimState.BUSY:
                    claim_key = None
                    stats.retry_due = max(stats.retry_due, time.monotonic() + BUSY_DELAY)
                    await d.nak(BUSY_DELAY)
                    return True
                # The claim counts attempts across crashes; the broker's count may be lower.
                attempt = claim.attempts
            if attempt > self._max_attempts:
                raise DeadLetter(
                    envelope.REASON_MAX_ATTEMPTS,
                    f"attempt {attempt} exceeds max_attempts={self.spec.retry.max_attempts} "
                    "(earlier attempts crashed or timed out without an outcome)",
                )
            ctx = (
                self._context(d, correlation, message_id, key, attempt)
                if self.wants_context
                else None
            )
            fn = self._handler
            coro = fn(value, ctx) if ctx else fn(value)
            if clock is None:
                result = await self._bounded(coro)
            else:
                clock.begin()
                try:
                    result = await coro
                except asyncio.CancelledError:
                    if clock.timed_out():  # the worker's timer, and nobody else, cancelled
                        raise self._timeout_error() from None
                    raise
                finally:
                    clock.end()
            pending = ctx._outputs if ctx is not None else ()
            out = self.outputs.of(d, correlation, message_id, key, pending, result)
            if not out and claim_key is None:
                await d.ack()  # nothing to publish or complete: no reason to queue it
                stats.succeeded += 1
                return True
            if claim_key is not None:
                self._unsettled[claim_key] = None
            self.outbox.put(_Finished(d, out, claim_key, attempt))
            queued = True  # its flush records the activity
            return False  # the outbox owns the claim and the delivery now
        except DeadLetter as dl:
            await self._dead_letter(d, dl.reason, dl.error, attempt, claim_key)
        except Reject as exc:
            await self._dead_letter(d, envelope.REASON_REJECTED, exc, attempt, claim_key)
        except asyncio.CancelledError:
            # Worker stopping: give the claim back; the broker redelivers the message.
            if claim_key is not None and self.store is not None:
                await asyncio.shield(self._release(claim_key))
            raise
        except Exception as exc:
            await self._failed(d, exc, attempt, claim_key)
        finally:
            if not queued:
                stats.touch()
        return True

    async def unclaim(self, prepared: Prepared) -> None:
        """A claimed delivery that will not start (worker stopping): give its claim back."""
        claim = prepared.claim
        if prepared.claim_key is not None and isinstance(claim, Claim):
            if claim.state is ClaimState.ACQUIRED:
                await self._release(prepared.claim_key)

    async def _settle(self, batch: list[_Finished]) -> None:
        """Publish the outputs of a batch of finished calls at once, then settle each input."""
        settled = 0  # calls settled so far, in batch order (a cancellation gives back the rest)
        try:
            out = [m for f in batch for m in f.out]
            refused: Exception | None = None
            try:
                if out:
                    await self.broker.publish(out)
            except Exception as exc:
                if len(batch) > 1:
                    # Find the call whose outputs were refused: one by one, so the others
                    # are not charged an attempt for it (repeats are dropped by their ids).
                    for f in batch:
                        settled += 1
                        await self._settle([f])
                    return
                refused = exc
            errors: list[Exception | None]
            if refused is None:
                self.stats.published += len(out)
                failed = await self._complete_claims(batch)
                errors = [failed.get(f.claim_key) if f.claim_key else None for f in batch]
            else:
                errors = [refused] * len(batch)
            # The inputs whose outputs and claims are done are acked together.
            acking = [f.d for f, error in zip(batch, errors, strict=True) if error is None]
            acked = await self._ack_many(acking)
            if len(acking) == len(batch) and not any(acked):  # the usual case: all went well
                settled = len(batch)
                self.stats.succeeded += settled
                self._after_all(batch, acking)
                self.stats.touch()
                return
            ack_errors = iter(acked)
            for f, error in zip(batch, errors, strict=True):
                settled += 1
                try:
                    if error is None:
                        error = next(ack_errors)
                    if error is None:
                        self.stats.succeeded += 1
                    else:
                        await self._failed(f.d, error, f.attempt, f.claim_key)
                except Exception as exc:
                    await self._failed(f.d, exc, f.attempt, f.claim_key)
                finally:
                    self._after(f)
            self.stats.touch()
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(batch[settled:]))
            raise

    @staticmethod
    async def _ack_many(deliveries: list[Delivery]) -> list[Exception | None]:
        """Ack deliveries (of this agent's one subscription) at once; per delivery, its error."""
        if not deliveries:
            return []
        try:
            return await type(deliveries[0]).ack_many(deliveries)
        except Exception as exc:
            return [exc] * len(deliveries)

    async def _complete_claims(self, batch: list[_Finished]) -> dict[str, Exception]:
        """Complete the claims of a published batch at once; the keys that failed, and why."""
        keys = [f.claim_key for f in batch if f.claim_key is not None]
        if not keys or self.store is None:
            return {}
        errors = await self.store.complete_many(keys, self.spec.idempotency_ttl)
        return {k: e for k, e in zip(keys, errors, strict=True) if e is not None}

    async def _abandon(self, batch: list[_Finished]) -> None:
        """Worker stopping: give the claims back; the broker redelivers the inputs."""
        for f in batch:
            if f.claim_key is not None:
                await self._release(f.claim_key)
            self._after(f)

    def _after(self, f: _Finished) -> None:
        """``f`` is settled: wake a duplicate waiting on its claim, tell the worker."""
        self._after_all([f], [f.d])

    def _after_all(self, batch: list[_Finished], inputs: list[Delivery]) -> None:
        """``batch`` (whose inputs are ``inputs``) is settled: ``_after`` for each, at once."""
        if self._unsettled:
            for f in batch:
                if f.claim_key is not None:
                    waiter = self._unsettled.pop(f.claim_key, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
        self.on_settled(inputs)

    async def _settled(self, claim_key: str) -> None:
        """Wait until the call holding ``claim_key`` in the outbox is settled."""
        waiter = self._unsettled.get(claim_key)
        if waiter is None:
            waiter = self._unsettled[claim_key] = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)

    async def _bounded(self, coro: Awaitable[Any]) -> Any:
        """Await the handler's call under ``asyncio.timeout`` (no worker deadlines here)."""
        try:
            async with asyncio.timeout(self.spec.timeout):
                return await coro
        except TimeoutError as exc:
            raise self._timeout_error() from exc

    def _timeout_error(self) -> TimeoutError:
        return TimeoutError(
            f"agent {self.spec.name!r} exceeded its timeout of {self.spec.timeout}s"
        )

    def _context(
        self, d: Delivery, correlation: str, message_id: str, key: str | None, attempt: int
    ) -> Context:
        return Context(
            message_id=message_id,
            attempt=attempt,
            key=key,
            correlation_id=correlation,
            headers=d.headers,
            topic=d.topic,
            agent=self.spec.name,
            _base_logger=self.logger,
            _heartbeat=d.in_progress,
        )

    async def _failed(
        self, d: Delivery, exc: Exception, attempt: int, claim_key: str | None
    ) -> None:
        policy = self.spec.retry
        if isinstance(exc, Retry):
            retry = attempt < policy.max_attempts
            delay = exc.delay if exc.delay is not None else policy.delay(attempt)
        else:
            retry = policy.should_retry(attempt, exc)
            delay = policy.delay(attempt)
        if not retry:
            reason = (
                envelope.REASON_MAX_ATTEMPTS
                if attempt >= policy.max_attempts
                else envelope.REASON_GAVE_UP
            )
            await self._dead_letter(d, reason, exc, attempt, claim_key)
            return
        self.logger.info(
            "attempt %d of %s failed (%s: %s); retrying in %.2fs",
            attempt,
            d.topic,
            type(exc).__name__,
            exc,
            delay,
        )
        if claim_key is not None:
            await self._release(claim_key)
        self.stats.retried += 1
        self.stats.retry_due = max(self.stats.retry_due, time.monotonic() + delay)
        await d.nak(delay)

    async def _dead_letter(
        self,
        d: Delivery,
        reason: str,
        error: BaseException | str,
        attempt: int,
        claim_key: str | None,
    ) -> None:
        topic = self.spec.dlq or f"{d.topic}.dlq"
        headers = envelope.dlq_headers(
            d.headers,
            reason=reason,
            error=error,
            attempts=attempt,
            agent=self.spec.name,
            topic=d.topic,
            position=d.position,
        )
        headers.setdefault(envelope.ID, d.fallback_id)
        # The DLQ copy's dedup id comes from the broker position, so a retried copy is dropped.
        msg = OutMessage(topic, d.payload, headers, d.key, dedup_id=f"{d.fallback_id}:dlq")
        try:
            await self.broker.publish([msg])
        except Exception as exc:
            # Never lose it: if the DLQ copy cannot be written, leave the message to come back.
            self.logger.error("dead-letter publish to %s failed (%s); will retry", topic, exc)
            if claim_key is not None:
                await self._release(claim_key)
            await d.nak(min(max(self.spec.retry.base_delay(attempt), 1.0), 30.0))
            return
        if claim_key is not None and self.store is not None:
            await self.store.forget(claim_key)
        self.logger.warning(
            "dead-lettered a message of %s to %s: %s (%s)", d.topic, topic, reason, error
        )
        self.stats.dead_lettered += 1
        await d.term()

    async def _release(self, claim_key: str) -> None:
        if self.store is None:
            return
        try:
            await self.store.release(claim_key)
        except Exception as exc:  # the lease expires by itself; a failed release only delays
            self.logger.warning("could not release idempotency claim %s: %s", claim_key, exc)
