"""Partitions ahead of time, retention by whole partitions/chunks, hypertable settings.

Both layouts share one entry point, `run_maintenance`, which the scheduled job calls
(`lovekey maintain`, and inside `lovekey run`). It never deletes reading rows one by one:
retention drops whole native partitions or TimescaleDB chunks. Compact history
(storage.packing) is one row per meter-day, so its retention deletes those rows by day.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from lovekey.config import StorageSettings
from lovekey.storage.migrate import Layout, ServerFeatures, recorded_layout, server_features
from lovekey.storage.packing import PackReport, drop_packed_before, pack_history

log = logging.getLogger(__name__)

READING_TABLES = ("water_reading", "sensor_reading")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PART_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<lo>\d{8})_(?P<hi>\d{8})$")


@dataclass(slots=True)
class MaintenanceReport:
    layout: Layout
    created: list[str] = field(default_factory=list)  # partitions created
    dropped: list[str] = field(default_factory=list)  # partitions or chunks dropped
    deleted_rows: dict[str, int] = field(default_factory=dict)  # small tables pruned by row
    compression: str = "n/a"
    packing: PackReport | None = None  # compact history (storage.packing)


def run_maintenance(
    conn: psycopg.Connection,
    storage: StorageSettings,
    *,
    now: datetime | None = None,
    stop: Callable[[], bool] | None = None,
) -> MaintenanceReport:
    """Create partitions ahead, drop what is past retention (compact history too), pack
    readings older than the hot window. `conn` must be autocommit; `stop` ends packing
    between two batches."""
    now = now or datetime.now(UTC)
    layout = recorded_layout(conn)
    report = MaintenanceReport(layout=layout)
    cutoff = now - timedelta(days=storage.retention_days)
    if layout is Layout.NATIVE:
        report.created = ensure_partitions(conn, storage, now=now)
        report.dropped = _drop_old_partitions(conn, cutoff)
    else:
        report.compression = configure_hypertables(conn, storage, server_features(conn))
        for table in READING_TABLES:
            rows = conn.execute(
                "SELECT show_chunks(%s::regclass, older_than => %s::timestamptz)::text",
                (table, cutoff),
            ).fetchall()
            conn.execute("SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)", (table, cutoff))
            report.dropped.extend(r[0] for r in rows)
    report.deleted_rows["water_reading_packed"] = drop_packed_before(conn, cutoff)
    report.packing = pack_history(conn, storage, now=now, stop=stop)
    report.deleted_rows["device_event"] = conn.execute(
        "DELETE FROM device_event WHERE ts < %s", (cutoff,)
    ).rowcount
    report.deleted_rows["rejected_input"] = conn.execute(
        "DELETE FROM rejected_input WHERE received_at < %s", (cutoff,)
    ).rowcount
    if report.created or report.dropped:
        log.info(
            "maintenance layout=%s created=%d dropped=%d",
            layout.value,
            len(report.created),
            len(report.dropped),
        )
    return report


def partition_bounds(ts: datetime, days: int) -> tuple[datetime, datetime]:
    """The aligned [lower, upper) range of `days` days containing `ts` (UTC, epoch-aligned)."""
    span = timedelta(days=days)
    index = (ts - _EPOCH) // span
    lower = _EPOCH + index * span
    return lower, lower + span


def existing_partitions(conn: psycopg.Connection, table: str) -> list[tuple[str, datetime, datetime]]:
    """(name, lower, upper) of the partitions of `table`, parsed from their names."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = %s::regclass
        """,
        (table,),
    ).fetchall()
    out = []
    for (name,) in rows:
        match = _PART_NAME.match(name)
        if match and match["table"] == table:
            out.append((name, _day(match["lo"]), _day(match["hi"])))
    return sorted(out, key=lambda p: p[1])


def ensure_partitions(
    conn: psycopg.Connection, storage: StorageSettings, *, now: datetime | None = None
) -> list[str]:
    """Cover [now - retention, now + ahead) with partitions; returns the names created.

    Gaps are filled with epoch-aligned ranges clipped to their neighbours, so changing
    `partition_days` later never produces overlapping partitions.
    """
    now = now or datetime.now(UTC)
    span = timedelta(days=storage.partition_days)
    start = partition_bounds(now - timedelta(days=storage.retention_days), storage.partition_days)[0]
    end = partition_bounds(now, storage.partition_days)[1] + span * storage.partitions_ahead
    created: list[str] = []
    for table in READING_TABLES:
        taken = [(lo, hi) for _, lo, hi in existing_partitions(conn, table)]
        lower = start
        while lower < end:
            upper = min(partition_bounds(lower, storage.partition_days)[1], end)
            for lo, hi in taken:
                if lo <= lower < hi:  # inside an existing partition: jump past it
                    upper = lower = hi
                    break
                if lower < lo < upper:  # an existing partition starts inside: stop short
                    upper = lo
            if lower >= upper:
                continue
            name = f"{table}_p{lower:%Y%m%d}_{upper:%Y%m%d}"
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(name), sql.Identifier(table), sql.Literal(lower), sql.Literal(upper)
                )
            )
            created.append(name)
            taken.append((lower, upper))
            lower = upper
    return created


def _drop_old_partitions(conn: psycopg.Connection, cutoff: datetime) -> list[str]:
    dropped = []
    for table in READING_TABLES:
        for name, _, upper in existing_partitions(conn, table):
            if upper > cutoff:
                continue
            # DETACH ... CONCURRENTLY does not block ingest writing to the newest partition
            conn.execute(
                sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            )
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped


def configure_hypertables(
    conn: psycopg.Connection, storage: StorageSettings, features: ServerFeatures
) -> str:
    """Chunk size from settings; compression only where the licence allows it.

    Returns what was done about compression, for the report and the log.
    """
    interval = timedelta(days=storage.partition_days)
    for table in READING_TABLES:
        conn.execute("SELECT set_chunk_time_interval(%s::regclass, %s::interval)", (table, interval))
    if not features.can_compress:
        return f"unavailable (timescaledb license: {features.timescaledb_license})"
    for table in READING_TABLES:
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.compress,"
                " timescaledb.compress_segmentby = 'device_key', timescaledb.compress_orderby = 'ts')"
            ).format(sql.Identifier(table))
        )
        conn.execute(
            "SELECT add_compression_policy(%s::regclass, %s::interval, if_not_exists => true)",
            (table, timedelta(days=max(2 * storage.partition_days, 14))),
        )
    return "enabled"


def _day(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC)
