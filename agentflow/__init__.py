"""agentflow: event-driven agentic workflows on NATS JetStream, Kafka or an embedded broker."""

from agentflow._native import __version__
from agentflow.agent import AgentSpec
from agentflow.app import App
from agentflow.context import Context
from agentflow.errors import AgentflowError, ConfigError, Reject, Retry
from agentflow.retry import RetryPolicy

__all__ = [
    "AgentSpec",
    "AgentflowError",
    "App",
    "ConfigError",
    "Context",
    "Reject",
    "Retry",
    "RetryPolicy",
    "__version__",
]
