"""Test helpers shipped with the package: a fake notification provider and registry seeding.

`FakeProvider` is a real HTTP server on a free local port that stands in for an SMS gateway or
a push/webhook service at the outer edge: Apprise `json://` URLs point at it, and it records
every request (path, headers, JSON body). It can answer with scripted status codes and hold
responses for a while, and it honours `Idempotency-Key` the way a careful provider does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import psycopg

from lovekey.alerts.chains import ChainBook
from lovekey.alerts.channels import ChannelSender
from lovekey.alerts.dispatch import DispatchContext, DispatchReport, dispatch_once
from lovekey.alerts.escalation_pass import EscalationContext, escalate_once
from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.config import Settings


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at_monotonic: float
    at_wall: float
    method: str = "POST"
    target: str = ""  # the request target as sent: path and query
    raw: bytes = b""  # the body as sent

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass(slots=True)
class _Script:
    statuses: list[int] = field(default_factory=list)


class FakeProvider:
    """`with FakeProvider() as fake:`; `fake.url("push/a")` -> 'json://127.0.0.1:PORT/push/a'.

    An asyncio HTTP/1.1 server in a thread of its own: cheap per request (a provider's cost
    must not weigh on a benchmark of our side), and `hold_s` delays answers without a thread
    per request.
    """

    def __init__(self, *, hold_s: float = 0.0) -> None:
        self.hold_s = hold_s
        self.connections = 0  # TCP connections accepted
        self._clients: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._scripts: dict[str, _Script] = {}
        self._arrived = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-provider")
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._client, sock=self._sock, backlog=1024)
        self._ready.set()
        async with server:
            await self._stopped.wait()
        # kept-alive connections (the client's pool) are closed by the server, as a real one does
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        with self._lock:
            self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                request_line = lines[0].split(" ")
                method = request_line[0]
                path = request_line[1] if len(request_line) > 1 else "/"
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                status = self._record(path, headers, body, method=method, raw=raw)
                if self.hold_s:
                    await asyncio.sleep(self.hold_s)
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\n"
                    f"Content-Length: 0\r\nConnection: {'close' if close else 'keep-alive'}"
                    "\r\n\r\n".encode()
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._clients.discard(task)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def url(self, path: str, *, schema: str = "json") -> str:
        return f"{schema}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def sms_template(self) -> str:
        """An Apprise URL template for `alerts.sms_url`: a JSON SMS gateway at /sms."""
        return (
            f"json://127.0.0.1:{self.port}/sms/{{phone_digits}}"
            "?:to={phone}&+Idempotency-Key={idempotency_key}"
        )

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("fake provider did not start")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stopped = self._stopped
        if stopped is not None:
            self._loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout=10)
        self._sock.close()

    def script(self, path_prefix: str, statuses: Sequence[int]) -> None:
        """Answer the next requests whose path starts with `path_prefix` with `statuses`, in
        order (then 200)."""
        with self._lock:
            self._scripts["/" + path_prefix.lstrip("/")] = _Script(list(statuses))

    def _record(
        self,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any],
        *,
        method: str = "POST",
        raw: bytes = b"",
    ) -> int:
        with self._lock:
            self._received.append(
                Received(
                    path.split("?", 1)[0],
                    headers,
                    body,
                    time.monotonic(),
                    time.time(),
                    method=method,
                    target=path,
                    raw=raw,
                )
            )
            self._arrived.notify_all()
            for prefix, script in self._scripts.items():
                if path.startswith(prefix) and script.statuses:
                    return script.statuses.pop(0)
        return 200

    def received(self, path_prefix: str = "/") -> list[Received]:
        prefix = "/" + path_prefix.lstrip("/")
        with self._lock:
            return [r for r in self._received if r.path.startswith(prefix)]

    def wait_for(self, count: int, timeout_s: float = 10.0, path_prefix: str = "/") -> bool:
        prefix = "/" + path_prefix.lstrip("/")
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while sum(r.path.startswith(prefix) for r in self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
        return True

    def counts_by_key(self) -> Counter[str | None]:
        with self._lock:
            return Counter(r.idempotency_key for r in self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()


# --- registry seeding for tests and benchmarks ------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactSpec:
    role: str
    name: str
    phone: str | None = None
    push_url: str | None = None
    language: str = "zh"
    position: int = 1
    digest_opt_in: bool = False
    quiet: tuple[str, str] | None = None


def seed_resident(
    conn: psycopg.Connection[Any],
    resident_id: str,
    *,
    name: str = "",
    address: str = "",
    community_id: str | None = "C-1",
    grid_id: str | None = None,
    contacts: Sequence[ContactSpec] = (),
    meter_id: str | None = None,
    gateway_id: str = "GW-1",
) -> None:
    """Insert (or reuse) community, grid, household, resident, contacts and a water meter."""
    if community_id:
        conn.execute(
            "INSERT INTO community (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (community_id, community_id),
        )
    if grid_id:
        conn.execute(
            "INSERT INTO grid (id, community_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (grid_id, community_id),
        )
    conn.execute(
        """
        INSERT INTO household (id, community_id, grid_id, address) VALUES (%s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        """,
        (f"H-{resident_id}", community_id, grid_id, address),
    )
    conn.execute(
        "INSERT INTO resident (id, household_id, name) VALUES (%s, %s, %s)",
        (resident_id, f"H-{resident_id}", name),
    )
    for c in contacts:
        conn.execute(
            """
            INSERT INTO contact (resident_id, role, position, name, phone, push_url, language,
                                 digest_opt_in, quiet_start, quiet_end)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                resident_id,
                c.role,
                c.position,
                c.name,
                c.phone,
                c.push_url,
                c.language,
                c.digest_opt_in,
                c.quiet[0] if c.quiet else None,
                c.quiet[1] if c.quiet else None,
            ),
        )
    if meter_id:
        conn.execute("INSERT INTO gateway (id) VALUES (%s) ON CONFLICT DO NOTHING", (gateway_id,))
        conn.execute(
            """
            INSERT INTO device (id, kind, household_id, resident_id, gateway_id, report_interval_s)
            VALUES (%s, 'water_meter', %s, %s, %s, 900)
            """,
            (meter_id, f"H-{resident_id}", resident_id, gateway_id),
        )


