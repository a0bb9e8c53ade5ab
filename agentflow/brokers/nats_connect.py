"""Open a NATS connection: bounded at start-up, reconnecting forever afterwards.

The first connect tries every server twice and fails with one clear :class:`BrokerError`
(refused, timed out, authorization, TLS) instead of nats-py's endless retry or its traceback
logging. Once connected, the client reconnects forever with capped, jittered exponential
back-off and logs one line per outage rather than one per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from agentflow.brokers.base import BrokerError
from agentflow.brokers.nats_config import NatsSettings
from agentflow.brokers.nats_parser import use_frame_parser

log = logging.getLogger("agentflow.brokers.nats")


class _TlsOnlyClient(Client):
    """A client that refuses to talk to a server not offering TLS.

    nats-py upgrades to TLS only when the server *requires* it and otherwise carries on in
    plain text (credentials included), even for ``tls://`` URLs.
    """

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection:
            if info.get("tls_available") and not info.get("tls_required"):
                info["tls_required"] = True  # the server allows TLS: use it
            if not info.get("tls_required"):
                raise nats.errors.Error("nats: TLS was requested but the server does not offer it")
        await super()._process_info(info, initial_connection)


def describe(exc: BaseException) -> str:
    """A one-line reason for a connection failure."""
    if isinstance(exc, nats.errors.NoServersError):
        return "no server answered"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    return text or type(exc).__name__


def _telling(exc: BaseException) -> int:
    """How much a connection error tells the user (higher is more specific)."""
    text = str(exc).lower()
    if isinstance(exc, nats.errors.AuthorizationError) or "authoriz" in text:
        return 3
    if isinstance(exc, ssl.SSLError) or "tls" in text or "certificate" in text:
        return 2
    return 1


async def quiet_close(nc: Client) -> None:
    """Close a client, ignoring errors from a half-open connection."""
    try:
        await nc.close()
    except (nats.errors.Error, OSError, TimeoutError):
        pass


async def open_connection(
    settings: NatsSettings, closing: Callable[[], bool]
) -> tuple[Client, JetStreamContext]:
    """Connect to ``settings.servers`` and check JetStream; raise BrokerError on failure.

    ``closing()`` tells the callbacks that a disconnect is the broker's own shutdown.
    """
    s = settings
    quiet = True  # errors of the first connect go into the BrokerError, not the log
    first_errors: list[BaseException] = []
    failed_attempts = 0

    async def on_error(exc: Exception) -> None:
        nonlocal failed_attempts
        if quiet:
            first_errors.append(exc)
            return
        failed_attempts += 1
        # One line per outage, then one every 30 attempts: reconnecting is normal.
        level = logging.WARNING if failed_attempts % 30 == 1 else logging.DEBUG
        log.log(level, "NATS %s: %s", s.display_url, exc or type(exc).__name__)

    async def on_disconnect() -> None:
        if not (closing() or quiet):
            log.warning("NATS disconnected from %s; reconnecting", s.display_url)

    async def on_reconnect() -> None:
        nonlocal failed_attempts
        failed_attempts = 0
        log.warning("NATS reconnected to %s", s.display_url)

    def backoff(servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        # Least-failed server first; 0.1 s doubling up to reconnect_max_wait, jittered.
        server = min(servers, key=lambda srv: srv.reconnects)
        base = min(s.reconnect_max_wait, 0.1 * 2 ** min(server.reconnects, 16))
        return server, base * random.uniform(0.5, 1.0)

    nc = _TlsOnlyClient() if s.tls is not None else Client()
    use_frame_parser(nc)
    try:
        await asyncio.wait_for(
            nc.connect(
                **s.connect_options(),  # type: ignore[arg-type]
                connect_timeout=max(1, round(s.connect_timeout)),
                reconnect_time_wait=0.1,  # type: ignore[arg-type]
                max_reconnect_attempts=1,  # bounded start-up: each server twice
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                reconnect_to_server_handler=backoff,
                pending_size=8 * 1024 * 1024,
            ),
            timeout=s.connect_timeout * 2 * len(s.servers) + 1.0,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        # The most telling failure: auth beats TLS beats a reset/refusal beats "no servers".
        seen = [e for e in first_errors if not isinstance(e, nats.errors.NoServersError)]
        reason = max(reversed(seen), key=_telling) if seen else (nc.last_error or exc)
        await quiet_close(nc)
        raise BrokerError(
            f"cannot connect to NATS at {s.display_url}: {describe(reason)}"
        ) from None
    # Connected: from now on never give up reconnecting.
    nc.options["max_reconnect_attempts"] = -1
    quiet = False
    js = nc.jetstream(timeout=10.0)
    try:
        await js.account_info()
    except (ServiceUnavailableError, NotFoundError, nats.errors.NoRespondersError):
        await quiet_close(nc)
        raise BrokerError(
            f"NATS at {s.display_url} has no JetStream (start nats-server with -js)"
        ) from None
    except (APIError, nats.errors.Error) as exc:
        await quiet_close(nc)
        raise BrokerError(f"JetStream at {s.display_url} is unusable: {exc!r}") from None
    return nc, js
