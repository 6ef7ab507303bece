"""Migrations, layouts and retention on real PostgreSQL and on TimescaleDB."""

from __future__ import annotations

import importlib
import struct
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from lovekey.config import load_settings
from lovekey.ingest.batch import BatchPlan
from lovekey.ingest.writer import prepare, write_plan
from lovekey.storage import Layout, connect, migrate, run_maintenance
from lovekey.storage.maintenance import existing_partitions, partition_bounds
from lovekey.storage.migrate import discover
from tests.conftest import DatabaseFactory

migrate_module = importlib.import_module("lovekey.storage.migrate")  # the module, not its function


def _storage(**kw: object):
    return load_settings(environ={}, storage=kw).storage


def _applied(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, layout FROM lovekey_schema_migration ORDER BY version"
        ).fetchall()


def test_migrate_twice_applies_each_file_once(backend: DatabaseFactory) -> None:
    url = backend.create("mig2", migrated=False)
    with connect(url, autocommit=True) as conn:
        first = migrate(conn, _storage())
        second = migrate(conn, _storage())
    assert [m.version for m in discover()] == [v for v, _ in _applied(url)]
    assert len(first.applied) == len(discover())
    assert second.applied == []
    assert second.layout is first.layout


def test_concurrent_migrations_race_safely(backend: DatabaseFactory) -> None:
    url = backend.create("migrace", migrated=False)
    results: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with connect(url, autocommit=True) as conn:
                results.append(migrate(conn, _storage()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = [r.applied for r in results]  # type: ignore[attr-defined]
    assert sum(len(a) for a in applied) == len(discover())  # every file applied exactly once
    assert len(_applied(url)) == len(discover())


def test_layout_follows_the_server(request: pytest.FixtureRequest, backend: DatabaseFactory) -> None:
    url = backend.create("layout")
    with psycopg.connect(url) as conn:
        layout = conn.execute("SELECT value FROM lovekey_meta WHERE key = 'storage_layout'").fetchone()
        assert layout is not None
        if "timescale" in request.node.callspec.id:
            assert layout[0] == Layout.TIMESCALE
            tables = {
                r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
            }
            assert tables == {"water_reading", "sensor_reading"}
        else:
            assert layout[0] == Layout.NATIVE
            kinds = dict(
                conn.execute(
                    "SELECT relname, relkind::text FROM pg_class"
                    " WHERE relname IN ('water_reading', 'sensor_reading')"
                ).fetchall()
            )
            assert kinds == {"water_reading": "p", "sensor_reading": "p"}
        # a reading for now lands somewhere (a partition or a chunk exists for it)
        conn.execute("INSERT INTO water_reading (device_key, ts, total_dl) VALUES (1, now(), 15)")
        # and is unique per device and timestamp
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO water_reading (device_key, ts, total_dl) SELECT device_key, ts, 20 FROM water_reading"
            )


def test_timescaledb_off_gives_native_layout_even_where_available(backend: DatabaseFactory) -> None:
    url = backend.create("tsoff", migrated=False)
    with connect(url, autocommit=True) as conn:
        result = migrate(conn, _storage(timescaledb="off"))
    assert result.layout is Layout.NATIVE


def test_native_partitions_cover_retention_and_ahead(postgres_factory: DatabaseFactory) -> None:
    storage = _storage(retention_days=30, partition_days=7, partitions_ahead=2)
    url = postgres_factory.create("parts", migrated=False)
    now = datetime.now(UTC)
    with connect(url, autocommit=True) as conn:
        migrate(conn, storage)
        parts = existing_partitions(conn, "water_reading")
    lows = [lo for _, lo, _ in parts]
    highs = [hi for _, _, hi in parts]
    assert min(lows) <= now - timedelta(days=30)
    assert max(highs) >= partition_bounds(now, 7)[1] + timedelta(days=14)
    # contiguous, no overlap
    assert all(parts[i][2] == parts[i + 1][1] for i in range(len(parts) - 1))


def test_changing_partition_size_never_overlaps(postgres_factory: DatabaseFactory) -> None:
    url = postgres_factory.create("resize", migrated=False)
    with connect(url, autocommit=True) as conn:
        migrate(conn, _storage(retention_days=20, partition_days=7))
        later = datetime.now(UTC) + timedelta(days=40)
        run_maintenance(conn, _storage(retention_days=20, partition_days=3), now=later)
        parts = existing_partitions(conn, "water_reading")
    assert all(parts[i][2] <= parts[i + 1][1] for i in range(len(parts) - 1))
    assert max(hi for _, _, hi in parts) >= later


def test_retention_drops_whole_old_partitions_or_chunks(backend: DatabaseFactory) -> None:
    storage = _storage(retention_days=30, partition_days=7)
    url = backend.create("retention", migrated=False)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=25), now - timedelta(days=1)
    with connect(url, autocommit=True) as conn:
        migrate(conn, storage)
        conn.execute(
            "INSERT INTO water_reading_wide (device_key, ts, total_l) VALUES (1, %s, 1), (1, %s, 2)",
            (old, recent),
        )
        conn.execute(
            "INSERT INTO device_event (device_key, ts, type, active) VALUES (1, %s, 'sos', true)", (old,)
        )
        kept = run_maintenance(conn, storage, now=now)
        assert kept.dropped == []
        # 20 days later the old reading is past retention, the recent one is not
        report = run_maintenance(conn, storage, now=now + timedelta(days=20))
        remaining = [r[0] for r in conn.execute("SELECT ts FROM water_reading ORDER BY ts")]
        events = conn.execute("SELECT count(*) FROM device_event").fetchone()
    assert report.dropped, "an old partition/chunk should have been dropped"
    assert remaining == [recent]
    assert events == (0,)
    assert report.deleted_rows["device_event"] == 1


