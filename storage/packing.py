"""The packing job: water readings older than the hot window move into compact days.

`pack_history` runs inside `run_maintenance` (so in `lovekey maintain` and `lovekey run`).
It walks UTC days older than `storage.hot_days` and, for each, batches of meters; one batch
is one transaction that

1. deletes the batch's hot rows of that day and gets them back in the same statement
   (`DELETE ... RETURNING`): exactly the rows it removes, so a reading ingest commits
   meanwhile stays in the hot table for the next pass instead of being lost;
2. locks and decodes the meter-days already packed (a late reading for a packed day is
   merged, a duplicate of a packed reading dropped: the packed one was stored first);
3. writes one packed row per meter-day.

A SIGKILL anywhere rolls the open batch back: nothing is lost or doubled, and the next pass
picks the day up again. The readers (`storage.history`) merge both tables, so a day
half-packed reads the same as before and after. Ingest never waits on the job: the job's
row locks are on readings older than the hot window, which ingest only touches when a
duplicate of one arrives, and then for one batch.

Which days to visit: every day in retention that has not been finished yet, and every
finished day that a reading received since the last pass belongs to (the BRIN index on
`received_s` finds those). A day missed by that search (a reading whose transaction was
open for more than `_LATE_SLACK`) is not lost: it stays in the hot table, read as usual,
until retention.

On TimescaleDB with compression (its community licence) the hypertable compresses itself
and this job does nothing; the Apache edition has no compression and is packed like plain
PostgreSQL. Only one job packs at a time (an advisory lock); another returns at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from lovekey.config import StorageSettings
from lovekey.storage.compact import WaterColumns, decode_days, encode_days
from lovekey.storage.history import packed_days, parse_records, seconds_since_2000
from lovekey.storage.migrate import Layout, recorded_layout, server_features

log = logging.getLogger(__name__)

_PACK_LOCK = 0x4C4B5041434B  # "LKPACK"; any fixed 64-bit number
# how far before the previous pass to look for late readings: covers an ingest transaction
# that began (its received_s is its start) before the pass and committed after it
_LATE_SLACK = timedelta(hours=1)
_DAY_US = 86_400 * 1_000_000


@dataclass(slots=True)
class PackReport:
    mode: str  # "packed", "timescaledb compression", "busy" (another job holds the lock)
    days: int = 0  # days visited
    meter_days: int = 0  # packed rows written (new or merged)
    readings: int = 0  # hot rows moved into packed rows
    seconds: float = 0.0
    stopped: bool = False  # asked to stop before every day was visited
    shrunk: list[str] = field(default_factory=list)  # emptied partitions/chunks vacuumed, reindexed


def pack_history(
    conn: psycopg.Connection[Any],
    storage: StorageSettings,
    *,
    now: datetime | None = None,
    stop: Callable[[], bool] | None = None,
) -> PackReport:
    """Pack every meter-day older than the hot window. `conn` must be autocommit."""
    started = time.monotonic()
    if recorded_layout(conn) is Layout.TIMESCALE and server_features(conn).can_compress:
        return PackReport("timescaledb compression")
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_PACK_LOCK,)).fetchone()
    if row is None or not row[0]:
        return PackReport("busy")
    try:
        report = PackReport("packed")
        now = now or datetime.now(UTC)
        _pack_all(conn, storage, now, stop or (lambda: False), report)
        if not report.stopped:
            cutoff = now.astimezone(UTC).date() - timedelta(days=storage.hot_days)
            report.shrunk = shrink_emptied(conn, _midnight(cutoff))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_PACK_LOCK,))
    report.seconds = time.monotonic() - started
    if report.meter_days:
        log.info(
            "packed days=%d meter_days=%d readings=%d seconds=%.1f",
            report.days,
            report.meter_days,
            report.readings,
            report.seconds,
        )
    return report


def days_to_pack(conn: psycopg.Connection[Any], storage: StorageSettings, now: datetime) -> list[date]:
    """Days in retention and older than the hot window that may hold hot readings."""
    cutoff = now.astimezone(UTC).date() - timedelta(days=storage.hot_days)
    oldest = (now - timedelta(days=storage.retention_days)).astimezone(UTC).date()
    finished = {d for (d,) in conn.execute("SELECT day FROM water_pack_day WHERE day >= %s", (oldest,))}
    todo = {oldest + timedelta(days=i) for i in range((cutoff - oldest).days)} - finished
    row = conn.execute("SELECT max(packed_at) FROM water_pack_day").fetchone()
    if row is not None and row[0] is not None:
        late = conn.execute(
            """
            SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM water_reading
            WHERE received_s >= %s AND ts < %s AND ts >= %s
            """,
            (seconds_since_2000(row[0] - _LATE_SLACK), _midnight(cutoff), _midnight(oldest)),
        ).fetchall()
        todo.update(d for (d,) in late)
    return sorted(todo)


def _pack_all(
    conn: psycopg.Connection[Any],
    storage: StorageSettings,
    now: datetime,
    stop: Callable[[], bool],
    report: PackReport,
) -> None:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    pass_started: datetime = row[0]
    meters = [k for (k,) in conn.execute("SELECT key FROM device WHERE kind = 'water_meter' ORDER BY key")]
    size = storage.pack_batch_meters
    for day in days_to_pack(conn, storage, now):
        for i in range(0, len(meters), size):
            if stop():
                report.stopped = True
                return
            with conn.transaction():
                written, moved = pack_batch(conn, meters[i : i + size], day)
            report.meter_days += written
            report.readings += moved
        conn.execute(
            """
            INSERT INTO water_pack_day (day, packed_at) VALUES (%s, %s)
            ON CONFLICT (day) DO UPDATE SET packed_at = EXCLUDED.packed_at
            """,
            (day, pass_started),
        )
        report.days += 1


def pack_batch(conn: psycopg.Connection[Any], device_keys: Sequence[int], day: date) -> tuple[int, int]:
    """Move these meters' hot readings of `day` into packed rows; call inside a transaction.

    Returns (packed rows written, hot readings moved).
    """
    start = _midnight(day)
    moved = _take_hot(conn, device_keys, start, start + timedelta(days=1))
    if len(moved) == 0:
        return 0, 0
    keys = sorted(set(moved.device_key.tolist()))
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(
            """
            SELECT device_key, day - DATE '1970-01-01',
                   (extract(epoch FROM received_at) * 1000000)::int8, data
            FROM water_reading_packed
            WHERE day = %s AND device_key = ANY(%s::int4[])
            ORDER BY device_key
            FOR UPDATE
            """,
            (day, keys),
        ).fetchall()
    earlier = decode_days(packed_days(rows))
    merged = WaterColumns.concat([earlier, moved]).sorted_unique()
    packed = encode_days(merged)
    if rows:
        conn.execute(
            "DELETE FROM water_reading_packed WHERE day = %s AND device_key = ANY(%s::int4[])",
            (day, [r[0] for r in rows]),
        )
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY water_reading_packed (device_key, day, readings, received_at, data)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["int4", "date", "int4", "timestamptz", "bytea"])
        for p in packed:
            copy.write_row(
                (
                    p.device_key,
                    day,
                    p.readings,
                    datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=p.received_us),
                    p.data,
                )
            )
    return len(packed), len(moved)


def _take_hot(
    conn: psycopg.Connection[Any], device_keys: Sequence[int], start: datetime, end: datetime
) -> WaterColumns:
    """Delete these meters' hot rows with start <= ts < end and return exactly those rows.

    The rows come back as one bytea of fixed-width binary records (`string_agg` of the
    columns' send functions), parsed by numpy: a binary COPY hands psycopg one row at a time,
    and at 3.8 million rows a district-day that per-row cost was two thirds of the job.
    """
    row = conn.execute(
        """
        WITH gone AS (
            DELETE FROM water_reading
            WHERE device_key = ANY(%s::int4[]) AND ts >= %s AND ts < %s
            RETURNING device_key, ts, total_dl, total_l_exact, flow_lpm, battery_v, received_s
        )
        SELECT string_agg(
            int4send(device_key) || timestamptz_send(ts)
            || float8send(reading_total_l(total_dl, total_l_exact))
            || float4send(coalesce(flow_lpm, 'NaN'::real))
            || float4send(coalesce(battery_v, 'NaN'::real)) || timestamptz_send(time_from_2000(received_s)),
            ''::bytea)
        FROM gone
        """,
        (list(device_keys), start, end),
        binary=True,
    ).fetchone()
    return parse_records(row[0] if row is not None and row[0] is not None else b"")


def shrink_emptied(conn: psycopg.Connection[Any], before: datetime) -> list[str]:
    """Give back the space of hot partitions (or chunks) that packing emptied.

    Deleting a partition's rows leaves its heap to VACUUM, which returns the pages, but its
    primary key keeps its size: about 39 bytes a reading packed, for as long as retention
    keeps the partition, ten times the compact form. So a partition wholly before `before`
    with no row left is vacuumed and its indexes rebuilt with REINDEX CONCURRENTLY, which
    lets ingest go on writing (a late reading may still arrive; it lands as usual). One that
    still holds rows (a late reading not yet packed) waits for a later pass.
    """
    shrunk = []
    for name in _ranges_before(conn, before):
        ident = sql.SQL(".").join(sql.Identifier(part) for part in name)
        row = conn.execute(
            sql.SQL("SELECT pg_indexes_size({}::regclass), EXISTS (SELECT 1 FROM {})").format(
                sql.Literal(".".join(name)), ident
            )
        ).fetchone()
        if row is None or row[1] or row[0] <= 64 * 1024:
            continue  # rows left, or already small
        conn.execute(sql.SQL("VACUUM {}").format(ident))
        conn.execute(sql.SQL("REINDEX TABLE CONCURRENTLY {}").format(ident))
        shrunk.append(".".join(name))
    return shrunk


def _ranges_before(conn: psycopg.Connection[Any], before: datetime) -> list[tuple[str, str]]:
    """(schema, table) of each partition or chunk of water_reading that ends by `before`."""
    if recorded_layout(conn) is Layout.TIMESCALE:
        rows = conn.execute(
            """
            SELECT chunk_schema, chunk_name FROM timescaledb_information.chunks
            WHERE hypertable_name = 'water_reading' AND range_end <= %s
            """,
            (before,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.inhparent = 'water_reading'::regclass
        """
    ).fetchall()
    out = []
    for schema, name, bound in rows:
        upper = conn.execute(
            "SELECT (regexp_match(%s, 'TO \\(''([^'']+)''\\)'))[1]::timestamptz", (bound,)
        ).fetchone()
        if upper is not None and upper[0] is not None and upper[0] <= before:
            out.append((schema, name))
    return out


def drop_packed_before(conn: psycopg.Connection[Any], cutoff: datetime) -> int:
    """Retention for compact history: packed days wholly before `cutoff` go."""
    day = cutoff.astimezone(UTC).date()
    dropped = conn.execute("DELETE FROM water_reading_packed WHERE day < %s", (day,)).rowcount
    conn.execute("DELETE FROM water_pack_day WHERE day < %s", (day,))
    return dropped


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
