"""Settings of a ``kafka://`` broker URL: bootstrap servers, SASL/SSL and tuning knobs.

``kafka://[user:password@]host:port[,host:port...][?name=value&...]``

Every setting can also come from the environment as ``AGENTFLOW_KAFKA_<NAME>`` (upper case),
e.g. ``AGENTFLOW_KAFKA_SASL_PASSWORD``; the URL wins over the environment. Unknown names are
an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from agentflow.brokers.base import BrokerError

__all__ = ["KafkaSettings", "parse_duration", "parse_kafka_url", "redact"]

DEFAULT_PORT = 9092
ENV_PREFIX = "AGENTFLOW_KAFKA_"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Topic-level configs passed to CreateTopics, given as ``topic.<kafka config>=value``.
TOPIC_CONFIG_PREFIX = "topic."


@dataclass(slots=True)
class KafkaSettings:
    """Everything a KafkaBroker needs from its URL and environment."""

    url: str
    bootstrap: list[str]
    # Empty = inferred: SASL_SSL / SASL_PLAINTEXT / SSL / PLAINTEXT from what else is set.
    security_protocol: str = ""
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    client_id: str = "agentflow"
    # Topic creation: replication None = min(3, brokers in the cluster).
    partitions: int = 3
    replication: int | None = None
    topic_configs: dict[str, str] = field(default_factory=dict)
    # Nominal delay of each retry tier <topic>.retry.<n>, n = 1..len (seconds, ascending).
    retry_delays: tuple[float, ...] = (1.0, 10.0, 60.0)
    # Consumer tuning.
    commit_interval: float = 1.0
    drain_timeout: float = 10.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    fetch_max_wait_ms: int = 100
    metadata_max_age_ms: int = 5_000
    auto_offset_reset: str = "earliest"
    group_instance_id: str | None = None
    # Producer tuning.
    max_request_size: int = 1_048_576
    # The outbox already hands the producer whole batches, so lingering only adds latency
    # (2 ms of it cost 3-4 ms at the median at 500 msg/s); ?linger_ms=N brings it back.
    linger_ms: int = 0
    # aiokafka keeps one produce request in flight per broker, with one record batch per
    # partition: a flush larger than a batch would wait a round trip per extra batch.
    max_batch_size: int = 262_144
    dedup_window: float = 120.0
    # Connection.
    request_timeout_ms: int = 30_000
    connect_timeout: float = 10.0

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by aiokafka's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": ",".join(self.bootstrap),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context from the CA/cert/key settings (system CAs when no CA file is given)."""
        ctx = ssl.create_default_context(cafile=self.ssl_cafile)
        ctx.check_hostname = self.ssl_check_hostname
        if not self.ssl_check_hostname:
            ctx.verify_mode = ssl.CERT_NONE
        if self.ssl_certfile:
            try:
                ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, self.ssl_password)
            except (OSError, ssl.SSLError) as exc:
                raise BrokerError(
                    f"cannot load the TLS client certificate {self.ssl_certfile!r} for "
                    f"{redact(self.url)}: {exc}"
                ) from None
        return ctx


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``"1.5"``, ``"500ms"``, ``"10s"``, ``"2m"`` or ``"1h"``; else ValueError."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 500ms, 10s, 2m)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {text!r}")
    return value


def _delays(text: str) -> tuple[float, ...]:
    delays = tuple(parse_duration(part) for part in text.split(",") if part.strip())
    if not delays:
        raise ValueError("needs at least one delay")
    if list(delays) != sorted(delays):
        raise ValueError(f"delays must ascend, got {text!r}")
    return delays


def _protocol(text: str) -> str:
    value = text.strip().upper().replace("-", "_")
    if value not in PROTOCOLS:
        raise ValueError(f"must be one of {', '.join(PROTOCOLS)}, got {text!r}")
    return value


