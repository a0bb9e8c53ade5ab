"""Parse a ``nats://`` / ``tls://`` broker URL (plus environment) into connection settings.

URL form::

    nats://[user:password@|token@]host:port[,host:port...][?option=value&...]

Query options (environment fallbacks in brackets):

- ``creds`` (``AGENTFLOW_NATS_CREDS``): path of a ``.creds`` file (JWT + nkey seed).
- ``nkey`` (``AGENTFLOW_NATS_NKEY_SEED``): path of an nkey seed file, or the seed itself.
- ``token`` (``AGENTFLOW_NATS_TOKEN``), ``user``/``password`` (``AGENTFLOW_NATS_USER``/
  ``AGENTFLOW_NATS_PASSWORD``): plain credentials when they are not in the URL.
- ``tls_ca``/``tls_cert``/``tls_key``/``tls_hostname`` (``AGENTFLOW_NATS_TLS_CA``/``_CERT``/
  ``_KEY``/``_HOSTNAME``): TLS trust and client certificate; any of them (or ``tls://``)
  turns TLS on.
- Stream mapping: ``stream_prefix`` (``AF_``), ``retention`` (``limits``|``interest``|
  ``workqueue``), ``storage`` (``file``|``memory``), ``max_age`` (``7d``; ``0`` = forever),
  ``max_bytes`` (``-1``), ``replicas`` (``1``), ``duplicate_window`` (``2m``).
- Consumers and publishing: ``max_ack_pending`` (group-wide, default
  ``max(1000, 16 * max_in_flight)``), ``publish_timeout`` (``30s``), ``publish_window``
  (``1024`` un-acknowledged publishes).
- Connection: ``connect_timeout`` (``2s``), ``reconnect_max_wait`` (``5s``), ``name``.

Durations accept ``ms``, ``s``, ``m``, ``h`` and ``d`` suffixes or plain seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from agentflow.brokers.base import BrokerError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_ENV = {
    "creds": "AGENTFLOW_NATS_CREDS",
    "nkey": "AGENTFLOW_NATS_NKEY_SEED",
    "token": "AGENTFLOW_NATS_TOKEN",
    "user": "AGENTFLOW_NATS_USER",
    "password": "AGENTFLOW_NATS_PASSWORD",
    "tls_ca": "AGENTFLOW_NATS_TLS_CA",
    "tls_cert": "AGENTFLOW_NATS_TLS_CERT",
    "tls_key": "AGENTFLOW_NATS_TLS_KEY",
    "tls_hostname": "AGENTFLOW_NATS_TLS_HOSTNAME",
}
_STREAM_OPTIONS = {
    "stream_prefix",
    "retention",
    "storage",
    "max_age",
    "max_bytes",
    "replicas",
    "duplicate_window",
}
_OTHER_OPTIONS = {
    "max_ack_pending",
    "publish_timeout",
    "publish_window",
    "connect_timeout",
    "reconnect_max_wait",
    "name",
}
_KNOWN = set(_ENV) | _STREAM_OPTIONS | _OTHER_OPTIONS


def parse_duration(value: str, option: str) -> float:
    """Return seconds for ``"500ms"``, ``"30s"``, ``"2m"``, ``"7d"`` or a plain number."""
    match = _DURATION.match(value)
    if match is None:
        raise BrokerError(f"NATS option {option}={value!r} is not a duration (e.g. 30s, 2m, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _parse_int(value: str, option: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BrokerError(f"NATS option {option}={value!r} is not an integer") from None


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How topics map onto JetStream streams agentflow creates."""

    prefix: str = "AF_"
    retention: str = "limits"
    storage: str = "file"
    max_age: float = 7 * 86400.0
    max_bytes: int = -1
    replicas: int = 1
    duplicate_window: float = 120.0


@dataclass(slots=True)
class NatsSettings:
    """Everything needed to connect to NATS and lay out streams and consumers."""

    url: str
    servers: list[str]
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey_seed_file: str | None = None
    nkey_seed: str | None = None
    tls: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    name: str | None = None
    connect_timeout: float = 2.0
    reconnect_max_wait: float = 5.0
    publish_timeout: float = 30.0
    publish_window: int = 1024
    max_ack_pending: int | None = None
    streams: StreamSettings = field(default_factory=StreamSettings)

    @property
    def display_url(self) -> str:
        """The URL with secrets masked, for log lines and error messages."""
        return redact_url(self.url)

    def connect_options(self) -> dict[str, object]:
        """Keyword arguments for ``nats.aio.client.Client.connect`` (auth and TLS only)."""
        options: dict[str, object] = {"servers": list(self.servers)}
        if self.user is not None:
            options["user"] = self.user
        if self.password is not None:
            options["password"] = self.password
        if self.token is not None:
            options["token"] = self.token
        if self.creds is not None:
            options["user_credentials"] = self.creds
        if self.nkey_seed_file is not None:
            options["nkeys_seed"] = self.nkey_seed_file
        if self.nkey_seed is not None:
            options["nkeys_seed_str"] = self.nkey_seed
        if self.tls is not None:
            options["tls"] = self.tls
        if self.tls_hostname is not None:
            options["tls_hostname"] = self.tls_hostname
        if self.name is not None:
            options["name"] = self.name
        return options


