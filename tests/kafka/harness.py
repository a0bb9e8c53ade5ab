"""Worker subprocesses and a private Kafka broker for the end-to-end tests."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


class Workers:
    """Identical ``tests.kafka.workers`` processes, started, killed and restarted by index."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.starts = 0
        self.kills = 0
        if "AFK_DB" in env:
            from tests.kafka.workers import open_db

            # Created (and switched to WAL) here, once: two workers starting together on a new
            # file race for the journal-mode change, and SQLite answers the loser "database is
            # locked" without waiting for its busy timeout.
            open_db(env["AFK_DB"]).close()

    def start(self, i: int, **extra: str) -> None:
        """Start worker ``i`` (stderr to ``worker-<i>.log``)."""
        log = open(self.tmp / f"worker-{i}.log", "ab")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "tests.kafka.workers"],
            env={**self.env, **extra},
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        self.starts += 1

    def alive(self, i: int) -> bool:
        """True while worker ``i`` runs."""
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL worker ``i``."""
        proc = self.procs[i]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            self.kills += 1

    def stop(self, i: int, timeout: float = 30.0) -> int | None:
        """SIGTERM worker ``i`` and wait for it; its exit code."""
        proc = self.procs[i]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def stop_all(self) -> None:
        """Stop every worker (SIGKILL whatever does not stop)."""
        for i in list(self.procs):
            self.stop(i)

    def logs(self) -> str:
        """Every worker log, for failure messages."""
        logs = sorted(self.tmp.glob("worker-*.log"))
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows from the shared results file."""
    conn = sqlite3.connect(db, timeout=60)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kafka_libs() -> Path | None:
    """The jar directory scripts/services.sh fetched for the pinned Kafka version."""
    pom = (REPO / "deploy/kafka/pom.xml").read_text()
    version = re.search(r"<kafka.version>(.*?)</kafka.version>", pom)
    # The same place scripts/services.sh caches them.
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    cache = Path(os.environ.get("AGENTFLOW_CACHE_DIR") or Path(xdg) / "agentflow")
    libs = cache / f"kafka-{version.group(1) if version else '?'}" / "libs"
    return libs if any(libs.glob("kafka_2.13-*.jar")) else None


class PrivateKafka:
    """A single-node KRaft broker of our own (so a test may stop and restart it)."""

    def __init__(self, tmp: Path, *, sasl: bool = False) -> None:
        libs = kafka_libs()
        if libs is None:
            msg = "Kafka jars not fetched yet (scripts/services.sh start kafka fetches them)"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(msg)
            pytest.skip(msg)
        self.classpath = f"{libs}/*"
        self.dir = tmp / "kafka"
        self.dir.mkdir()
        self.port, self.controller, self.sasl_port = free_port(), free_port(), free_port()
        self.url = f"kafka://127.0.0.1:{self.port}"
        # With sasl=True: PLAIN user alice/alice-secret and SCRAM-SHA-256 user bob/bob-secret on
        # a SASL_PLAINTEXT listener at sasl_port (the brokers talk PLAINTEXT among themselves).
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        extra: list[str] = []
        if sasl:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            prefix = "listener.name.sasl_plaintext"
            extra = [
                "inter.broker.listener.name=PLAINTEXT",
                "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
                f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
                'PlainLoginModule required user_alice="alice-secret";',
                f"{prefix}.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security."
                "scram.ScramLoginModule required;",
            ]
        self.proc: subprocess.Popen[bytes] | None = None
        config = self.dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller}",
                    "listeners="
                    + ",".join(listeners)
                    + f",CONTROLLER://127.0.0.1:{self.controller}",
                    "advertised.listeners=" + ",".join(listeners),
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map={protocols}",
                    *extra,
                    f"log.dir={self.dir / 'data'}",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=2",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "group.min.session.timeout.ms=1000",
                    "num.partitions=1",
                ]
            )
            + "\n"
        )
        (self.dir / "log4j2.properties").write_text(
            "rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=OUT\n"
            "appender.out.type=Console\nappender.out.name=OUT\n"
            "appender.out.layout.type=PatternLayout\nappender.out.layout.pattern=%p %m%n\n"
        )
        log4j = f"-Dlog4j2.configurationFile={self.dir}/log4j2.properties"
        self._java = ["java", "-Xmx512m", log4j]
        cluster_id = "-"
        while cluster_id.startswith("-"):  # "-t -x..." would read as an option (1 id in 64)
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            [*self._java, "-cp", self.classpath, "kafka.tools.StorageTool", "format",
             "--standalone", "-t", cluster_id, "-c", str(config),
             *(["--add-scram", "SCRAM-SHA-256=[name=bob,password=bob-secret]"] if sasl else [])],
            capture_output=True, timeout=120,
        )  # fmt: skip
        if formatted.returncode != 0:
            output = (formatted.stdout + formatted.stderr).decode(errors="replace")[-2000:]
            raise AssertionError(f"formatting the private Kafka failed:\n{output}")

    def launch(self) -> None:
        """Start the broker process (see :meth:`start`)."""
        log = open(self.dir / "kafka.log", "ab")
        config = str(self.dir / "server.properties")
        self.proc = subprocess.Popen(
            [*self._java, "-cp", self.classpath, "kafka.Kafka", config], stdout=log, stderr=log
        )

    async def start(self, timeout: float = 60.0) -> None:
        """Start the broker and wait until it answers metadata requests."""
        self.launch()
        assert self.proc is not None
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = time.monotonic() + timeout
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{self.port}")
            try:
                await admin.start()
                await admin.describe_cluster()
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError("private Kafka did not start") from None
                await asyncio.sleep(0.5)
            finally:
                await admin.close()

    def stop(self) -> None:
        """Stop the broker (SIGTERM: a controlled shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