def test_compression_is_detected_not_assumed(timescale_factory: DatabaseFactory) -> None:
    url = timescale_factory.create("compress")
    with connect(url, autocommit=True) as conn:
        report = run_maintenance(conn, _storage())
        license_ = conn.execute("SELECT current_setting('timescaledb.license')").fetchone()
    assert report.layout is Layout.TIMESCALE
    if license_ == ("timescale",):
        assert report.compression == "enabled"
    else:
        assert report.compression.startswith("unavailable")


def test_maintenance_before_migrate_says_so(postgres_factory: DatabaseFactory) -> None:
    from lovekey.errors import StorageError

    url = postgres_factory.create("nomig", migrated=False)
    with connect(url, autocommit=True) as conn, pytest.raises(StorageError, match="lovekey migrate"):
        run_maintenance(conn, _storage())


def test_maintain_command_runs_a_pass_then_stops_cleanly_on_sigterm(
    postgres_factory: DatabaseFactory,
) -> None:
    """`lovekey maintain` without --once: one pass at start, then the schedule; SIGTERM ends it
    with exit status 0, not a traceback."""
    import os
    import signal
    import subprocess
    import sys
    import time

    url = postgres_factory.create("maintain_cmd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env["LOVEKEY_DATABASE_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, "-m", "lovekey", "maintain"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first pass, printed before the schedule starts
        assert first.startswith("layout: "), first + (proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(0.5)
        assert proc.poll() is None  # now waiting for the next interval
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err


# Totals that whole decilitres give back and totals they cannot (more digits than a
# decilitre, a m³ value times 1000, -0.0, beyond an int4 of decilitres).
_TOTALS = [0.0, 0.1, 123.4, 99_999_999.9, 214_748_364.7, 0.123, 12.3456 * 1000, -0.0, 1e11, 5e-324]


def _bits(value: float) -> bytes:
    return struct.pack(">d", value)


def test_the_hot_table_diet_keeps_every_stored_reading(
    backend: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 0100 on a table written before it: every total bit for bit, arrival to the second."""
    url = backend.create("diet", migrated=False)
    everything = discover()
    monkeypatch.setattr(migrate_module, "discover", lambda: [m for m in everything if m.version < 100])
    received = datetime(2026, 12, 1, 8, 0, 0, 750_000, tzinfo=UTC)
    ts = [received - timedelta(hours=i, microseconds=i) for i in range(len(_TOTALS))]
    with connect(url, autocommit=True) as conn:
        migrate(conn, _storage())
        run_maintenance(conn, _storage(), now=received)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO water_reading (ts, received_at, total_l, device_key, flow_lpm, battery_v)"
                " VALUES (%s, %s, %s, 1, %s, 3.6)",
                [
                    (t, received, total, None if i % 2 else 1.5)
                    for i, (t, total) in enumerate(zip(ts, _TOTALS, strict=True))
                ],
            )
        monkeypatch.setattr(migrate_module, "discover", lambda: everything)
        assert [label for label in migrate(conn, _storage()).applied if label.startswith("0100")]
        rows = conn.execute(
            "SELECT ts, time_from_2000(received_s), reading_total_l(total_dl, total_l_exact), flow_lpm,"
            " battery_v, total_dl IS NOT NULL FROM water_reading ORDER BY ts DESC"
        ).fetchall()
    assert [r[0] for r in rows] == ts
    assert {r[1] for r in rows} == {received.replace(microsecond=0)}
    assert [_bits(r[2]) for r in rows] == [_bits(t) for t in _TOTALS]
    assert [r[3] for r in rows] == [None if i % 2 else 1.5 for i in range(len(_TOTALS))]
    assert [r[4] for r in rows] == [pytest.approx(3.6)] * len(_TOTALS)
    # the whole decilitres went narrow, the rest kept their float
    assert [r[5] for r in rows] == [True, True, True, True, True, False, False, False, False, False]


def test_ingest_stores_each_total_exactly_and_narrow_where_it_can(database_url: str) -> None:
    """The writer's INSERT splits a total as the migration does; a redelivery is stored once."""
    now = datetime.now(UTC).replace(microsecond=0)
    with connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM water_reading WHERE device_key = 7")
        prepare(conn)
        plan = BatchPlan(seen_at=now)
        plan.water = [(now - timedelta(minutes=i), total, 7, None, None) for i, total in enumerate(_TOTALS)]
        for _ in range(2):
            write_plan(conn, plan, devices_seen=[], gateways_seen=[], away_s=0)
        rows = conn.execute(
            "SELECT reading_total_l(total_dl, total_l_exact), total_dl IS NOT NULL, time_from_2000(received_s)"
            " FROM water_reading WHERE device_key = 7 ORDER BY ts DESC"
        ).fetchall()
    assert [_bits(r[0]) for r in rows] == [_bits(t) for t in _TOTALS]
    assert [r[1] for r in rows] == [True, True, True, True, True, False, False, False, False, False]
    assert all(abs((r[2] - now).total_seconds()) < 60 for r in rows)