def seed_community_contact(
    conn: psycopg.Connection[Any],
    role: str,
    name: str,
    *,
    community_id: str | None = "C-1",
    phone: str | None = None,
    push_url: str | None = None,
    position: int = 1,
) -> None:
    conn.execute(
        """
        INSERT INTO community_contact (community_id, role, position, name, phone, push_url)
        VALUES (%s, %s, %s, %s, %s, %s)
        """,
        (community_id, role, position, name, phone, push_url),
    )


def outbox_states(conn: psycopg.Connection[Any], alert_id: int) -> Iterator[tuple[Any, ...]]:
    """(purpose, round, recipient_key, state, sent_channel) of an alert's outbox rows."""
    yield from conn.execute(
        """
        SELECT purpose, round, recipient_key, state, sent_channel FROM alert_outbox
        WHERE alert_id = %s ORDER BY id
        """,
        (alert_id,),
    )


def at_local(text: str, zone: str = "Asia/Shanghai") -> datetime:
    """'2025-03-01 08:00' in the given zone, as an aware datetime."""
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


# --- a rig that runs escalation and dispatch by hand, with a fake clock --------------------

# built once per process and kind (loading Apprise's plugins is slow)
_SENDERS: dict[bool, ChannelSender] = {}

TEST_SECRET = b"test-secret-0123456789abcdef"


def shared_sender(*, keepalive: bool = True) -> ChannelSender:
    """The worker's sender; `keepalive=False`: everything through Apprise."""
    if keepalive not in _SENDERS:
        _SENDERS[keepalive] = ChannelSender(keepalive=keepalive)
    return _SENDERS[keepalive]


