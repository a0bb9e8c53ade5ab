"""Retry policies: how many attempts, how long to wait between them, which errors retry."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed message is tried again.

    ``max_attempts`` counts the first attempt. ``backoff`` is either a fixed list of delays in
    seconds (the last one repeats) or, through :meth:`exponential`, ``initial * multiplier**n``
    capped at ``max_delay`` with +/- ``jitter`` (a fraction) of randomness.
    """

    max_attempts: int = 5
    backoff: Sequence[float] = (0.5, 2.0, 10.0)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()
    exponential_initial: float | None = None
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.0
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if any(d < 0 for d in self.backoff):
            raise ValueError(f"RetryPolicy.backoff delays must be >= 0, got {list(self.backoff)}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter}")
        object.__setattr__(self, "backoff", tuple(float(d) for d in self.backoff))

    @classmethod
    def exponential(
        cls,
        initial: float = 0.5,
        multiplier: float = 2.0,
        max_delay: float = 30.0,
        jitter: float = 0.2,
        max_attempts: int = 5,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        give_up_on: tuple[type[BaseException], ...] = (),
    ) -> RetryPolicy:
        """Exponential backoff with jitter: ``initial * multiplier**(attempt-1)``, capped."""
        if initial < 0 or multiplier < 1 or max_delay < 0:
            raise ValueError("exponential backoff needs initial >= 0, multiplier >= 1, max >= 0")
        return cls(
            max_attempts=max_attempts,
            backoff=(),
            retry_on=retry_on,
            give_up_on=give_up_on,
            exponential_initial=initial,
            multiplier=multiplier,
            max_delay=max_delay,
            jitter=jitter,
        )

    @classmethod
    def none(cls) -> RetryPolicy:
        """No retries: the first failure dead-letters the message."""
        return cls(max_attempts=1, backoff=())

    def base_delay(self, attempt: int) -> float:
        """Delay before the attempt after ``attempt`` (1-based), without jitter."""
        n = max(attempt, 1) - 1
        if self.exponential_initial is not None:
            return float(min(self.exponential_initial * self.multiplier**n, self.max_delay))
        if not self.backoff:
            return 0.0
        return self.backoff[min(n, len(self.backoff) - 1)]

    def delay(self, attempt: int) -> float:
        """Delay before the attempt after ``attempt``, jitter applied."""
        base = self.base_delay(attempt)
        if self.jitter and base:
            base *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return max(base, 0.0)

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        """Whether a failure of ``attempt`` with ``exc`` gets another attempt."""
        if attempt >= self.max_attempts:
            return False
        if self.give_up_on and isinstance(exc, self.give_up_on):
            return False
        return isinstance(exc, self.retry_on)
