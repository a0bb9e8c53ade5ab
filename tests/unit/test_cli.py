"""The ``agentflow`` CLI: error paths, publish + dlq round trip, and running the example app."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from agentflow import App, Reject, RetryPolicy, __version__
from agentflow.brokers.memory import MemoryBroker, reset_memory_brokers
from agentflow.cli import cli

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args: str, stdin: str | None = None) -> Result:
    """Run the CLI in this process (so a memory:// broker is shared with the test)."""
    return runner.invoke(cli, list(args), input=stdin)


def agentflow(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agentflow`` from the repository root, as a user would."""
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTFLOW_BROKER", "AGENTFLOW_DEBUG")}
    return subprocess.run(
        [sys.executable, "-m", "agentflow", *args],
        cwd=kw.pop("cwd", ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def assert_one_error_line(stderr: str, exit_code: int, *fragments: str) -> None:
    """Exactly one ``error:`` line on stderr (notes aside), no traceback, non-zero exit."""
    assert exit_code != 0
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in stderr


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A memory:// broker name private to one test."""
    name = f"cli{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    reset_memory_brokers(name)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch working directory holding small modules for ``run`` to import."""
    suffix = uuid.uuid4().hex[:6]
    (tmp_path / f"apps_{suffix}.py").write_text(
        textwrap.dedent(
            """
            from agentflow import App
            app = App("scratch", broker="memory://scratch")
            thing = 42
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCH_MODULE", f"apps_{suffix}")
    return tmp_path


# -- version, help -------------------------------------------------------------------------------
def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"agentflow {__version__}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["publish"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "replay"],
        ["dlq", "purge"],
        ["validate"],
        ["graph"],
        ["schema"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


# -- error paths: one red line, non-zero exit, traceback only with --debug ------------------------
def test_bad_module_path() -> None:
    result = invoke("run", "no_such_pkg_af.sub:app")
    assert_one_error_line(
        result.stderr,
        result.exit_code,
        "cannot import 'no_such_pkg_af.sub'",
        "No module named 'no_such_pkg_af'",
    )


def test_missing_file_path() -> None:
    result = invoke("run", "nowhere/at_all.py:app")
    assert_one_error_line(result.stderr, result.exit_code, "no such file")


def test_module_without_that_attribute(project: Path) -> None:
    module = os.environ["SCRATCH_MODULE"]
    result = invoke("run", f"{module}:nope")
    assert_one_error_line(
        result.stderr, result.exit_code, f"module '{module}' has no attribute 'nope'", "app"
    )


def test_attribute_that_is_not_an_app(project: Path) -> None:
    module = os.environ["SCRATCH_MODULE"]
    result = invoke("run", f"{module}.py:thing")
    assert_one_error_line(result.stderr, result.exit_code, "is of type int, not an agentflow App")


def test_bad_broker_url_scheme(project: Path) -> None:
    module = os.environ["SCRATCH_MODULE"]
    result = invoke("run", f"{module}:app", "--broker", "foo://x")
    assert_one_error_line(result.stderr, result.exit_code, "unsupported broker URL 'foo://x'")
    result = invoke("publish", "t", "{}", "--broker", "bogus://")
    assert_one_error_line(result.stderr, result.exit_code, "unsupported broker URL")


def test_bad_json_names_the_argument() -> None:
    result = invoke("publish", "t", "{not json", "--broker", "memory://cli-json")
    assert_one_error_line(result.stderr, result.exit_code, "invalid JSON in argument JSON")


def test_bad_header_names_the_option() -> None:
    result = invoke("publish", "t", "{}", "--header", "novalue")
    assert_one_error_line(result.stderr, result.exit_code, "invalid --header 'novalue'")


def test_yaml_only_options_are_refused_for_python_apps(project: Path) -> None:
    module = os.environ["SCRATCH_MODULE"]
    result = invoke("run", f"{module}:app", "--until-idle")
    assert_one_error_line(result.stderr, result.exit_code, "--until-idle", "YAML")


def test_unreachable_broker_is_one_line_in_a_real_process() -> None:
    # A real process: logging and stderr behave as they do for a user (no pytest capture).
    for args in (["publish", "t", "{}"], ["dlq", "list", "t"]):
        proc = agentflow(*args, "--broker", "nats://127.0.0.1:1")
        assert_one_error_line(proc.stderr, proc.returncode, "cannot connect", "127.0.0.1:1")
    proc = agentflow("run", "workflows/example_app.py:app", "--broker", "nats://127.0.0.1:1")
    assert_one_error_line(proc.stderr, proc.returncode, "cannot connect")
    assert "summary" not in proc.stdout, "no summary for an app that never started"


def test_debug_shows_the_traceback() -> None:
    proc = agentflow("--debug", "publish", "t", "{}", "--broker", "nats://127.0.0.1:1")
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot connect")
    result = invoke("--debug", "run", "no_such_pkg_af:app")
    assert result.exit_code != 0
    assert "Traceback" in result.stderr and "ModuleNotFoundError" in result.stderr


# -- publish and the dead-letter commands ---------------------------------------------------------
def _drain(app: App) -> None:
    async def go() -> None:
        async with app:
            assert await app.wait_idle(timeout=10, quiet=0.2)

    asyncio.run(go())


def _browse(url: str, topic: str) -> list[Any]:
    return asyncio.run(MemoryBroker(url).browse(topic, 1000))


def test_publish_and_dlq_list_show_replay_purge(memory_url: str) -> None:
    b = ("--broker", memory_url)
    result = invoke(
        "publish", "orders.new", '{"id": "o-1", "qty": -1}', "--key", "c1",
        "--header", "x-source=test", "--id", "m-1", *b,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "m-1"
    result = invoke("publish", "orders.new", "-", "--id", "m-2", *b, stdin='{"id": "o-2"}')
    assert result.stdout.strip() == "m-2"

    accept = False
    seen: list[str] = []
    app = App("orders", broker=memory_url)

    @app.agent(consumes="orders.new", retry=RetryPolicy.none())
    async def check(order: dict[str, Any]) -> None:
        seen.append(order["id"])
        if not accept:
            raise Reject("quantity missing or negative")

    _drain(app)
    assert sorted(seen) == ["o-1", "o-2"]

    listing = invoke("dlq", "list", "orders.new", *b)
    assert listing.exit_code == 0, listing.output
    assert "orders.new.dlq" in listing.stdout
    assert "m-1" in listing.stdout and "m-2" in listing.stdout
    assert "rejected" in listing.stdout and "check" in listing.stdout

    shown = invoke("dlq", "show", "orders.new.dlq", "m-1", *b)
    assert shown.exit_code == 0, shown.output
    for text in ("af-dlq-reason", "rejected", "x-source", "orders.new", '"qty": -1', "c1"):
        assert text in shown.stdout
    missing = invoke("dlq", "show", "orders.new", "nope", *b)
    assert_one_error_line(missing.stderr, missing.exit_code, "not in the dead-letter topic: nope")

    neither = invoke("dlq", "replay", "orders.new", *b)
    assert_one_error_line(neither.stderr, neither.exit_code, "--all")

    replayed = invoke("dlq", "replay", "orders.new", "m-1", *b)
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 message(s)" in replayed.stdout
    dead = _browse(memory_url, "orders.new.dlq")
    assert [m.headers["af-id"] for m in dead] == ["m-2"], "only the replayed entry was removed"
    copy = _browse(memory_url, "orders.new")[-1]
    assert copy.headers["af-id"] == "m-1", "replay keeps the message id"
    assert copy.key == "c1" and copy.headers["x-source"] == "test"
    assert not [h for h in copy.headers if h.startswith(("af-dlq-", "af-original-"))]
    assert "af-attempts" not in copy.headers

    # The id m-1 is inside the broker's dedup window, yet the replay is delivered and handled.
    accept = True
    seen.clear()
    _drain(app)
    assert seen == ["o-1"]
    assert app.stats["check"].succeeded == 1

    kept = invoke("dlq", "purge", "orders.new", *b, stdin="n\n")
    assert kept.exit_code != 0
    assert len(_browse(memory_url, "orders.new.dlq")) == 1
    purged = invoke("dlq", "purge", "orders.new", "--yes", *b)
    assert purged.exit_code == 0, purged.output
    assert "purged 1 message(s) from orders.new.dlq" in purged.stdout
    empty = invoke("dlq", "list", "orders.new.dlq", *b)
    assert "no dead letters in orders.new.dlq" in empty.stdout


def test_replay_all(memory_url: str) -> None:
    b = ("--broker", memory_url)
    for n in range(3):
        invoke("publish", "jobs", f'{{"n": {n}}}', *b)
    app = App("jobs", broker=memory_url)

    @app.agent(consumes="jobs", retry=RetryPolicy.none())
    async def fail(job: dict[str, int]) -> None:
        raise RuntimeError("boom")

    _drain(app)
    assert len(_browse(memory_url, "jobs.dlq")) == 3
    result = invoke("dlq", "replay", "jobs", "--all", *b)
    assert "replayed 3 message(s)" in result.stdout
    assert _browse(memory_url, "jobs.dlq") == []
    assert len(_browse(memory_url, "jobs")) == 6


# -- run ------------------------------------------------------------------------------------------
SUMMARY_ROW = re.compile(r"^\s*(\S+)\s+processed=(\d+) retried=(\d+) dead-lettered=(\d+)", re.M)


def summary(stdout: str) -> dict[str, tuple[int, int, int]]:
    """Rows of the plain summary: agent -> (processed, retried, dead-lettered)."""
    return {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in SUMMARY_ROW.finditer(stdout)}


@pytest.mark.parametrize("target", ["workflows/example_app.py:app", "workflows.example_app:app"])
def test_example_app_runs_to_its_summary(target: str) -> None:
    started = time.monotonic()
    proc = agentflow("run", target)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # The numbers workflows/example_app.py promises in its docstring.
    assert summary(proc.stdout) == {
        "classify": (19, 6, 1),
        "route": (19, 0, 0),
        "(total)": (38, 6, 1),
    }, proc.stdout
    assert "dead-lettered a message of tickets.new" in proc.stderr
    assert time.monotonic() - started < 20


def test_run_without_main_stops_on_sigint(tmp_path: Path) -> None:
    (tmp_path / "idle_app.py").write_text(
        textwrap.dedent(
            """
            from agentflow import App
            app = App("idle")

            @app.agent(consumes="work")
            async def work(msg: dict) -> None:
                return None
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "AGENTFLOW_BROKER"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentflow", "run", "idle_app:app", "--grace", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("running idle on memory://")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert summary(out)["work"] == (0, 0, 0)


def test_failing_main_is_one_error_line_after_the_summary(tmp_path: Path) -> None:
    (tmp_path / "bad_main.py").write_text(
        textwrap.dedent(
            """
            from agentflow import App
            app = App("bad")

            async def main(app: App) -> None:
                raise LookupError("no tickets to feed")
            """
        )
    )
    proc = agentflow("run", "bad_main.py:app", cwd=tmp_path)
    assert_one_error_line(proc.stderr, proc.returncode, "LookupError: no tickets to feed")
    assert "summary" in proc.stdout


def test_replay_headers_drop_dead_letter_and_transport_annotations() -> None:
    from agentflow.cli_dlq import replay_headers

    headers = {
        "af-id": "m",
        "af-attempt": "4",
        "af-key": "k",
        "x-custom": "1",
        "af-dlq-reason": "max-attempts",
        "af-dlq-error": "boom",
        "af-attempts": "4",
        "af-original-topic": "t",
        "af-original-partition": "2",
        "af-not-before": "123",
        "Nats-Msg-Id": "S:9:dlq",
    }
    assert replay_headers(headers) == {
        "af-id": "m",
        "af-attempt": "1",
        "af-key": "k",
        "x-custom": "1",
    }