@dataclass
class DeliveryRig:
    conn: psycopg.Connection[Any]
    log_conn: psycopg.Connection[Any]
    fake: FakeProvider
    settings: Settings
    escalation: EscalationContext
    dispatch: DispatchContext

    def run(self, now: datetime) -> DispatchReport:
        """One escalation pass, then dispatch until nothing more is due at `now`."""
        escalate_once(self.conn, self.escalation, now)
        total = DispatchReport()
        while True:
            report = dispatch_once(
                self.conn,
                self.log_conn,
                shared_sender(keepalive=self.settings.alerts.keepalive_webhooks),
                self.dispatch,
                lambda: now,
            )
            if not report.claimed:
                return total
            for name in total.__slots__:
                setattr(total, name, getattr(total, name) + getattr(report, name))

    def raise_(
        self,
        kind: str,
        resident: str,
        now: datetime,
        *,
        subject: str | None = None,
        device_id: str | None = None,
    ) -> int:
        with self.conn.transaction():
            result = raise_alerts(
                self.conn,
                [
                    AlertCandidate(
                        kind=kind,
                        subject=subject or resident,
                        resident_id=resident,
                        device_id=device_id,
                        gateway_id=None,
                        since=now - timedelta(hours=12),
                        details={},
                    )
                ],
                now,
            )
        return result.opened[0]


def standard_contacts(fake: FakeProvider) -> list[ContactSpec]:
    """A resident's contacts in every role: push for the neighbour, SMS for the rest."""
    return [
        ContactSpec("love_key_holder", "李阿姨", push_url=fake.url("push/lkh")),
        ContactSpec("family", "王小明", phone="+8613800000002"),
        ContactSpec("grid_worker", "张网格", push_url=fake.url("push/grid"), phone="+8613800000003"),
        ContactSpec("community_staff", "社区刘", phone="+8613800000004", language="en"),
        ContactSpec("emergency", "120", phone="+8613800000120"),
    ]


@contextmanager
def delivery_rig(database_url: str, settings: Settings, fake: FakeProvider) -> Iterator[DeliveryRig]:
    """Empty the alert and registry tables, seed resident R-1 with `standard_contacts`."""
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        psycopg.connect(database_url, autocommit=True) as log_conn,
    ):
        conn.execute(
            "TRUNCATE delivery_attempt, alert_outbox, alert_history, alert, contact,"
            " community_contact, water_reading, device, gateway, resident, household, grid,"
            " community"
            " RESTART IDENTITY CASCADE"
        )
        seed_resident(conn, "R-1", name="王秀英", address="幸福里3-2-101", contacts=standard_contacts(fake))
        yield DeliveryRig(
            conn,
            log_conn,
            fake,
            settings,
            EscalationContext(ChainBook.load(settings.alerts.chains_file), settings.alerts, settings.zone),
            DispatchContext(settings.alerts, settings.zone, TEST_SECRET, "test"),
        )


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free local port in a thread; yields its base URL."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- the worker as a process ------------------------------------------------------------


class WorkerProcess:
    """`lovekey alerts worker` in a subprocess; stderr is collected by a reader thread."""

    def __init__(self, database_url: str, fake: FakeProvider, **alerts: object) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
        env.update(
            {
                "LOVEKEY_DATABASE_URL": database_url,
                "LOVEKEY_ALERTS__SMS_URL": fake.sms_template(),
                "LOVEKEY_ALERTS__ACK_SECRET": "worker-test-secret-0123456789",
                "LOVEKEY_LOG_LEVEL": "INFO",
            }
        )
        env.update({f"LOVEKEY_ALERTS__{k.upper()}": str(v) for k, v in alerts.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lovekey", "alerts", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_started(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not any("alert worker" in line and "started" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("worker did not start:\n" + "".join(self.lines[-30:]))
            time.sleep(0.05)

    def cpu_s(self) -> float:
        """CPU seconds used so far by the worker and its dispatch processes (Linux)."""
        return process_cpu_s(self.proc.pid)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants, from /proc (Linux)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return total
    return total + sum(process_cpu_s(c) for c in children)