# name -> (field, converter); the URL/env name doubles as the field name unless given.
_OPTIONS: dict[str, tuple[str, Any]] = {
    "security_protocol": ("security_protocol", _protocol),
    "sasl_mechanism": ("sasl_mechanism", lambda s: s.strip().upper()),
    "sasl_username": ("sasl_username", str),
    "sasl_password": ("sasl_password", str),
    "ssl": ("_ssl", _boolean),
    "ssl_cafile": ("ssl_cafile", str),
    "ssl_certfile": ("ssl_certfile", str),
    "ssl_keyfile": ("ssl_keyfile", str),
    "ssl_password": ("ssl_password", str),
    "ssl_check_hostname": ("ssl_check_hostname", _boolean),
    "client_id": ("client_id", str),
    "partitions": ("partitions", _positive_int),
    "replication": ("replication", _positive_int),
    "retry_delays": ("retry_delays", _delays),
    "commit_interval": ("commit_interval", parse_duration),
    "drain_timeout": ("drain_timeout", parse_duration),
    "session_timeout_ms": ("session_timeout_ms", _positive_int),
    "heartbeat_interval_ms": ("heartbeat_interval_ms", _positive_int),
    "max_poll_interval_ms": ("max_poll_interval_ms", _positive_int),
    "fetch_max_wait_ms": ("fetch_max_wait_ms", _positive_int),
    "metadata_max_age_ms": ("metadata_max_age_ms", _positive_int),
    "auto_offset_reset": ("auto_offset_reset", lambda s: s.strip().lower()),
    "group_instance_id": ("group_instance_id", str),
    "max_request_size": ("max_request_size", _positive_int),
    "linger_ms": ("linger_ms", int),
    "max_batch_size": ("max_batch_size", _positive_int),
    "dedup_window": ("dedup_window", parse_duration),
    "request_timeout_ms": ("request_timeout_ms", _positive_int),
    "connect_timeout": ("connect_timeout", parse_duration),
}


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for error messages and logs)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    query = re.sub(r"((?:sasl|ssl)_password=)[^&]*", r"\1***", parts.query)
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _bootstrap(hosts: str, url: str) -> list[str]:
    servers: list[str] = []
    for part in hosts.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [::1]:9092
            host, _, rest = part[1:].partition("]")
            port_text = rest.lstrip(":")
            host = f"[{host}]"
        else:
            host, sep, port_text = part.rpartition(":")
            if not sep:
                host, port_text = part, ""
        if not host:
            raise BrokerError(f"invalid Kafka URL {redact(url)}: empty host in {part!r}")
        try:
            port = int(port_text) if port_text else DEFAULT_PORT
        except ValueError:
            raise BrokerError(f"invalid Kafka URL {redact(url)}: bad port in {part!r}") from None
        if not 0 < port < 65536:
            raise BrokerError(f"invalid Kafka URL {redact(url)}: port out of range in {part!r}")
        servers.append(f"{host}:{port}")
    if not servers:
        raise BrokerError(f"invalid Kafka URL {redact(url)}: no host (kafka://host:port)")
    return servers


def parse_kafka_url(url: str, env: Mapping[str, str] | None = None) -> KafkaSettings:
    """Parse ``url`` (plus ``AGENTFLOW_KAFKA_*`` from ``env``) into settings; BrokerError if bad."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise BrokerError(f"invalid Kafka URL {redact(url)}: scheme must be kafka://")
    if parts.path not in ("", "/"):
        raise BrokerError(f"invalid Kafka URL {redact(url)}: unexpected path {parts.path!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    settings = KafkaSettings(url=url, bootstrap=_bootstrap(hosts, url))

    raw: dict[str, str] = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            option = name[len(ENV_PREFIX) :].lower()
            if option in _OPTIONS or option.startswith(TOPIC_CONFIG_PREFIX):
                raw[option] = value
    if userinfo:
        user, sep, password = userinfo.partition(":")
        raw["sasl_username"] = unquote(user)
        if sep:
            raw["sasl_password"] = unquote(password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _OPTIONS and not name.startswith(TOPIC_CONFIG_PREFIX):
            known = ", ".join(sorted(_OPTIONS))
            raise BrokerError(
                f"invalid Kafka URL {redact(url)}: unknown option {name!r} "
                f"(known: {known}, topic.<config>)"
            )
        raw[name] = value

    want_ssl = False
    for name, value in raw.items():
        if name.startswith(TOPIC_CONFIG_PREFIX):
            settings.topic_configs[name[len(TOPIC_CONFIG_PREFIX) :]] = value
            continue
        attr, convert = _OPTIONS[name]
        try:
            converted = convert(value)
        except ValueError as exc:
            raise BrokerError(f"invalid Kafka URL {redact(url)}: {name}: {exc}") from None
        if attr == "_ssl":
            want_ssl = bool(converted)
        else:
            setattr(settings, attr, converted)
    _check(settings, want_ssl or any(k.startswith("ssl_") for k in raw))
    return settings


def _check(s: KafkaSettings, ssl_wanted: bool) -> None:
    where = f"invalid Kafka URL {redact(s.url)}"
    if s.sasl_username is not None and s.sasl_mechanism is None:
        s.sasl_mechanism = "PLAIN"
    if s.sasl_mechanism is not None:
        if s.sasl_mechanism not in SASL_MECHANISMS:
            raise BrokerError(
                f"{where}: sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}"
            )
        if s.sasl_username is None or s.sasl_password is None:
            raise BrokerError(f"{where}: SASL {s.sasl_mechanism} needs a username and a password")
    if not s.security_protocol:
        if s.sasl_mechanism is not None:
            s.security_protocol = "SASL_SSL" if ssl_wanted else "SASL_PLAINTEXT"
        else:
            s.security_protocol = "SSL" if ssl_wanted else "PLAINTEXT"
    uses_sasl = s.security_protocol.startswith("SASL")
    if uses_sasl and s.sasl_mechanism is None:
        raise BrokerError(f"{where}: {s.security_protocol} needs sasl_mechanism and credentials")
    if not uses_sasl and s.sasl_mechanism is not None:
        raise BrokerError(
            f"{where}: SASL credentials given but security_protocol is {s.security_protocol}"
        )
    if s.auto_offset_reset not in ("earliest", "latest"):
        raise BrokerError(f"{where}: auto_offset_reset must be earliest or latest")
    if s.heartbeat_interval_ms >= s.session_timeout_ms:
        raise BrokerError(f"{where}: heartbeat_interval_ms must be below session_timeout_ms")
