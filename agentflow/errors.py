"""Exceptions a handler raises to steer delivery, and the framework's own errors."""

from __future__ import annotations


class AgentflowError(Exception):
    """Base class of agentflow's own errors."""


class ConfigError(AgentflowError):
    """An agent, app or workflow is configured wrongly (names what and where)."""


class Retry(Exception):
    """Raised by a handler: try again after ``delay`` seconds (counts as an attempt)."""

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class Reject(Exception):
    """Raised by a handler: never retry this message; dead-letter it now."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason


class NoRoute(AgentflowError):
    """No route matched an output message and there is no default route."""


class RouteError(AgentflowError):
    """A route condition failed to evaluate."""
