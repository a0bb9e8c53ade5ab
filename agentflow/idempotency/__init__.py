"""Idempotency stores behind one protocol; :func:`store_from_url` picks one by URL."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from agentflow.idempotency.base import Claim, ClaimState, IdempotencyStore

__all__ = ["Claim", "ClaimState", "IdempotencyStore", "store_from_url"]

# scheme -> "module:factory"; the factory takes the whole URL and returns an unopened store.
# Imported lazily so that memory:// never pulls in nats-py or redis. To add a backend, add a
# line here and a ``from_url(url)`` in its module.
_SCHEMES: dict[str, str] = {
    "memory": "agentflow.idempotency.memory:from_url",
    "sqlite": "agentflow.idempotency.sqlite:from_url",
    "nats-kv": "agentflow.idempotency.nats_kv:from_url",
    "redis": "agentflow.idempotency.redis:from_url",
    "rediss": "agentflow.idempotency.redis:from_url",
}


def store_from_url(url: str, **context: Any) -> IdempotencyStore:
    """Return an (unopened) idempotency store for ``url``; ValueError for an unknown scheme.

    ``context`` (``broker``, ``app_name``) is passed to factories that declare those parameters,
    e.g. a NATS KV store reuses the app's broker connection.
    """
    target = _SCHEMES.get(urlsplit(url).scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(
            f"unsupported idempotency store URL {url!r}: scheme must be one of {known}"
        )
    module_name, factory_name = target.split(":")
    factory: Callable[..., IdempotencyStore] = getattr(
        importlib.import_module(module_name), factory_name
    )
    accepted = inspect.signature(factory).parameters
    return factory(url, **{k: v for k, v in context.items() if k in accepted})
