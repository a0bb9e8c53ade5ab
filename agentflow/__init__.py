"""agentflow: event-driven agentic workflows on NATS JetStream, Kafka or an embedded broker."""

from agentflow._native import __version__

__all__ = ["__version__"]
