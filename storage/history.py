"""One history of water readings: the hot table and the compact days, read as one.

Every reader of readings older than a few hours goes through `read_water` (or
`read_water_async` on the console's event loop): the console's charts and reports, the
detectors' learning, the evaluation replay and `lovekey export`. It reads `water_reading`
(the hot table, where ingest writes) and `water_reading_packed` (the compact days,
storage/compact.py) for the same meters and time range, and merges them:

- a meter-day is in one of the two, or, while a late reading for a packed day waits for the
  packing job, in both; both are read and the union is returned;
- a reading stored in both (a duplicate sent again after its day was packed) is returned
  once, as it was first stored: the packed one, which is what `ON CONFLICT DO NOTHING` keeps;
- the packing job moves a batch of meter-days in one transaction (`storage.packing`), and
  each read here is two statements in one REPEATABLE READ snapshot on the sync path, so a day
  the job is halfway through reads the same as before and after.

For a packed reading `received_us` is when the newest reading of its meter-day reached the
database; per-reading arrival times are not kept once a day is packed (docs/storage.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from lovekey.storage.compact import PackedDay, WaterColumns, decode_days

_PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01, where PostgreSQL counts from
_DAY_US = 86_400 * 1_000_000

# One binary COPY row of (int4, timestamptz, float8, float4, float4, timestamptz), none NULL.
HOT_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l1", ">i4"),
        ("key", ">i4"),
        ("l2", ">i4"),
        ("ts", ">i8"),
        ("l3", ">i4"),
        ("total", ">f8"),
        ("l4", ">i4"),
        ("flow", ">f4"),
        ("l5", ">i4"),
        ("battery", ">f4"),
        ("l6", ">i4"),
        ("received", ">i8"),
    ]
)
# The hot table's columns in that order, its narrow total and arrival second widened back
# (migration 0100); NULL flow/battery travel as NaN (a NaN is never stored: JSON has none and
# the ingester checks its numbers).
HOT_COLUMNS = sql.SQL(
    "device_key, ts, reading_total_l(total_dl, total_l_exact), coalesce(flow_lpm, 'NaN'::real),"
    " coalesce(battery_v, 'NaN'::real), time_from_2000(received_s)"
)
# The hot table counts arrival in whole seconds from PostgreSQL's own epoch, 2000-01-01 UTC.
EPOCH_2000_S = 946_684_800


def seconds_since_2000(when: datetime) -> int:
    """`received_s` of a row that arrived at `when` (SQL `seconds_since_2000`)."""
    return math.floor(when.timestamp()) - EPOCH_2000_S


def epoch_us(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def parse_hot_copy(data: bytes) -> WaterColumns:
    """Columns of a binary COPY whose rows are `HOT_COLUMNS`."""
    if not data:
        return WaterColumns.empty()
    if not data.startswith(b"PGCOPY\n\xff\r\n\0"):
        raise ValueError("not a binary COPY stream")
    ext = int.from_bytes(data[15:19], "big")
    body = data[19 + ext : -2]  # the trailer is int16 -1
    rows = np.frombuffer(body, dtype=HOT_ROW)
    return WaterColumns(
        rows["key"].astype(np.int32),
        rows["ts"].astype(np.int64) + _PG_EPOCH_US,
        rows["total"].astype(np.float64),
        rows["flow"].astype(np.float32),
        rows["battery"].astype(np.float32),
        rows["received"].astype(np.int64) + _PG_EPOCH_US,
    )


RECORD = np.dtype(
    [
        ("key", ">i4"),
        ("ts", ">i8"),
        ("total", ">f8"),
        ("flow", ">f4"),
        ("battery", ">f4"),
        ("received", ">i8"),
    ]
)


def parse_records(data: bytes) -> WaterColumns:
    """Columns of concatenated `RECORD`s (the packing job's `string_agg` of send functions)."""
    rows = np.frombuffer(data, dtype=RECORD)
    return WaterColumns(
        rows["key"].astype(np.int32),
        rows["ts"].astype(np.int64) + _PG_EPOCH_US,
        rows["total"].astype(np.float64),
        rows["flow"].astype(np.float32),
        rows["battery"].astype(np.float32),
        rows["received"].astype(np.int64) + _PG_EPOCH_US,
    )


def hot_query(device_keys: Sequence[int] | None, start: datetime, end: datetime) -> sql.Composed:
    """Hot rows with start <= ts < end (of these meters, or all when None)."""
    where = sql.SQL("ts >= {} AND ts < {}").format(sql.Literal(start), sql.Literal(end))
    if device_keys is not None:
        where = sql.SQL("device_key = ANY({}::int4[]) AND {}").format(sql.Literal(list(device_keys)), where)
    return sql.SQL(
        "COPY (SELECT {} FROM water_reading WHERE {} ORDER BY device_key, ts) TO STDOUT (FORMAT BINARY)"
    ).format(HOT_COLUMNS, where)


def packed_query(device_keys: Sequence[int] | None, start: datetime, end: datetime) -> tuple[str, Any]:
    """Packed days that may hold readings with start <= ts < end."""
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
    query = """
        SELECT device_key, day - DATE '1970-01-01',
               (extract(epoch FROM received_at) * 1000000)::int8, data
        FROM water_reading_packed
        WHERE day >= %(first)s AND day <= %(last)s
        """
    params: dict[str, Any] = {"first": first, "last": last}
    if device_keys is not None:
        query += " AND device_key = ANY(%(keys)s::int4[])"
        params["keys"] = list(device_keys)
    return query, params


def packed_days(rows: Sequence[tuple[int, int, int, bytes]]) -> list[PackedDay]:
    return [PackedDay(key, day * _DAY_US, 0, received, bytes(data)) for key, day, received, data in rows]


def merge(packed: list[PackedDay], hot: WaterColumns, start: datetime, end: datetime) -> WaterColumns:
    """The packed readings and the hot ones in [start, end), sorted, each reading once.

    `hot` comes sorted and unique (the primary key, ORDER BY); with nothing packed in the
    range, the usual case for recent data, it is returned as it is, without a second sort.
    """
    if not packed:
        return hot
    old = decode_days(packed)
    if len(old):
        inside = (old.ts_us >= epoch_us(start)) & (old.ts_us < epoch_us(end))
        old = old.take(inside)
    return WaterColumns.concat([old, hot]).sorted_unique()


def read_water(
    conn: psycopg.Connection[Any], device_keys: Sequence[int] | None, start: datetime, end: datetime
) -> WaterColumns:
    """Water readings with start <= ts < end, hot and packed alike, sorted by (meter, ts).

    Both statements run in one REPEATABLE READ transaction (on an idle connection; inside a
    transaction the caller's isolation holds), so a batch the packing job commits between
    them is not seen half.
    """
    outer = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    if outer:
        return _read(conn, device_keys, start, end)
    saved = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            return _read(conn, device_keys, start, end)
    finally:
        conn.isolation_level = saved


def _read(
    conn: psycopg.Connection[Any], device_keys: Sequence[int] | None, start: datetime, end: datetime
) -> WaterColumns:
    query, params = packed_query(device_keys, start, end)
    with conn.cursor(binary=True) as cur:
        packed = packed_days(cur.execute(query, params).fetchall())
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(hot_query(device_keys, start, end)) as copy:
        for chunk in copy:
            buf += chunk
    return merge(packed, parse_hot_copy(bytes(buf)), start, end)


async def read_water_async(
    conn: psycopg.AsyncConnection[Any], device_keys: Sequence[int] | None, start: datetime, end: datetime
) -> WaterColumns:
    """`read_water` on an async connection (the console's pool), in one REPEATABLE READ snapshot
    when the connection is idle."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return await _read_async(conn, device_keys, start, end)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return await _read_async(conn, device_keys, start, end)


async def _read_async(
    conn: psycopg.AsyncConnection[Any], device_keys: Sequence[int] | None, start: datetime, end: datetime
) -> WaterColumns:
    query, params = packed_query(device_keys, start, end)
    async with conn.cursor(binary=True) as cur:
        await cur.execute(query, params)
        packed = packed_days(await cur.fetchall())
    buf = bytearray()
    async with conn.cursor() as cur, cur.copy(hot_query(device_keys, start, end)) as copy:
        async for chunk in copy:
            buf += chunk
    return merge(packed, parse_hot_copy(bytes(buf)), start, end)


def history_bounds(conn: psycopg.Connection[Any]) -> tuple[datetime | None, datetime | None]:
    """The earliest reading's ts and the newest received_at, over hot and packed history."""
    row = conn.execute("SELECT min(ts), time_from_2000(max(received_s)) FROM water_reading").fetchone()
    first, newest = row if row is not None else (None, None)
    row = conn.execute("SELECT min(day), max(received_at) FROM water_reading_packed").fetchone()
    day, packed_newest = row if row is not None else (None, None)
    if day is not None:
        midnight = datetime.combine(day, time(), UTC)
        got = read_water(conn, None, midnight, midnight + timedelta(days=1))
        if len(got):
            earliest = from_epoch_us(int(got.ts_us.min()))
            first = earliest if first is None else min(first, earliest)
    if packed_newest is not None:
        newest = packed_newest if newest is None else max(newest, packed_newest)
    return first, newest
