"""`lovekey ingest` as a real process, killed with SIGKILL mid-stream and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from lovekey.bench.support.publisher import Publisher, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.storage import connect

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def ingest_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with (
        log.open("ab") as sink,
        subprocess.Popen(
            [sys.executable, "-m", "lovekey", "ingest"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
        ) as process,
    ):
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def ingester_waits_for_lock(url: str) -> bool:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'lovekey-ingest' AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] > 0


def count(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM water_reading").fetchone()
    assert row is not None
    return int(row[0])


def test_sigkill_mid_stream_then_restart_stores_every_reading_once(
    postgres_factory, mqtt_url, topic_prefix, tmp_path
):
    db = postgres_factory.create("crash")
    devices = [f"WM-{n}" for n in range(20)]
    with connect(db) as conn:
        keys = register_devices(conn, [(d, "GW-1", "water_meter", f"R-{d}") for d in devices])
    env = {
        **os.environ,
        "LOVEKEY_DATABASE_URL": db,
        "LOVEKEY_MQTT_URL": mqtt_url,
        "LOVEKEY_MQTT__TOPIC_PREFIX": topic_prefix,
        "LOVEKEY_MQTT__CLIENT_ID": "lkt-crash-" + topic_prefix.rsplit("/", 1)[-1],
        "LOVEKEY_MQTT__SESSION_EXPIRY_S": "300",
        "LOVEKEY_DATA_DIR": str(tmp_path / "data"),
        "LOVEKEY_INGEST__BATCH_MS": "100",
        "LOVEKEY_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "ingest.log"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    # 600 messages of 5 readings each, 3,000 readings in all
    messages = []
    for n in range(600):
        device = devices[n % len(devices)]
        first = n // len(devices) * 5
        body = {
            "readings": [
                {"ts": (start + timedelta(minutes=15 * (first + i))).isoformat(), "total_l": float(first + i)}
                for i in range(5)
            ]
        }
        messages.append((f"{topic_prefix}/GW-1/{device}/reading", orjson.dumps(body)))
    expected = {
        (keys[devices[n % len(devices)]], start + timedelta(minutes=15 * (n // 20 * 5 + i)))
        for n in range(600)
        for i in range(5)
    }
    assert len(expected) == 3000

    with Publisher(mqtt_url, max_inflight=100) as publisher:
        with ingest_process(env, log) as first:
            probe = f"{topic_prefix}/GW-1/{devices[0]}/reading"
            probe_ts = start - timedelta(hours=1)

            def probe_stored() -> bool:  # the ingester is up and subscribed once this lands
                publisher.publish(probe, orjson.dumps({"ts": probe_ts.isoformat(), "total_l": 0}))
                return count(db) > 0

            wait_for(probe_stored, timeout_s=30, interval_s=0.3)
            sent = threading.Event()
            halfway = threading.Event()

            def publish_all() -> None:
                for index, (topic, payload) in enumerate(messages):
                    publisher.publish(topic, payload)
                    if index == 250:
                        halfway.set()
                    if index % 10 == 9:
                        threading.Event().wait(0.03)  # about 300 messages/s
                sent.set()

            thread = threading.Thread(target=publish_all, name="test-publisher")
            thread.start()
            assert halfway.wait(30)
            # Hold the ingester mid-batch (its INSERT waits for our lock), so messages are
            # surely received and not committed when it dies.
            with connect(db) as blocker:
                blocker.execute("LOCK TABLE water_reading IN SHARE ROW EXCLUSIVE MODE")
                wait_for(lambda: ingester_waits_for_lock(db), timeout_s=30)
                received = publisher.acked
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
                blocker.rollback()
            stored_at_kill = count(db) - 1
            assert stored_at_kill < received * 5
        assert first.returncode == -signal.SIGKILL
        with ingest_process(env, log) as second:
            thread.join(60)
            assert sent.is_set()
            publisher.flush()
            wait_for(lambda: count(db) >= 3001, timeout_s=60, interval_s=0.2)
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
    with connect(db) as conn:
        rows = conn.execute("SELECT device_key, ts FROM water_reading WHERE ts >= %s", (start,)).fetchall()
        rejected = conn.execute("SELECT count(*) FROM rejected_input").fetchone()
    assert len(rows) == 3000
    assert set(rows) == expected
    assert rejected == (0,)
    print(f"stored when killed: {stored_at_kill} of {received * 5} published readings")
    assert "ingest stopping" in log.read_text()
