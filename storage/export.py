"""`lovekey export readings`: water readings of a period as CSV or Parquet, for analysts.

Reads through `storage.history`, so hot and packed days come out alike, one UTC day and a
batch of meters at a time: memory stays at one batch whatever the period. Rows are in
(day, meter, ts) order with the columns

    device_id, ts, total_l, flow_lpm, battery_v

CSV: `ts` in RFC 3339 UTC (`2026-01-01T00:15:00Z`, microseconds only where the meter sent
them), numbers in their shortest exact form (float64 totals; flow and battery as the
float32 PostgreSQL stored), an empty cell where a value was not sent. Parquet (pyarrow,
`pip install 'lovekey[parquet]'`): `device_id` dictionary-encoded string, `ts`
`timestamp[us, tz=UTC]`, `total_l` float64, `flow_lpm`/`battery_v` float32 with nulls, one
row group per day; `pandas.read_parquet` gives the right dtypes with no conversion.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import psycopg

from lovekey.errors import StorageError
from lovekey.storage.compact import WaterColumns
from lovekey.storage.history import read_water

COLUMNS = ("device_id", "ts", "total_l", "flow_lpm", "battery_v")
FORMATS = ("csv", "parquet")
_BATCH_METERS = 5000  # about 480,000 readings a read at 15 minutes


@dataclass(frozen=True, slots=True)
class ExportBatch:
    """One read's readings with their device ids, sorted by (meter, ts)."""

    device_id: npt.NDArray[np.object_]
    readings: WaterColumns


def meters(conn: psycopg.Connection[Any], community: str | None) -> dict[int, str]:
    """Water meters to export (of one community, or all): device key -> device id."""
    if community is None:
        rows = conn.execute("SELECT key, id FROM device WHERE kind = 'water_meter' ORDER BY key").fetchall()
    else:
        found = conn.execute("SELECT 1 FROM community WHERE id = %s", (community,)).fetchone()
        if found is None:
            raise StorageError(f"no community {community!r} in the registry")
        rows = conn.execute(
            """
            SELECT d.key, d.id FROM device d JOIN household h ON h.id = d.household_id
            WHERE d.kind = 'water_meter' AND h.community_id = %s ORDER BY d.key
            """,
            (community,),
        ).fetchall()
    return dict(rows)


def batches(
    conn: psycopg.Connection[Any],
    first: date,
    last: date,
    ids: dict[int, str],
    *,
    batch_meters: int = _BATCH_METERS,
) -> Iterator[tuple[date, ExportBatch]]:
    """Readings of the days first..last (inclusive, UTC), a day and a batch of meters at a time."""
    keys = sorted(ids)
    lookup = np.array([ids[k] for k in keys], dtype=object)
    sorted_keys = np.array(keys, np.int64)
    day = first
    while day <= last:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for i in range(0, len(keys), batch_meters):
            got = read_water(conn, keys[i : i + batch_meters], start, start + timedelta(days=1))
            if len(got):
                where = np.searchsorted(sorted_keys, got.device_key.astype(np.int64))
                yield day, ExportBatch(lookup[where], got)
        day += timedelta(days=1)


def rfc3339(ts_us: npt.NDArray[np.int64]) -> npt.NDArray[np.str_]:
    """UTC RFC 3339 text, to the second unless the reading carries microseconds."""
    moments = ts_us.astype("datetime64[us]")
    seconds = np.datetime_as_string(moments, unit="s", timezone="UTC")
    if not (ts_us % 1_000_000).any():
        return seconds
    micro = np.datetime_as_string(moments, unit="us", timezone="UTC")
    return np.where(ts_us % 1_000_000 == 0, seconds, micro)


def _text(values: npt.NDArray[Any]) -> list[str]:
    """Shortest exact decimal of each value (float32 as float32), '' for NaN (not sent)."""
    return ["" if v != v else str(v) for v in values]


def write_csv(
    out: IO[str], parts: Iterator[tuple[date, ExportBatch]], progress: Callable[[date, int], None]
) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for day, part in parts:
        r = part.readings
        # numpy scalars print their shortest round-tripping form, float32 included
        rows = zip(
            part.device_id.tolist(),
            rfc3339(r.ts_us).tolist(),
            [repr(v) for v in r.total_l.tolist()],
            _text(r.flow_lpm),
            _text(r.battery_v),
            strict=True,
        )
        writer.writerows(rows)
        count += len(r)
        progress(day, len(r))
    return count


def write_parquet(
    path: Path, parts: Iterator[tuple[date, ExportBatch]], progress: Callable[[date, int], None]
) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise StorageError("Parquet needs pyarrow: pip install 'lovekey[parquet]'") from exc
    schema = pa.schema(
        [
            ("device_id", pa.dictionary(pa.int32(), pa.string())),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("total_l", pa.float64()),
            ("flow_lpm", pa.float32()),
            ("battery_v", pa.float32()),
        ]
    )
    count = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for day, part in parts:
            r = part.readings
            table = pa.table(
                [
                    pa.array(part.device_id, pa.string()).dictionary_encode(),
                    pa.array(r.ts_us, pa.timestamp("us", tz="UTC")),
                    pa.array(r.total_l, pa.float64()),
                    pa.array(r.flow_lpm, pa.float32(), mask=np.isnan(r.flow_lpm)),
                    pa.array(r.battery_v, pa.float32(), mask=np.isnan(r.battery_v)),
                ],
                schema=schema,
            )
            writer.write_table(table)
            count += len(r)
            progress(day, len(r))
    return count


def export_readings(
    conn: psycopg.Connection[Any],
    out: Path,
    *,
    first: date,
    last: date,
    fmt: str,
    community: str | None = None,
    progress: Callable[[date, int], None] = lambda day, n: None,
) -> int:
    """Write the readings of days first..last (UTC, inclusive) to `out`; returns the count."""
    if fmt not in FORMATS:
        raise StorageError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    if last < first:
        raise StorageError(f"--to {last} is before --from {first}")
    ids = meters(conn, community)
    parts = batches(conn, first, last, ids)
    if fmt == "parquet":
        return write_parquet(out, parts, progress)
    with out.open("w", encoding="utf-8", newline="") as f:
        return write_csv(f, parts, progress)


def csv_text(conn: psycopg.Connection[Any], first: date, last: date) -> str:
    """The CSV export of every meter as one string (tests and small periods)."""
    buf = io.StringIO()
    write_csv(buf, batches(conn, first, last, meters(conn, None)), lambda day, n: None)
    return buf.getvalue()
