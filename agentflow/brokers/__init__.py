"""Message backbones behind one protocol; :func:`from_url` picks one by URL scheme."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from agentflow.brokers.base import (
    Broker,
    BrokerError,
    Delivery,
    OutMessage,
    PublishError,
    StoredMessage,
    Subscription,
)

__all__ = [
    "Broker",
    "BrokerError",
    "Delivery",
    "OutMessage",
    "PublishError",
    "StoredMessage",
    "Subscription",
    "from_url",
]

# scheme -> "module:Class"; imported lazily so memory:// never imports nats-py or aiokafka.
_SCHEMES = {
    "memory": "agentflow.brokers.memory:MemoryBroker",
    "nats": "agentflow.brokers.nats:NatsBroker",
    "tls": "agentflow.brokers.nats:NatsBroker",
    "kafka": "agentflow.brokers.kafka:KafkaBroker",
}


def from_url(url: str) -> Broker:
    """Return an (unconnected) broker for ``url``; raises BrokerError for an unknown scheme."""
    scheme = urlsplit(url).scheme
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise BrokerError(f"unsupported broker URL {url!r}: scheme must be one of {known}")
    module_name, cls_name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except ImportError as exc:
        raise BrokerError(f"broker URL {url!r} needs {exc.name or module_name}: {exc}") from exc
    broker: Broker = cls(url)
    return broker
