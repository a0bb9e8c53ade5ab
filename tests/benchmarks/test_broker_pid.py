"""The harness finds the broker process by the port it listens on (to report its CPU)."""

from __future__ import annotations

import os
import socket

from benchmarks.runner import broker_pid, process_cpu_seconds


def test_broker_pid_is_the_process_listening_on_the_url_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert broker_pid(f"nats://127.0.0.1:{port}") == os.getpid()
        assert broker_pid(f"kafka://127.0.0.1:{port},127.0.0.1:1") == os.getpid()
    assert broker_pid(f"nats://127.0.0.1:{port}") is None, "nobody listens there any more"
    assert process_cpu_seconds(os.getpid()) > 0
