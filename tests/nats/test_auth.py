"""Authentication and TLS against private nats-servers configured for each method."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agentflow.brokers.base import BrokerError, OutMessage
from agentflow.brokers.nats import NatsBroker
from agentflow.brokers.nats_config import parse_nats_url
from tests.nats.server import NatsServer

pytestmark = pytest.mark.nats

Make = Callable[..., NatsServer]


async def roundtrip(url: str, env: dict[str, str] | None = None) -> None:
    """Connect, publish one message and read it back."""
    b = NatsBroker(url)
    if env is not None:
        b.settings = parse_nats_url(url, env)
    await b.connect()
    try:
        await b.publish([OutMessage("auth.t", b"ok", {"af-id": os.urandom(8).hex()})])
        sub = await b.subscribe("auth.t", "g", ack_wait=5, max_in_flight=10, max_deliver=0)
        got = await sub.fetch(1, 5)
        assert got and got[0].payload == b"ok"
        await got[0].ack()
    finally:
        await b.close()


async def test_user_password_in_url_and_env(private_server: Make) -> None:
    server = private_server('authorization { user: "af", password: "p@ss:w/rd" }\n')
    await roundtrip(f"nats://af:p%40ss%3Aw%2Frd@127.0.0.1:{server.port}")
    await roundtrip(
        f"nats://127.0.0.1:{server.port}",
        env={"AGENTFLOW_NATS_USER": "af", "AGENTFLOW_NATS_PASSWORD": "p@ss:w/rd"},
    )
    with pytest.raises(BrokerError) as info:
        await NatsBroker(f"nats://af:wrong@127.0.0.1:{server.port}").connect()
    assert "Authorization" in str(info.value) and "wrong" not in str(info.value)


async def test_token_in_url_and_query(private_server: Make) -> None:
    server = private_server('authorization { token: "t0ken" }\n')
    await roundtrip(f"nats://t0ken@127.0.0.1:{server.port}")
    await roundtrip(f"nats://127.0.0.1:{server.port}?token=t0ken")


async def test_nkey_seed_file_and_env(private_server: Make, tmp_path: Path) -> None:
    import nkeys  # type: ignore[import-untyped]  # nats-py[nkeys]; ships no type hints

    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    server = private_server(f'authorization {{ users: [ {{ nkey: "{public}" }} ] }}\n')
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    await roundtrip(f"nats://127.0.0.1:{server.port}?nkey={seed_file}")
    await roundtrip(
        f"nats://127.0.0.1:{server.port}", env={"AGENTFLOW_NATS_NKEY_SEED": seed.decode()}
    )
    with pytest.raises(BrokerError):
        await NatsBroker(f"nats://127.0.0.1:{server.port}").connect()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=af-test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                 "-out", f"{name}.pem", cwd=d)  # fmt: skip


async def test_tls_with_client_certificate(private_server: Make, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        msg = "the openssl command is needed to make test certificates (apt-get install openssl)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)  # .ci/run installs it: in CI a missing tool is a failure
        pytest.skip(msg)
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    server = private_server(
        "tls {\n"
        f'  cert_file: "{pki}/server.pem"\n  key_file: "{pki}/server.key"\n'
        f'  ca_file: "{pki}/ca.pem"\n  verify: true\n  timeout: 5\n'
        "}\n"
    )
    q = f"tls_ca={pki}/ca.pem&tls_cert={pki}/client.pem&tls_key={pki}/client.key"
    await roundtrip(f"tls://127.0.0.1:{server.port}?{q}")
    await roundtrip(
        f"nats://127.0.0.1:{server.port}",
        env={
            "AGENTFLOW_NATS_TLS_CA": f"{pki}/ca.pem",
            "AGENTFLOW_NATS_TLS_CERT": f"{pki}/client.pem",
            "AGENTFLOW_NATS_TLS_KEY": f"{pki}/client.key",
        },
    )
    # No client certificate: the server refuses the handshake.
    with pytest.raises(BrokerError):
        await NatsBroker(f"tls://127.0.0.1:{server.port}?tls_ca={pki}/ca.pem").connect()


async def test_cluster_url_uses_the_server_that_answers(private_server: Make) -> None:
    server = private_server()
    from tests.nats.server import free_port

    dead = free_port()
    await roundtrip(f"nats://127.0.0.1:{dead},127.0.0.1:{server.port}")


async def test_tls_url_never_falls_back_to_plain_text(nats_url: str) -> None:
    plain = nats_url.replace("nats://", "tls://")
    with pytest.raises(BrokerError, match="does not offer"):
        await NatsBroker(plain).connect()
