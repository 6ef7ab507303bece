"""Compact history on real PostgreSQL and TimescaleDB: packing loses and doubles nothing.

The property test ingests random irregular series (meter swaps, rollovers, duplicates, late
arrivals, totals with more digits than a decilitre) with the ingester's own INSERT, packs,
lets late readings and duplicates arrive for packed days, packs again, and checks after
each step that the history reads exactly what was first stored for each (meter, ts).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lovekey.bench.support.seeding import seed_resident
from lovekey.config import load_settings
from lovekey.storage import connect, run_maintenance
from lovekey.storage.compact import WaterColumns
from lovekey.storage.export import csv_text, export_readings
from lovekey.storage.history import epoch_us, history_bounds, read_water, read_water_async
from lovekey.storage.packing import pack_batch, pack_history
from tests.conftest import DatabaseFactory

METERS = 3
STORAGE = {"retention_days": 120, "hot_days": 35}
_INSERT = """
INSERT INTO water_reading_wide (ts, total_l, device_key, flow_lpm, battery_v)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
Row = tuple[int, datetime, float, float | None, float | None]


def _storage(**kw: Any):  # type: ignore[no-untyped-def]
    return load_settings(environ={}, storage={**STORAGE, **kw}).storage


@pytest.fixture(scope="module", params=["postgres", "timescaledb"])
def history_url(request: pytest.FixtureRequest) -> tuple[str, list[int]]:
    """A migrated database with three water meters, on each backend; tests clear readings."""
    name = "postgres_factory" if request.param == "postgres" else "timescale_factory"
    factory: DatabaseFactory = request.getfixturevalue(name)
    url = factory.create("history", **STORAGE)
    with connect(url, autocommit=True) as conn:
        for i in range(METERS):
            seed_resident(conn, f"R-{i}", meter_id=f"M-{i}")
        keys = [k for (k,) in conn.execute("SELECT key FROM device ORDER BY key")]
    return url, keys


