"""Idempotency stores behind one protocol; :func:`store_from_url` picks one by URL."""

from __future__ import annotations

from agentflow.idempotency.base import Claim, ClaimState, IdempotencyStore

__all__ = ["Claim", "ClaimState", "IdempotencyStore"]