def redact_url(url: str) -> str:
    """Mask the password or token of a NATS URL and secret query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{hosts}" if user else f"***@{hosts}"
    query = "&".join(
        f"{k}=***" if k in {"token", "password", "nkey"} else f"{k}={quote(v, safe='/.-_:')}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _split_netloc(netloc: str, url: str) -> tuple[str | None, list[str]]:
    """Split ``userinfo@h1:p1,h2:p2`` into the userinfo and the host list."""
    userinfo: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
    hosts = [h.strip() for h in netloc.split(",") if h.strip()]
    if not hosts:
        raise BrokerError(f"NATS URL {redact_url(url)!r} names no host")
    for host in hosts:
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
        if not name or (port and not port.isdigit()):
            raise BrokerError(f"NATS URL {redact_url(url)!r} has a bad host:port {host!r}")
    return userinfo, hosts


def _tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """Build a client TLS context trusting ``ca`` and presenting ``cert``/``key`` if given."""
    for label, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path is not None and not Path(path).is_file():
            raise BrokerError(f"NATS {label} file {path!r} does not exist")
    if key is not None and cert is None:
        raise BrokerError("NATS tls_key was given without tls_cert")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise BrokerError(f"NATS TLS files could not be loaded: {exc}") from None
    return context


def parse_nats_url(url: str, env: Mapping[str, str] | None = None) -> NatsSettings:
    """Parse ``url`` (and ``AGENTFLOW_NATS_*`` variables of ``env``) into :class:`NatsSettings`."""
    environ = os.environ if env is None else env
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls"):
        raise BrokerError(f"NATS URL {redact_url(url)!r} must start with nats:// or tls://")
    userinfo, hosts = _split_netloc(parts.netloc, url)
    query: dict[str, str] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k not in _KNOWN:
            known = ", ".join(sorted(_KNOWN))
            raise BrokerError(f"unknown NATS URL option {k!r} in {redact_url(url)!r}: use {known}")
        query[k] = v

    def option(name: str) -> str | None:
        # The URL wins over the environment so one process can talk to two clusters.
        if name in query:
            return query[name]
        env_name = _ENV.get(name)
        value = environ.get(env_name) if env_name else None
        return value or None

    settings = NatsSettings(url=url, servers=[])
    if userinfo:
        if ":" in userinfo:
            user, password = userinfo.split(":", 1)
            settings.user, settings.password = unquote(user), unquote(password)
        else:
            settings.token = unquote(userinfo)
    settings.user = settings.user or option("user")
    settings.password = settings.password or option("password")
    settings.token = settings.token or option("token")
    settings.creds = option("creds")
    if settings.creds is not None and not Path(settings.creds).is_file():
        raise BrokerError(f"NATS creds file {settings.creds!r} does not exist")
    nkey = option("nkey")
    if nkey is not None:
        if Path(nkey).is_file():
            settings.nkey_seed_file = nkey
        elif nkey.startswith("S") and len(nkey) > 50:
            settings.nkey_seed = nkey
        else:
            raise BrokerError("NATS nkey option is neither a seed file nor an nkey seed")
    if (settings.creds or nkey) is not None:
        # nats-py signs the server's nonce with the nkeys package, an optional extra.
        if importlib.util.find_spec("nkeys") is None:
            raise BrokerError(
                "NATS nkey/creds authentication needs the 'nkeys' package "
                "(pip install 'nats-py[nkeys]')"
            )

    tls_ca, tls_cert, tls_key = option("tls_ca"), option("tls_cert"), option("tls_key")
    settings.tls_hostname = option("tls_hostname")
    use_tls = parts.scheme == "tls" or any((tls_ca, tls_cert, tls_key))
    if use_tls:
        settings.tls = _tls_context(tls_ca, tls_cert, tls_key)
    scheme = "tls" if use_tls else "nats"
    settings.servers = [f"{scheme}://{h}" if ":" in h else f"{scheme}://{h}:4222" for h in hosts]

    if "name" in query:
        settings.name = query["name"]
    if "connect_timeout" in query:
        settings.connect_timeout = parse_duration(query["connect_timeout"], "connect_timeout")
    if "reconnect_max_wait" in query:
        settings.reconnect_max_wait = parse_duration(
            query["reconnect_max_wait"], "reconnect_max_wait"
        )
    if "publish_timeout" in query:
        settings.publish_timeout = parse_duration(query["publish_timeout"], "publish_timeout")
    if "publish_window" in query:
        settings.publish_window = max(1, _parse_int(query["publish_window"], "publish_window"))
    if "max_ack_pending" in query:
        settings.max_ack_pending = _parse_int(query["max_ack_pending"], "max_ack_pending")
    settings.streams = _stream_settings(query)
    return settings


def _stream_settings(query: Mapping[str, str]) -> StreamSettings:
    """Read the stream-mapping options of the URL query."""
    defaults = StreamSettings()
    retention = query.get("retention", defaults.retention)
    if retention not in ("limits", "interest", "workqueue"):
        raise BrokerError(f"NATS retention={retention!r}: use limits, interest or workqueue")
    storage = query.get("storage", defaults.storage)
    if storage not in ("file", "memory"):
        raise BrokerError(f"NATS storage={storage!r}: use file or memory")
    prefix = query.get("stream_prefix", defaults.prefix)
    if not re.fullmatch(r"[A-Za-z0-9_-]*", prefix):
        raise BrokerError(f"NATS stream_prefix={prefix!r} may hold only letters, digits, _ and -")
    replicas = _parse_int(query.get("replicas", str(defaults.replicas)), "replicas")
    if not 1 <= replicas <= 5:
        raise BrokerError(f"NATS replicas={replicas} must be between 1 and 5")
    return StreamSettings(
        prefix=prefix,
        retention=retention,
        storage=storage,
        max_age=parse_duration(query["max_age"], "max_age")
        if "max_age" in query
        else defaults.max_age,
        max_bytes=_parse_int(query.get("max_bytes", str(defaults.max_bytes)), "max_bytes"),
        replicas=replicas,
        duplicate_window=parse_duration(query["duplicate_window"], "duplicate_window")
        if "duplicate_window" in query
        else defaults.duplicate_window,
    )