def _clear(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM water_reading")
    conn.execute("TRUNCATE water_reading_packed, water_pack_day")


def _ingest(conn: psycopg.Connection[Any], rows: list[Row]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_INSERT, [(ts, total, key, flow, battery) for key, ts, total, flow, battery in rows])


def _history(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    got = read_water(conn, None, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    return _as_rows(got)


def _as_rows(got: WaterColumns) -> list[tuple[Any, ...]]:
    def opt(v: float) -> float | None:
        return None if np.isnan(v) else float(v)

    return [
        (int(k), int(t), float(v), opt(f), opt(b))
        for k, t, v, f, b in zip(
            got.device_key, got.ts_us, got.total_l, got.flow_lpm, got.battery_v, strict=True
        )
    ]


def _expected(stored: list[Row]) -> list[tuple[Any, ...]]:
    """What ON CONFLICT DO NOTHING keeps: the first row of each (meter, ts), float4 as stored."""
    first: dict[tuple[int, int], tuple[Any, ...]] = {}
    for key, ts, total, flow, battery in stored:
        f4 = lambda v: None if v is None else float(np.float32(v))  # noqa: E731 - a column type
        first.setdefault((key, epoch_us(ts)), (key, epoch_us(ts), total, f4(flow), f4(battery)))
    return sorted(first.values())


@st.composite
def _series(draw: st.DrawFn, keys: list[int], now: datetime) -> tuple[list[Row], list[Row]]:
    """(ingested before packing, arriving afterwards) for the meters, irregular in time."""
    early: list[Row] = []
    late: list[Row] = []
    for key in keys:
        ts = now - timedelta(days=draw(st.integers(40, 100)), seconds=draw(st.integers(0, 86_399)))
        register = draw(st.integers(0, 999_999_000))  # decilitres
        for _ in range(draw(st.integers(0, 40))):
            ts += timedelta(
                seconds=draw(st.sampled_from([60, 900, 900, 3600, 86_400, 3 * 86_400])),
                microseconds=draw(st.sampled_from([0, 0, 0, 250_000])),
            )
            if ts > now - timedelta(hours=1):
                break
            event = draw(st.sampled_from(["use", "use", "use", "swap", "rollover", "m3"]))
            if event == "swap":
                register = draw(st.integers(0, 500))  # a new meter starts near zero
            elif event == "rollover":
                register = (register + draw(st.integers(0, 5000))) % 1_000_000_000
            else:
                register += draw(st.integers(0, 3000))
            total = register / 10.0
            if event == "m3":  # a total sent in m3 with more digits than a decilitre
                total = register / 10.0 + draw(st.sampled_from([0.0123, 1e-7, 0.05]))
            flow = draw(st.one_of(st.none(), st.floats(0, 60, width=32)))
            battery = draw(st.one_of(st.none(), st.sampled_from([3.6, 3.61, 3.05])))
            row = (key, ts, total, flow, battery)
            (late if draw(st.booleans()) and draw(st.booleans()) else early).append(row)
            if draw(st.integers(0, 9)) == 0:  # sent again, maybe with another total
                again = (key, ts, total + draw(st.sampled_from([0.0, 1.0])), flow, battery)
                (late if draw(st.booleans()) else early).append(again)
    return early, late


_NOW = datetime.now(UTC).replace(microsecond=0)
_FIRST_DAY = (_NOW - timedelta(days=110)).date()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_packing_is_lossless_with_swaps_rollovers_duplicates_and_late_readings(
    history_url: tuple[str, list[int]], data: st.DataObject
) -> None:
    url, keys = history_url
    early, late = data.draw(_series(keys, _NOW))
    storage = _storage()
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        _ingest(conn, early)
        assert _history(conn) == _expected(early)
        exported_hot = csv_text(conn, _FIRST_DAY, _NOW.date())
        first = run_maintenance(conn, storage, now=_NOW)
        assert first.packing is not None
        assert first.packing.mode == "packed"
        assert _history(conn) == _expected(early)
        old = conn.execute(
            "SELECT count(*) FROM water_reading WHERE ts < %s", (_NOW - timedelta(days=36),)
        ).fetchone()
        assert old == (0,), "every reading older than the hot window is packed"
        assert csv_text(conn, _FIRST_DAY, _NOW.date()) == exported_hot, "the export is byte for byte the same"
        _ingest(conn, late)  # late readings and duplicates, many for packed days
        assert _history(conn) == _expected(early + late)
        run_maintenance(conn, storage, now=_NOW)
        assert _history(conn) == _expected(early + late)
        counted = conn.execute("SELECT coalesce(sum(readings), 0) FROM water_reading_packed").fetchone()
        hot = conn.execute("SELECT count(*) FROM water_reading").fetchone()
    assert counted is not None
    assert hot is not None
    assert counted[0] + hot[0] == len(_expected(early + late)), "nothing doubled between the tables"


def _regular(keys: list[int], start: datetime, days: int, every_s: int = 900) -> list[Row]:
    rows = []
    for key in keys:
        for i in range(days * 86_400 // every_s):
            rows.append((key, start + timedelta(seconds=i * every_s + key), 100.0 + i * 0.5, None, 3.6))
    return rows


def test_a_half_packed_day_reads_as_before(history_url: tuple[str, list[int]]) -> None:
    url, keys = history_url
    day = (_NOW - timedelta(days=50)).replace(hour=0, minute=0, second=0)
    rows = _regular(keys, day, 1)
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(), now=_NOW)  # partitions for the rows
        _ingest(conn, rows)
        before = _history(conn)
        with conn.transaction():
            written, moved = pack_batch(conn, keys[:1], day.date())  # one meter of the day
        assert (written, moved) == (1, 96)
        assert _history(conn) == before == _expected(rows)
        chart = read_water(conn, keys[:2], day + timedelta(hours=6), day + timedelta(hours=12))
        assert _as_rows(chart) == [
            r for r in before if r[0] in keys[:2] and 6 <= (r[1] // 3_600_000_000) % 24 < 12
        ]


async def test_the_async_reader_sees_the_same_history(history_url: tuple[str, list[int]]) -> None:
    url, keys = history_url
    day = (_NOW - timedelta(days=45)).replace(hour=0, minute=0, second=0)
    rows = _regular(keys, day, 2)
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(), now=_NOW)
        _ingest(conn, rows)
        # the first day packed, the second still hot
        pack_history(conn, _storage(hot_days=(_NOW.date() - day.date()).days - 1), now=_NOW)
        packed = conn.execute("SELECT count(*) FROM water_reading_packed").fetchone()
        assert packed == (len(keys),)
        bounds = history_bounds(conn)
    async with await psycopg.AsyncConnection.connect(url) as aconn:
        got = await read_water_async(aconn, keys, day, day + timedelta(days=2))
    assert _as_rows(got) == _expected(rows)
    assert bounds[0] == min(r[1] for r in rows)


def test_retention_drops_compact_history(history_url: tuple[str, list[int]]) -> None:
    url, keys = history_url
    day = (_NOW - timedelta(days=60)).replace(hour=0, minute=0, second=0)
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(), now=_NOW)
        _ingest(conn, _regular(keys, day, 1))
        run_maintenance(conn, _storage(), now=_NOW)
        assert conn.execute("SELECT count(*) FROM water_reading_packed").fetchone() == (len(keys),)
        later = run_maintenance(conn, _storage(), now=_NOW + timedelta(days=61))
        assert later.deleted_rows["water_reading_packed"] == len(keys)
        assert conn.execute("SELECT count(*) FROM water_reading_packed").fetchone() == (0,)
        assert _history(conn) == []


@pytest.mark.slow
def test_sigkill_in_the_middle_of_packing_loses_and_doubles_nothing(
    postgres_factory: DatabaseFactory, tmp_path: Any
) -> None:
    """`lovekey maintain --once` killed while it packs: the history reads the same; the next
    pass finishes the work."""
    url = postgres_factory.create("packkill", **STORAGE)
    meters = 40
    start = (_NOW - timedelta(days=60)).replace(hour=0, minute=0, second=0)
    with connect(url, autocommit=True) as conn:
        for i in range(meters):
            seed_resident(conn, f"K-{i}", meter_id=f"KM-{i}")
        keys = [k for (k,) in conn.execute("SELECT key FROM device ORDER BY key")]
        run_maintenance(conn, _storage(hot_days=400), now=_NOW)  # partitions, nothing packed
        conn.execute(
            """
            INSERT INTO water_reading_wide (device_key, ts, total_l, battery_v)
            SELECT k, %s + make_interval(secs => i * 900 + k), 1000 + i * 0.7, 3.6
            FROM unnest(%s::int[]) k, generate_series(0, 96 * 20 - 1) i
            """,
            (start, keys),
        )
        before = _history(conn)
    env = {
        **os.environ,
        "LOVEKEY_DATABASE_URL": url,
        "LOVEKEY_STORAGE__RETENTION_DAYS": "120",
        "LOVEKEY_STORAGE__PACK_BATCH_METERS": "1",
        "LOVEKEY_DATA_DIR": str(tmp_path),
    }
    killed_after = 0
    for _attempt in range(3):  # kill it three times at different points
        proc = subprocess.Popen(
            [sys.executable, "-m", "lovekey", "maintain", "--once"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FROM water_reading_packed").fetchone()
                assert row is not None
                if row[0] > killed_after + 20:
                    break
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            row = conn.execute("SELECT count(*) FROM water_reading_packed").fetchone()
            assert row is not None
            killed_after = row[0]
            assert 0 < killed_after < meters * 20, "the kill must land while packing is under way"
            assert _history(conn) == before
    with connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        report = pack_history(conn, _storage(), now=_NOW)
        assert report.mode == "packed"
        assert _history(conn) == before
        left = conn.execute(
            "SELECT count(*) FROM water_reading WHERE ts < %s", (_NOW - timedelta(days=36),)
        ).fetchone()
        assert left == (0,)
        assert conn.execute("SELECT count(*) FROM water_reading_packed").fetchone() == (meters * 20,)


async def test_console_and_detectors_read_the_same_before_and_after_packing(
    history_url: tuple[str, list[int]],
) -> None:
    from lovekey.detectors import store as detector_store
    from lovekey.web import queries

    url, keys = history_url
    start = (_NOW - timedelta(days=40)).replace(hour=0, minute=0, second=0)
    rows = _regular(keys, start, 10)
    end = start + timedelta(days=10)

    async def chart() -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(url) as aconn:
            s = await queries.water_readings(aconn, keys, start, end, max_flow_lpm=100.0)
        return list(zip(s.device_index.tolist(), s.ts_s.tolist(), s.total_l.tolist(), strict=True))

    def learning(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        r = detector_store.readings_since_ts(conn, keys, start, end)
        return list(zip(r.key.tolist(), r.ts_s.tolist(), r.total_l.tolist(), strict=True))

    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(hot_days=400), now=_NOW)
        _ingest(conn, rows)
        chart_before, learning_before = await chart(), learning(conn)
        report = pack_history(conn, _storage(), now=_NOW)
        assert report.readings > 0
        assert report.readings < len(rows), "part of the range stays hot"
        assert await chart() == chart_before
        assert learning(conn) == learning_before
    assert len(learning_before) == len(rows)


def test_export_csv_and_parquet_give_back_what_was_ingested(
    history_url: tuple[str, list[int]], tmp_path: Any
) -> None:
    import csv

    import pyarrow.parquet as pq

    url, keys = history_url
    start = (_NOW - timedelta(days=40)).replace(hour=0, minute=0, second=0)
    rows = _regular(keys, start, 3, every_s=3600)
    rows[0] = (rows[0][0], rows[0][1] + timedelta(microseconds=250_000), 1234.5678901, 12.5, None)
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(hot_days=400), now=_NOW)
        _ingest(conn, rows)
        pack_history(conn, _storage(hot_days=38), now=_NOW)  # the first days packed, the last hot
        assert 0 < conn.execute("SELECT count(*) FROM water_reading").fetchone()[0] < len(rows)  # type: ignore[index]
        ids = dict(conn.execute("SELECT key, id FROM device"))
        first, last = start.date(), (start + timedelta(days=2)).date()
        n_csv = export_readings(conn, tmp_path / "r.csv", first=first, last=last, fmt="csv")
        n_pq = export_readings(conn, tmp_path / "r.parquet", first=first, last=last, fmt="parquet")
    assert n_csv == n_pq == len(rows)
    want = sorted((ids[k], epoch_us(ts), total, flow, battery) for k, ts, total, flow, battery in rows)
    with (tmp_path / "r.csv").open() as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["device_id", "ts", "total_l", "flow_lpm", "battery_v"]
    got = sorted(
        (
            d,
            epoch_us(datetime.fromisoformat(ts)),
            float(total),
            float(flow) if flow else None,
            float(battery) if battery else None,
        )
        for d, ts, total, flow, battery in lines[1:]
    )
    assert got == want  # 12.5 and 3.6 print as the float32 PostgreSQL stored reads back
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
    assert all(stamp.match(line[1]) for line in lines[1:])
    assert sum(line[1].endswith(".250000Z") for line in lines[1:]) == 1
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    got_pq = sorted(
        (
            r["device_id"],
            epoch_us(r["ts"]),
            r["total_l"],
            r["flow_lpm"],
            None if r["battery_v"] is None else float(np.float32(r["battery_v"])),
        )
        for r in table
    )
    f4 = [
        (d, t, v, None if f is None else float(np.float32(f)), None if b is None else float(np.float32(b)))
        for d, t, v, f, b in want
    ]
    assert got_pq == f4


def test_export_command_writes_a_file(history_url: tuple[str, list[int]], tmp_path: Any) -> None:
    url, keys = history_url
    start = (_NOW - timedelta(days=50)).replace(hour=0, minute=0, second=0)
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(), now=_NOW)
        _ingest(conn, _regular(keys, start, 1))
        run_maintenance(conn, _storage(), now=_NOW)
    out = tmp_path / "c1.csv"
    env = {**os.environ, "LOVEKEY_DATABASE_URL": url, "LOVEKEY_DATA_DIR": str(tmp_path)}
    day = start.date().isoformat()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lovekey",
            "export",
            "readings",
            "--from",
            day,
            "--to",
            day,
            "--community",
            "C-1",
            "--format",
            "csv",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"exported {96 * len(keys)} readings" in done.stdout
    assert len(out.read_text().splitlines()) == 96 * len(keys) + 1
    wrong = subprocess.run(
        [
            sys.executable,
            "-m",
            "lovekey",
            "export",
            "readings",
            "--from",
            day,
            "--to",
            day,
            "--community",
            "nowhere",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert wrong.returncode != 0
    assert "no community 'nowhere'" in wrong.stderr


def test_ingest_does_not_wait_for_a_packing_batch(history_url: tuple[str, list[int]]) -> None:
    """While a batch holds its transaction open, new readings and late ones for the very
    meter-day being packed go in at once (lock_timeout 2 s); the late one is merged later."""
    url, keys = history_url
    day = (_NOW - timedelta(days=45)).replace(hour=0, minute=0, second=0)
    rows = _regular(keys, day, 1)
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(), now=_NOW)
        _ingest(conn, rows)
    late = (keys[0], day + timedelta(hours=5, seconds=30), 999.9, None, None)
    fresh = (keys[0], _NOW - timedelta(minutes=5), 1000.0, None, 3.6)
    with connect(url) as packer, connect(url, autocommit=True) as ingest:
        pack_batch(packer, keys, day.date())  # the batch's transaction stays open
        ingest.execute("SET lock_timeout = '2s'")
        _ingest(ingest, [late, fresh])
        packer.commit()
        assert _history(ingest) == _expected([*rows, late, fresh])
        pack_history(ingest, _storage(), now=_NOW)
        assert _history(ingest) == _expected([*rows, late, fresh])
        left = ingest.execute("SELECT count(*) FROM water_reading WHERE ts < %s", (day + timedelta(days=1),))
        assert left.fetchone() == (0,), "the late reading was merged into its packed day"


def test_packed_partitions_give_their_index_space_back(backend: DatabaseFactory) -> None:
    url = backend.create("shrink", **STORAGE)
    start = (_NOW - timedelta(days=80)).replace(hour=0, minute=0, second=0)
    size = """
        WITH RECURSIVE t(oid) AS (
            SELECT 'water_reading'::regclass::oid
            UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN t ON i.inhparent = t.oid)
        SELECT sum(pg_indexes_size(oid)) FROM t
        """
    with connect(url, autocommit=True) as conn:
        for i in range(METERS):
            seed_resident(conn, f"S-{i}", meter_id=f"SM-{i}")
        keys = [k for (k,) in conn.execute("SELECT key FROM device ORDER BY key")]
        rows = _regular(keys, start, 21, every_s=300)
        run_maintenance(conn, _storage(hot_days=400), now=_NOW)
        empty = conn.execute(size).fetchone()[0]  # type: ignore[index]
        _ingest(conn, rows)
        before = conn.execute(size).fetchone()[0]  # type: ignore[index]
        report = run_maintenance(conn, _storage(), now=_NOW)
        after = conn.execute(size).fetchone()[0]  # type: ignore[index]
        assert report.packing is not None
        assert report.packing.shrunk, "the emptied partitions were rebuilt"
        # a partition or chunk rebuilt empty keeps only its indexes' first pages
        for name in report.packing.shrunk:
            small = conn.execute("SELECT pg_indexes_size(%s::regclass)", (name,)).fetchone()
            assert small is not None
            assert small[0] <= 64 * 1024, name
        assert after - empty < (before - empty) / 2
        assert _history(conn) == _expected(rows)


def test_a_stop_request_ends_packing_between_batches(history_url: tuple[str, list[int]]) -> None:
    url, keys = history_url
    start = (_NOW - timedelta(days=50)).replace(hour=0, minute=0, second=0)
    rows = _regular(keys, start, 5)
    with connect(url, autocommit=True) as conn, connect(url, autocommit=True) as watcher:
        _clear(conn)
        run_maintenance(conn, _storage(hot_days=400), now=_NOW)
        _ingest(conn, rows)

        def two_written() -> bool:  # asked before each batch; batches commit before the next ask
            row = watcher.execute("SELECT count(*) FROM water_reading_packed").fetchone()
            return row is not None and row[0] >= 2

        report = pack_history(conn, _storage(pack_batch_meters=1), now=_NOW, stop=two_written)
        assert report.stopped
        assert report.meter_days == 2, "two batches of one meter, then the stop"
        assert _history(conn) == _expected(rows)
        rest = pack_history(conn, _storage(), now=_NOW)
        assert not rest.stopped
        assert rest.meter_days == 5 * len(keys) - 2
        assert _history(conn) == _expected(rows)


@pytest.mark.slow
def test_the_storage_benchmark_runs_end_to_end(postgres_factory: DatabaseFactory, tmp_path: Any) -> None:
    """A small `lovekey bench storage`: every reading packed and exported, figures printed
    (the targets are judged at full size, not here)."""
    env = {
        **os.environ,
        "LOVEKEY_DATABASE_URL": postgres_factory.admin_url,
        "LOVEKEY_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lovekey",
            "bench",
            "storage",
            "--meters",
            "12",
            "--days",
            "3",
            "--skip-district",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "FAILED" not in done.stdout, done.stdout
    figures = (
        "hot table:",
        "hot layout",
        "compact history:",
        "WAL written",
        "export csv:",
        "export parquet:",
    )
    for figure in figures:
        assert figure in done.stdout, done.stdout + done.stderr


def test_the_evaluation_replays_packed_history_as_it_was(
    history_url: tuple[str, list[int]], tmp_path: Any
) -> None:
    from lovekey.evaluation.sources import from_database

    url, keys = history_url
    start = (_NOW - timedelta(days=45)).replace(hour=0, minute=0, second=0)
    rows = _regular(keys, start, 4)
    truth = tmp_path / "truth.jsonl"
    truth.write_text("")
    detect = load_settings(environ={}).detect
    with connect(url, autocommit=True) as conn:
        _clear(conn)
        run_maintenance(conn, _storage(hot_days=400), now=_NOW)
        _ingest(conn, rows)
        before = from_database(conn, detect, truth).data
        assert pack_history(conn, _storage(), now=_NOW).readings == len(rows)
        after = from_database(conn, detect, truth).data
    assert after.start_s == before.start_s == min(r[1] for r in _expected(rows)) // 1_000_000
    assert after.ts_s.tolist() == before.ts_s.tolist()
    assert after.total_l.tolist() == before.total_l.tolist()
    assert after.meter.tolist() == before.meter.tolist()
    assert len(before.ts_s) == len(rows)


def test_only_one_packer_at_a_time(history_url: tuple[str, list[int]]) -> None:
    from lovekey.storage.packing import _PACK_LOCK

    url, _ = history_url
    with connect(url, autocommit=True) as other, connect(url, autocommit=True) as conn:
        other.execute("SELECT pg_advisory_lock(%s)", (_PACK_LOCK,))
        assert pack_history(conn, _storage(), now=_NOW).mode == "busy"
        other.execute("SELECT pg_advisory_unlock(%s)", (_PACK_LOCK,))
        assert pack_history(conn, _storage(), now=_NOW).mode == "packed"
