"""Parsing of ``nats://`` URLs and ``AGENTFLOW_NATS_*`` variables (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.brokers.base import BrokerError
from agentflow.brokers.nats_config import parse_duration, parse_nats_url, redact_url
from agentflow.brokers.nats_streams import safe_name, validate_subject


def test_hosts_ports_and_cluster_lists() -> None:
    s = parse_nats_url("nats://a:4223,b,c:5000", env={})
    assert s.servers == ["nats://a:4223", "nats://b:4222", "nats://c:5000"]
    assert s.tls is None and s.user is None and s.token is None


def test_credentials_from_url_are_percent_decoded() -> None:
    s = parse_nats_url("nats://al%40ice:p%3Aw%2F@h:4222", env={})
    assert (s.user, s.password) == ("al@ice", "p:w/")
    assert parse_nats_url("nats://tok3n@h", env={}).token == "tok3n"
    assert parse_nats_url("nats://h?token=abc", env={}).token == "abc"


def test_environment_fallbacks_and_url_precedence() -> None:
    env = {"AGENTFLOW_NATS_USER": "envuser", "AGENTFLOW_NATS_PASSWORD": "envpw"}
    s = parse_nats_url("nats://h", env=env)
    assert (s.user, s.password) == ("envuser", "envpw")
    s = parse_nats_url("nats://u:p@h", env=env)
    assert (s.user, s.password) == ("u", "p")
    s = parse_nats_url("nats://h?token=url", env={"AGENTFLOW_NATS_TOKEN": "env"})
    assert s.token == "url"


def test_nkey_seed_string_or_file_and_creds(tmp_path: Path) -> None:
    seed = "SUACGM4YJDCK4LTAQ3AVXHRQNEC67LYMHHMY6SKHTFILZHFMRYHNSK4MZE"
    s = parse_nats_url("nats://h", env={"AGENTFLOW_NATS_NKEY_SEED": seed})
    assert s.nkey_seed == seed and s.nkey_seed_file is None
    f = tmp_path / "u.nk"
    f.write_text(seed)
    assert parse_nats_url(f"nats://h?nkey={f}", env={}).nkey_seed_file == str(f)
    creds = tmp_path / "app.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    assert parse_nats_url("nats://h", env={"AGENTFLOW_NATS_CREDS": str(creds)}).creds == str(creds)
    with pytest.raises(BrokerError, match="creds file"):
        parse_nats_url("nats://h?creds=/nope.creds", env={})
    with pytest.raises(BrokerError, match="nkey"):
        parse_nats_url("nats://h?nkey=not-a-seed", env={})


def test_tls_scheme_and_options(tmp_path: Path) -> None:
    s = parse_nats_url("tls://h:4443", env={})
    assert s.tls is not None and s.servers == ["tls://h:4443"]
    with pytest.raises(BrokerError, match="tls_ca"):
        parse_nats_url("nats://h?tls_ca=/no/such/ca.pem", env={})
    with pytest.raises(BrokerError, match="tls_ca"):
        parse_nats_url("nats://h", env={"AGENTFLOW_NATS_TLS_CA": "/no/such/ca.pem"})
    s = parse_nats_url("tls://h?tls_hostname=nats.internal", env={})
    assert s.tls_hostname == "nats.internal"


def test_stream_and_client_options() -> None:
    s = parse_nats_url(
        "nats://h?max_age=1d&duplicate_window=30s&replicas=3&retention=interest&storage=memory"
        "&max_bytes=1000&stream_prefix=APP_&max_ack_pending=50&publish_timeout=500ms"
        "&publish_window=64&connect_timeout=1&reconnect_max_wait=10s&name=billing",
        env={},
    )
    st = s.streams
    assert (st.max_age, st.duplicate_window, st.replicas) == (86400, 30, 3)
    assert (st.retention, st.storage, st.max_bytes, st.prefix) == (
        "interest",
        "memory",
        1000,
        "APP_",
    )
    assert (s.max_ack_pending, s.publish_timeout, s.publish_window) == (50, 0.5, 64)
    assert (s.connect_timeout, s.reconnect_max_wait, s.name) == (1, 10, "billing")
    defaults = parse_nats_url("nats://h", env={}).streams
    assert (defaults.max_age, defaults.duplicate_window, defaults.retention) == (
        7 * 86400,
        120,
        "limits",
    )


@pytest.mark.parametrize(
    "url",
    [
        "nats://",
        "nats://h:port",
        "nats://h?unknown=1",
        "nats://h?max_age=soon",
        "nats://h?replicas=9",
        "nats://h?retention=forever",
        "nats://h?storage=tape",
        "nats://h?stream_prefix=a.b",
        "http://h",
    ],
)
def test_bad_urls_are_broker_errors(url: str) -> None:
    with pytest.raises(BrokerError):
        parse_nats_url(url, env={})


def test_durations() -> None:
    assert parse_duration("250ms", "x") == 0.25
    assert parse_duration("2m", "x") == 120
    assert parse_duration("1.5h", "x") == 5400
    assert parse_duration("3", "x") == 3


def test_redaction_hides_secrets() -> None:
    assert redact_url("nats://u:secret@h:4222") == "nats://u:***@h:4222"
    assert redact_url("nats://tok@h") == "nats://***@h"
    assert "abc" not in redact_url("nats://h?token=abc&max_age=1d")
    assert "max_age=1d" in redact_url("nats://h?token=abc&max_age=1d")


def test_names_and_subjects() -> None:
    assert safe_name("plain_name-1") == "plain_name-1"
    a, b = safe_name("app.agent"), safe_name("app_agent")
    assert a != b and a.startswith("app_agent_")
    assert len(safe_name("x" * 500)) <= 200
    validate_subject("a.b.c", wildcards=False)
    validate_subject("a.*.>", wildcards=True)
    for bad in ("", "a..b", "a b", "a.>.b", "a.b*"):
        with pytest.raises(BrokerError):
            validate_subject(bad, wildcards=True)
    with pytest.raises(BrokerError):
        validate_subject("a.*", wildcards=False)
