"""Clean stops: SIGINT and SIGTERM end every long-running command with exit status 0 within
5 s and no traceback (issue 16, "What to build" 6).

Each command runs as a subprocess against a fresh database and the local broker under a
topic prefix of its own. All of them are started at once by a module fixture and each test
waits for its own; the whole file takes about as long as the slowest start (the demo).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.conftest import MQTT_URL, DatabaseFactory

STOP_WITHIN_S = 5.0
READY_WITHIN_S = 60.0


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    argv: tuple[str, ...]
    ready: str  # a regular expression for a line on stdout or stderr that says it is up
    web: bool = False  # it serves the console or the ack pages: give it a free port
    env: tuple[tuple[str, str], ...] = ()  # settings of its own, as environment variables


COMMANDS = (
    Command("run", ("run",), r"running: ", web=True),
    Command("demo", ("demo", "--residents", "50", "--port", "0"), r"running: "),
    Command("ingest", ("ingest",), r"connected to the broker"),
    Command("detect", ("detect",), r"detector running"),
    Command("alerts-worker", ("alerts", "worker"), r"alert worker \S+ started"),
    Command("alerts-serve", ("alerts", "serve"), r"Uvicorn running|Application startup complete", web=True),
    Command("serve", ("serve",), r"Uvicorn running|Application startup complete", web=True),
    Command("simulate", ("simulate", "--residents", "20", "--speed", "1"), r"simulate: publishing"),
    Command(
        "receive",
        ("receive", "--port", "0"),
        r"receiving pushes on http://",
        env=(("LOVEKEY_SOURCES", '[{"name": "ctwing", "kind": "ctwing", "token": "stop-test-token"}]'),),
    ),
)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(slots=True)
class Running:
    command: Command
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self, stream: object) -> None:
        pattern = re.compile(self.command.ready)
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)
            if pattern.search(line):
                self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(
    command: Command,
    database_url: str,
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    new_session: bool = False,
) -> Running:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    unique = uuid.uuid4().hex[:12]
    env |= {
        "LOVEKEY_DATABASE_URL": database_url,
        "LOVEKEY_MQTT_URL": MQTT_URL,
        "LOVEKEY_MQTT__TOPIC_PREFIX": f"lktest/{unique}",
        # `run` and `ingest` start together: with one client id they would take each
        # other's broker session over and over (each reconnecting every second)
        "LOVEKEY_MQTT__CLIENT_ID": f"lkstop-{unique}",
        "LOVEKEY_DATA_DIR": str(data_dir),
        "LOVEKEY_WEB__PORT": str(_free_port()),
        "LOVEKEY_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    env |= extra_env or {}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lovekey", *command.argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=new_session,
    )
    running = Running(command, proc)
    running.reader = threading.Thread(target=running.read, args=(proc.stdout,), daemon=True)
    running.reader.start()
    return running


@pytest.fixture(scope="module", params=SIGNALS, ids=lambda s: s.name)
def wave(
    request: pytest.FixtureRequest, postgres_factory: DatabaseFactory
) -> Iterator[tuple[signal.Signals, dict[str, Running]]]:
    """Every command, started together (one wave per signal, to spare the shared server's
    connections), each on a database of its own."""
    sig: signal.Signals = request.param
    with tempfile.TemporaryDirectory(prefix="lk-stops-") as tmp:
        out: dict[str, Running] = {}
        try:
            for command in COMMANDS:
                url = postgres_factory.create(f"stop_{command.name}_{sig.name}")
                out[command.name] = _start(command, url, Path(tmp) / command.name, dict(command.env))
            yield sig, out
        finally:
            for running in out.values():
                if running.proc.poll() is None:
                    running.proc.kill()
                running.proc.wait()
                if running.reader is not None:
                    running.reader.join(5)
                if running.proc.stdout is not None:
                    running.proc.stdout.close()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_signal_stops_the_command_cleanly(
    wave: tuple[signal.Signals, dict[str, Running]], command: Command
) -> None:
    sig, started = wave
    running = started[command.name]
    assert running.ready.wait(READY_WITHIN_S), f"{command.name} never got ready:\n{running.output[-4000:]}"
    t0 = time.monotonic()
    running.proc.send_signal(sig)
    try:
        code: int | None = running.proc.wait(STOP_WITHIN_S + 5)
    except subprocess.TimeoutExpired:
        code = None
    took_s = time.monotonic() - t0
    print(f"STOP {command.name} {sig.name} exit={code} {took_s:.2f}s")
    if running.reader is not None:
        running.reader.join(5)  # the last lines, up to end of output
    assert code == 0, f"exit {code} after {took_s:.1f} s:\n{running.output[-4000:]}"
    assert took_s < STOP_WITHIN_S, running.output[-4000:]
    assert "Traceback" not in running.output, running.output[-4000:]


def test_ctrl_c_on_demo_stops_the_publisher_first_and_its_broker_last(
    postgres_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Ctrl+C at a terminal signals the whole process group: the demo's own broker must
    not go with it while the live publisher is still sending (issue 16, finding 9)."""
    command = Command("demo-own-broker", ("demo", "--residents", "50", "--port", "0"), r"running: ")
    env = {"LOVEKEY_MQTT_URL": ""}  # no broker configured: the demo starts its own
    running = _start(command, postgres_factory.create("stop_demo_group"), tmp_path, env, new_session=True)
    try:
        assert running.ready.wait(READY_WITHIN_S), running.output[-4000:]
        t0 = time.monotonic()
        os.killpg(running.proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does
        code = running.proc.wait(STOP_WITHIN_S + 5)
        took_s = time.monotonic() - t0
        assert running.reader is not None
        running.reader.join(5)
        out = running.output
        assert (code, "Traceback" in out) == (0, False), out[-4000:]
        assert took_s < STOP_WITHIN_S, out[-4000:]
        publisher = out.index("live publisher stopped")
        worker_stopped = re.search(r"alert worker \S+ stopped", out)
        assert worker_stopped is not None, out[-4000:]
        # the publisher goes first; the pipeline's parts then stop together, in no set order;
        # and the summary is printed once all of them have stopped
        console_stopped = out.index("console stopped")
        assert publisher < min(worker_stopped.start(), console_stopped), out[-4000:]
        assert max(worker_stopped.start(), console_stopped) < out.index("Demo summary"), out[-4000:]
    finally:
        if running.proc.poll() is None:
            os.killpg(running.proc.pid, signal.SIGKILL)
            running.proc.wait()
        assert running.proc.stdout is not None
        running.proc.stdout.close()


def test_ingest_waits_for_a_database_that_is_not_there_yet(
    postgres_factory: DatabaseFactory, tmp_path: Path
) -> None:
    from psycopg import sql

    from lovekey.storage.scratch import with_database

    name = f"lk_stop_ingest_late_{uuid.uuid4().hex[:8]}"
    postgres_factory.created.append(name)  # dropped at the end of the session
    command = Command("ingest-late-db", ("ingest",), r"connected to the broker")
    running = _start(command, with_database(postgres_factory.admin_url, name), tmp_path)
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while "waiting for the database" not in running.output and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # some retries go by
        assert running.proc.poll() is None, running.output[-4000:]
        assert running.output.count("waiting for the database") == 1, running.output[-4000:]

        with psycopg.connect(postgres_factory.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        assert running.ready.wait(READY_WITHIN_S), running.output[-4000:]  # migrated, subscribed
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(STOP_WITHIN_S) == 0, running.output[-4000:]
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()
        if running.reader is not None:
            running.reader.join(5)
        assert running.proc.stdout is not None
        running.proc.stdout.close()
