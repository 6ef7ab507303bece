"""What the detector reads from and writes to PostgreSQL. SQL only here, as literals.

Readings are fetched with a binary COPY parsed straight into numpy (a fixed row layout:
int4, timestamptz, float8, timestamptz), which loads millions of rows a second instead of
building a Python tuple per row.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from lovekey.storage.history import read_water, seconds_since_2000
from lovekey.vocabulary import DOOR_EVENTS

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_PG_EPOCH_S = 946684800  # 2000-01-01 in Unix seconds: binary timestamptz counts from here
_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l1", ">i4"),
        ("key", ">i4"),
        ("l2", ">i4"),
        ("ts", ">i8"),
        ("l3", ">i4"),
        ("total", ">f8"),
        ("l4", ">i4"),
        ("received", ">i8"),
    ]
)


@dataclass(frozen=True, slots=True)
class ReadingColumns:
    """Water readings as columns: device key, epoch seconds, litres, arrival seconds."""

    key: I64
    ts_s: I64
    total_l: F64
    received_s: I64

    def __len__(self) -> int:
        return int(self.key.size)

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.int64]) -> ReadingColumns:
        return ReadingColumns(self.key[index], self.ts_s[index], self.total_l[index], self.received_s[index])

    @classmethod
    def empty(cls) -> ReadingColumns:
        i = np.empty(0, np.int64)
        return cls(i, i.copy(), np.empty(0, np.float64), i.copy())


def shard_of(text: str, shards: int) -> int:
    """A stable shard number for an id (CRC-32; the same in every process and release)."""
    return zlib.crc32(text.encode()) % shards


# -- registry ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterRow:
    device_id: str
    key: int
    gateway_id: str
    resident_id: str | None
    report_interval_s: int | None
    last_seen: datetime | None
    resident_rules: Mapping[str, Any] | None
    community_rules: Mapping[str, Any] | None


def water_meters(conn: psycopg.Connection[Any]) -> list[MeterRow]:
    """Every water meter, with its resident (or the household's resident) and their rules."""
    rows = conn.execute(
        """
        SELECT d.id, d.key, d.gateway_id, r.id, d.report_interval_s, d.last_seen,
               r.rules, c.rules
        FROM device d
        JOIN household h ON h.id = d.household_id
        LEFT JOIN community c ON c.id = h.community_id
        LEFT JOIN LATERAL (
            SELECT id, rules FROM resident
            WHERE id = d.resident_id
               OR (d.resident_id IS NULL AND household_id = d.household_id)
            ORDER BY id LIMIT 1
        ) r ON true
        WHERE d.kind = 'water_meter'
        ORDER BY d.id
        """
    ).fetchall()
    return [MeterRow(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class SignalDevice:
    """A device whose events raise life-safety alerts (smoke, gas, SOS buttons, ...)."""

    device_id: str
    key: int
    gateway_id: str
    resident_id: str | None


def event_devices(conn: psycopg.Connection[Any]) -> list[SignalDevice]:
    rows = conn.execute(
        """
        SELECT d.id, d.key, d.gateway_id, r.id
        FROM device d
        LEFT JOIN LATERAL (
            SELECT id FROM resident
            WHERE id = d.resident_id
               OR (d.resident_id IS NULL AND household_id = d.household_id)
            ORDER BY id LIMIT 1
        ) r ON true
        ORDER BY d.id
        """
    ).fetchall()
    return [SignalDevice(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class ResidentState:
    resident_id: str
    status: str
    away_until: datetime | None
    last_away: datetime | None  # newest away press since the window start
    last_home: datetime | None  # newest home press since the window start


def absent_residents(conn: psycopg.Connection[Any], since: datetime) -> list[ResidentState]:
    """Residents not plainly 'active', and those who pressed away/home since `since`."""
    rows = conn.execute(
        """
        WITH pressed AS (
            SELECT r.id, max(e.ts) FILTER (WHERE e.type = 'away') AS away_at,
                   max(e.ts) FILTER (WHERE e.type = 'home') AS home_at
            FROM device_event e
            JOIN device d ON d.key = e.device_key
            JOIN resident r ON r.id = d.resident_id
                            OR (d.resident_id IS NULL AND r.household_id = d.household_id)
            WHERE e.type IN ('away', 'home') AND e.ts >= %s
            GROUP BY r.id
        )
        SELECT r.id, r.status, r.away_until, p.away_at, p.home_at
        FROM resident r LEFT JOIN pressed p ON p.id = r.id
        WHERE r.status <> 'active' OR r.away_until IS NOT NULL OR p.id IS NOT NULL
        """,
        (since,),
    ).fetchall()
    return [ResidentState(*row) for row in rows]


def gateways(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, datetime | None]:
    """Per gateway: since when it reports itself offline (None: online or never said)."""
    rows = conn.execute(
        """
        SELECT id, CASE WHEN online IS FALSE THEN coalesce(status_changed_at, last_seen) END
        FROM gateway WHERE id = ANY(%s)
        """,
        (list(ids),),
    ).fetchall()
    return {gid: offline for gid, offline in rows}


# -- readings ---------------------------------------------------------------------------------


def readings_since_ts(
    conn: psycopg.Connection[Any], keys: Sequence[int], start: datetime, end: datetime
) -> ReadingColumns:
    """Readings of these meters with start <= ts <= end, ordered by meter and time, hot and
    packed alike (storage.history; a packed reading's received_s is its day's newest)."""
    got = read_water(conn, keys, start, end + timedelta(microseconds=1))
    return ReadingColumns(
        got.device_key.astype(np.int64),
        got.ts_us // 1_000_000,
        got.total_l,
        got.received_us // 1_000_000,
    )


def readings_received_after(conn: psycopg.Connection[Any], after: datetime) -> ReadingColumns:
    """Rows received after `after` (any meter), ordered by meter and time; arrival is kept to
    the second, so rows of `after`'s own second come too (the caller drops what it has seen)."""
    return _copy_readings(
        conn,
        sql.SQL(
            "SELECT device_key, ts, reading_total_l(total_dl, total_l_exact), time_from_2000(received_s)"
            " FROM water_reading WHERE received_s >= {} ORDER BY device_key, ts"
        ).format(sql.Literal(seconds_since_2000(after))),
    )


def concat(*parts: ReadingColumns) -> ReadingColumns:
    return ReadingColumns(
        np.concatenate([p.key for p in parts]),
        np.concatenate([p.ts_s for p in parts]),
        np.concatenate([p.total_l for p in parts]),
        np.concatenate([p.received_s for p in parts]),
    )


def _copy_readings(conn: psycopg.Connection[Any], query: sql.Composed) -> ReadingColumns:
    buf = bytearray()
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for data in copy:
            buf += data
    return parse_binary_copy(bytes(buf))


def parse_binary_copy(data: bytes) -> ReadingColumns:
    """Parse a binary COPY of (int4, timestamptz, float8, timestamptz) rows, none NULL."""
    if not data:
        return ReadingColumns.empty()
    if not data.startswith(b"PGCOPY\n\xff\r\n\0"):
        raise ValueError("not a binary COPY stream")
    ext = int.from_bytes(data[15:19], "big")
    body = data[19 + ext : -2]  # the trailer is int16 -1
    rows = np.frombuffer(body, dtype=_ROW)
    return ReadingColumns(
        rows["key"].astype(np.int64),
        rows["ts"].astype(np.int64) // 1_000_000 + _PG_EPOCH_S,
        rows["total"].astype(np.float64),
        rows["received"].astype(np.int64) // 1_000_000 + _PG_EPOCH_S,
    )


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRow:
    key: int
    type: str
    ts: datetime
    active: bool
    value: float | None
    received_at: datetime


def events_received_after(
    conn: psycopg.Connection[Any], after: datetime, types: Sequence[str]
) -> list[EventRow]:
    rows = conn.execute(
        """
        SELECT device_key, type, ts, active, value, received_at FROM device_event
        WHERE received_at > %s AND type = ANY(%s) ORDER BY received_at, device_key, ts
        """,
        (after, list(types)),
    ).fetchall()
    return [EventRow(*row) for row in rows]


# -- alerts already in the database -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownAlert:
    kind: str
    subject: str
    status: str
    since: datetime
    outcome: str | None
    resolved_at: datetime | None


def known_alerts(
    conn: psycopg.Connection[Any], kinds: Sequence[str], resolved_after: datetime
) -> list[KnownAlert]:
    """Unresolved alerts, and those a person resolved after `resolved_after`."""
    rows = conn.execute(
        """
        SELECT kind, subject, status, since, outcome, resolved_at FROM alert
        WHERE kind = ANY(%s)
          AND (status <> 'resolved' OR (resolved_at > %s AND outcome <> 'auto_cleared'))
        ORDER BY opened_at
        """,
        (list(kinds), resolved_after),
    ).fetchall()
    return [KnownAlert(*row) for row in rows]


def alerted_events(
    conn: psycopg.Connection[Any], kinds: Sequence[str], triggered_after: datetime
) -> set[tuple[str, str, datetime]]:
    """(kind, subject, event ts) of every event already raised, in alerts triggered after
    `triggered_after`: an event is raised once.

    An event that opened an alert is its `since`; one that only refreshed an open alert is
    found in the `events` its raise listed, which the alert's history keeps ('opened' and
    'updated' rows), even after the alert was resolved.
    """
    rows = conn.execute(
        """
        SELECT kind, subject, since FROM alert
        WHERE kind = ANY(%(kinds)s) AND last_triggered_at > %(after)s
        UNION
        SELECT a.kind, a.subject, e.ts::timestamptz
        FROM alert a
        JOIN alert_history h ON h.alert_id = a.id AND h.event IN ('opened', 'updated')
        CROSS JOIN LATERAL jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(h.detail -> 'events') = 'array' THEN h.detail -> 'events'
                 ELSE '[]'::jsonb END
        ) AS e(ts)
        WHERE a.kind = ANY(%(kinds)s) AND a.last_triggered_at > %(after)s
        """,
        {"kinds": list(kinds), "after": triggered_after},
    ).fetchall()
    return {(k, s, t) for k, s, t in rows}


# -- learned days -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayRow:
    key: int
    day: date
    use_bits: bytes
    valid: bool
    floor_min_l: float | None = None  # the least litres of the field rule's windows that day


def load_days(conn: psycopg.Connection[Any], first: date, *, bucket_s: int, day_start_s: int) -> list[DayRow]:
    rows = conn.execute(
        """
        SELECT device_key, day, use_bits, valid, floor_min_l FROM detector_day
        WHERE day >= %s AND bucket_s = %s AND day_start_s = %s
        """,
        (first, bucket_s, day_start_s),
    ).fetchall()
    return [DayRow(k, d, bytes(b), v, f) for k, d, b, v, f in rows]


def save_days(
    conn: psycopg.Connection[Any],
    rows: Sequence[DayRow],
    *,
    bucket_s: int,
    day_start_s: int,
    keep_after: date,
) -> None:
    """Upsert learned days (a staged COPY), and forget days older than `keep_after`."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS detector_day_in"
        " (device_key integer, day date, use_bits bytea, valid boolean, floor_min_l real)"
        " ON COMMIT DELETE ROWS"
    )
    with conn.cursor() as cur:
        with cur.copy(
            "COPY detector_day_in (device_key, day, use_bits, valid, floor_min_l) FROM STDIN"
        ) as cp:
            for row in rows:
                cp.write_row((row.key, row.day, row.use_bits, row.valid, row.floor_min_l))
        cur.execute(
            """
            INSERT INTO detector_day (device_key, day, bucket_s, day_start_s, use_bits, valid,
                                      floor_min_l)
            SELECT device_key, day, %s, %s, use_bits, valid, floor_min_l FROM detector_day_in
            ON CONFLICT (device_key, day) DO UPDATE
               SET bucket_s = EXCLUDED.bucket_s, day_start_s = EXCLUDED.day_start_s,
                   use_bits = EXCLUDED.use_bits, valid = EXCLUDED.valid,
                   floor_min_l = EXCLUDED.floor_min_l
            """,
            (bucket_s, day_start_s),
        )
        cur.execute("DELETE FROM detector_day WHERE day < %s", (keep_after,))


def utc(t_s: int) -> datetime:
    return datetime.fromtimestamp(t_s, UTC)


def epoch(t: datetime) -> int:
    return int(t.timestamp())


def days_ago(t: datetime, days: float) -> datetime:
    return t - timedelta(days=days)


# -- the resident seen up and about: the door reminder, and check-in answers -------------------


def door_passages(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> dict[str, datetime]:
    """Per resident, their newest passage at a door reminder taken in (since, until]."""
    rows = conn.execute(
        """
        SELECT d.resident_id, max(e.ts) FROM device_event e JOIN device d ON d.key = e.device_key
        WHERE e.type = ANY(%s) AND e.ts > %s AND e.ts <= %s AND d.resident_id IS NOT NULL
        GROUP BY d.resident_id
        """,
        ([str(t) for t in DOOR_EVENTS], since, until),
    ).fetchall()
    return {r: t for r, t in rows}


def door_households(conn: psycopg.Connection[Any]) -> set[str]:
    """Residents whose household (or who themselves) have a door reminder (`door_sensor`)."""
    rows = conn.execute(
        """
        SELECT DISTINCT r.id FROM device d
        JOIN resident r ON r.id = d.resident_id
                        OR (d.resident_id IS NULL AND r.household_id = d.household_id)
        WHERE d.kind = 'door_sensor'
        """
    ).fetchall()
    return {r for (r,) in rows}


def fine_answers(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> dict[str, datetime]:
    """Per resident, their newest check-in answered "fine" in (since, until] (`check_in_answer`
    belongs to the alerts package; the detectors only read it)."""
    rows = conn.execute(
        """
        SELECT resident_id, max(answered_at) FROM check_in_answer
        WHERE answer = 'fine' AND answered_at > %s AND answered_at <= %s
        GROUP BY resident_id
        """,
        (since, until),
    ).fetchall()
    return {r: t for r, t in rows}


def found_needing_help(conn: psycopg.Connection[Any], since: datetime) -> dict[str, datetime]:
    """Per resident, when the condition began of their newest alert begun after `since` that
    a person resolved as the resident needing help (outcome needed_help or hospital)."""
    # the outcomes as literals, as migration 0099's partial index names them: a parameter
    # array cannot prove the index's predicate, so a prepared statement's generic plan would
    # scan every alert ever raised
    rows = conn.execute(
        """
        SELECT resident_id, max(since) FROM alert
        WHERE outcome IN ('needed_help', 'hospital') AND since > %s AND resident_id IS NOT NULL
        GROUP BY resident_id
        """,
        (since,),
    ).fetchall()
    return {r: t for r, t in rows}


def fine_dry_stretches(
    conn: psycopg.Connection[Any], since: datetime, nth: int = 1
) -> list[tuple[str, str, int]]:
    """(resident, part of the day, minutes): the `nth` longest dry stretch at which each
    resident answered a check-in "fine" since `since`, per part of the day (none where they
    answered fewer times)."""
    rows = conn.execute(
        """
        SELECT resident_id, part_of_day, dry_minutes FROM (
            SELECT resident_id, part_of_day, dry_minutes,
                   row_number() OVER (PARTITION BY resident_id, part_of_day
                                      ORDER BY dry_minutes DESC) AS k
            FROM check_in_answer
            WHERE answer = 'fine' AND answered_at > %s
        ) ranked
        WHERE k = %s
        """,
        (since, nth),
    ).fetchall()
    return [(r, p, int(m)) for r, p, m in rows]


def found_well_stretches(
    conn: psycopg.Connection[Any], since: datetime, nth: int, within: timedelta
) -> list[tuple[str, str, int]]:
    """(resident, part of the day, minutes): per part of the day, the `nth` longest dry
    stretch at which a person found a resident well after a check-in they left unanswered
    (the stage ended since `since`; the alert resolved `resident_ok` or `away`). The
    stretch runs from the alert's start to when it was resolved, at most `within` after the
    resident was asked."""
    rows = conn.execute(
        """
        SELECT resident_id, part_of_day, minutes FROM (
            SELECT c.resident_id, c.part_of_day, m.minutes,
                   row_number() OVER (PARTITION BY c.resident_id, c.part_of_day
                                      ORDER BY m.minutes DESC) AS k
            FROM check_in_answer c
            JOIN alert a ON a.id = c.alert_id
            CROSS JOIN LATERAL (
                SELECT c.dry_minutes + greatest(0, least(
                    floor(extract(epoch FROM a.resolved_at - c.asked_at) / 60),
                    %(within)s))::int AS minutes
            ) m
            WHERE c.answered_at > %(since)s AND c.answer = 'none'
              AND a.outcome IN ('resident_ok', 'away')
        ) ranked
        WHERE k = %(nth)s
        """,
        {"since": since, "nth": nth, "within": int(within.total_seconds() // 60)},
    ).fetchall()
    return [(r, p, int(m)) for r, p, m in rows]


# A resident whose newest settled check-in found their phone unreachable (no call picked up,
# no text delivered, or no usable phone) is not asked for this long: their alerts take the
# neighbour tier's timing. Then the next alert asks them again, so a phone that works again
# (charged, found, its number fixed in the registry) is used again; one that still does not
# puts them back for as long. An answer, or a stage that reached the phone ('none'), makes
# them askable at once.
UNREACHABLE_RETRY = timedelta(days=14)


def unaskable_residents(conn: psycopg.Connection[Any], now: datetime) -> set[str]:
    """Residents the check-in stage cannot ask at `now`: no phone of their own, their community
    has switched the stage off, or their newest settled check-in (asked by `now`) found the
    phone unreachable less than `UNREACHABLE_RETRY` ago."""
    rows = conn.execute(
        """
        SELECT r.id FROM resident r
        JOIN household h ON h.id = r.household_id
        LEFT JOIN community c ON c.id = h.community_id
        WHERE r.phone IS NULL OR c.check_in_enabled IS FALSE
           OR EXISTS (
               SELECT 1 FROM (
                   SELECT a.answer, a.answered_at FROM check_in_answer a
                   WHERE a.resident_id = r.id AND a.answer IS NOT NULL AND a.asked_at <= %(now)s
                   ORDER BY a.asked_at DESC LIMIT 1
               ) newest
               WHERE newest.answer = 'unreachable' AND newest.answered_at > %(since)s
           )
        """,
        {"now": now, "since": now - UNREACHABLE_RETRY},
    ).fetchall()
    return {r for (r,) in rows}


def check_ins_settled(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> bool:
    """Whether any check-in was settled (answered, or closed unanswered) in (since, until]."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM check_in_answer WHERE answered_at > %s AND answered_at <= %s)",
        (since, until),
    ).fetchone()
    return bool(row and row[0])
