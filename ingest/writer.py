"""One batch plan, one transaction: staged binary COPY, idempotent inserts, state updates.

Readings and events are copied into temporary staging tables and moved with
`INSERT ... ON CONFLICT DO NOTHING`, so a redelivered message is absorbed by the primary
keys. Rejected input, device/gateway `last_seen` and the away status of residents are
written in the same transaction, so an acknowledged message is always fully applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, LiteralString

import psycopg

from lovekey.ingest.batch import BatchPlan
from lovekey.vocabulary import PRESENCE_EVENTS, EventType

# Staging tables live as long as the connection; ON COMMIT DELETE ROWS empties them.
_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS lk_stage_water (
    ts timestamptz, total_l float8, device_key int4, flow_lpm float4, battery_v float4
) ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS lk_stage_sensor (
    ts timestamptz, device_key int4, gas_lel_pct float4, smoke float4, temperature_c float4,
    battery_v float4
) ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS lk_stage_event (
    ts timestamptz, device_key int4, type text, active bool, value float4
) ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS lk_stage_level (
    ts timestamptz, device_key int4, type text, active bool, value float4
) ON COMMIT DELETE ROWS;
"""

# water_reading keeps a total as whole decilitres, or as the float itself where that would
# not give it back exactly (migration 0100); received_s defaults to the transaction's start.

# Column types of each binary COPY, in the column order of its target table.
_WATER_COLUMNS = ["timestamptz", "float8", "int4", "float4", "float4"]
_SENSOR_COLUMNS = ["timestamptz", "int4", "float4", "float4", "float4", "float4"]
_EVENT_COLUMNS = ["timestamptz", "int4", "text", "bool", "float4"]
_LEVEL_COLUMNS = _EVENT_COLUMNS
_REJECT_COLUMNS = ["text", "text", "text", "text", "text", "bytea", "int4", "text", "text"]

_INSERT_WATER = """
INSERT INTO water_reading (ts, total_dl, total_l_exact, device_key, flow_lpm, battery_v)
SELECT ts, whole_decilitres(total_l), total_l_exact_for(total_l), device_key, flow_lpm, battery_v
FROM lk_stage_water
ON CONFLICT DO NOTHING
"""
_INSERT_SENSOR = """
INSERT INTO sensor_reading (ts, device_key, gas_lel_pct, smoke, temperature_c, battery_v)
SELECT ts, device_key, gas_lel_pct, smoke, temperature_c, battery_v FROM lk_stage_sensor
ON CONFLICT DO NOTHING
"""
_INSERT_EVENTS = """
INSERT INTO device_event (ts, device_key, type, active, value)
SELECT ts, device_key, type, active, value FROM lk_stage_event
ON CONFLICT DO NOTHING
RETURNING device_key, type, ts, active
"""
# A level is an event where it differs from the state just before it: the newer of the
# device's newest stored event of that type before it (none: inactive) and the level before
# it in this batch (by time, whatever the arrival order). So smoke false -> true is stored
# once however often the snapshot repeats, a late or redelivered snapshot changes nothing,
# and a restart forgets nothing (the edges are in the table).
_INSERT_LEVELS = """
WITH staged AS (
    SELECT DISTINCT ON (device_key, type, ts) ts, device_key, type, active, value
    FROM lk_stage_level
    ORDER BY device_key, type, ts
), level AS (
    SELECT s.*,
           lag(s.ts) OVER w AS before_ts,
           lag(s.active) OVER w AS before_active
    FROM staged AS s
    WINDOW w AS (PARTITION BY s.device_key, s.type ORDER BY s.ts)
)
INSERT INTO device_event (ts, device_key, type, active, value)
SELECT l.ts, l.device_key, l.type, l.active, l.value
FROM level AS l
LEFT JOIN LATERAL (
    SELECT e.ts, e.active FROM device_event AS e
    WHERE e.device_key = l.device_key AND e.type = l.type AND e.ts < l.ts
    ORDER BY e.ts DESC LIMIT 1
) AS stored ON true
WHERE l.active IS DISTINCT FROM CASE
    WHEN l.before_ts IS NOT NULL AND (stored.ts IS NULL OR l.before_ts > stored.ts) THEN l.before_active
    ELSE COALESCE(stored.active, false)
END
ON CONFLICT DO NOTHING
RETURNING device_key, type, ts, active
"""

# Sorted input keeps row locks in one order, so two ingesters never deadlock on them.
_DEVICES_SEEN = """
UPDATE device AS d
SET last_seen = GREATEST(d.last_seen, %(seen)s), battery_v = COALESCE(v.battery_v, d.battery_v)
FROM unnest(%(keys)s::int4[], %(battery)s::float4[]) AS v(key, battery_v)
WHERE d.key = v.key
"""
_GATEWAYS_SEEN = """
UPDATE gateway AS g
SET last_seen = GREATEST(g.last_seen, %(seen)s),
    online = COALESCE(v.online, g.online),
    status_changed_at = CASE WHEN v.online IS DISTINCT FROM g.online AND v.online IS NOT NULL
                             THEN %(seen)s ELSE g.status_changed_at END
FROM unnest(%(ids)s::text[], %(online)s::bool[]) AS v(id, online)
WHERE g.id = v.id
"""

# `away` (active) marks the device's resident away; `home`, or `away` released, marks them
# back. Only the newest away/home event of a resident counts, so a late or redelivered
# older one never overrides a newer one. A device without a resident speaks for every
# resident of its household. Moved or deceased residents are left alone.
_PRESENCE = """
WITH ev AS (
    SELECT * FROM unnest(%(keys)s::int4[], %(ts)s::timestamptz[], %(away)s::bool[])
        AS v(device_key, ts, away)
), target AS (
    SELECT DISTINCT ON (r.id) r.id, ev.ts, ev.away
    FROM ev
    JOIN device d ON d.key = ev.device_key
    JOIN resident r ON r.id = d.resident_id
                    OR (d.resident_id IS NULL AND r.household_id = d.household_id)
    ORDER BY r.id, ev.ts DESC
)
UPDATE resident AS r
SET status = CASE WHEN t.away THEN 'away' ELSE 'active' END,
    away_until = CASE WHEN t.away THEN t.ts + make_interval(secs => %(away_s)s) END,
    away_reason = CASE WHEN t.away THEN 'away_button' END,
    updated_at = now()
FROM target t
WHERE r.id = t.id
  AND r.status IN ('active', 'away')
  AND NOT EXISTS (
      SELECT 1
      FROM device d2
      JOIN device_event e ON e.device_key = d2.key
      WHERE (d2.resident_id = r.id
             OR (d2.resident_id IS NULL AND d2.household_id = r.household_id))
        AND e.type IN ('away', 'home')
        AND e.ts > t.ts
  )
RETURNING r.id
"""


@dataclass(slots=True)
class WriteResult:
    water: int = 0  # rows inserted (not counting duplicates)
    sensor: int = 0
    events: int = 0
    duplicates: int = 0  # staged rows that were already stored
    level_events: int = 0  # state changes stored as events (also counted in `events`)
    rejected: int = 0
    residents_updated: list[str] = field(default_factory=list)

    def add(self, other: WriteResult) -> None:
        self.water += other.water
        self.sensor += other.sensor
        self.events += other.events
        self.duplicates += other.duplicates
        self.level_events += other.level_events
        self.rejected += other.rejected
        self.residents_updated += other.residents_updated


def prepare(conn: psycopg.Connection) -> None:
    """Create this connection's staging tables (call once after connecting)."""
    with conn.transaction():
        conn.execute(_STAGING)


def write_plan(
    conn: psycopg.Connection,
    plan: BatchPlan,
    *,
    devices_seen: list[tuple[int, float | None]],
    gateways_seen: list[tuple[str, bool | None]],
    away_s: float,
) -> WriteResult:
    """Apply `plan` in one transaction. `conn` is in autocommit mode and prepared.

    `devices_seen`/`gateways_seen` are the subset of the plan's the caller wants written
    (it skips those written recently); both are sorted by key.
    """
    result = WriteResult()
    with conn.transaction(), conn.cursor() as cur:
        if plan.water:
            _copy(cur, "COPY lk_stage_water FROM STDIN (FORMAT BINARY)", _WATER_COLUMNS, plan.water)
            cur.execute(_INSERT_WATER)
            result.water = cur.rowcount
        if plan.sensor:
            _copy(cur, "COPY lk_stage_sensor FROM STDIN (FORMAT BINARY)", _SENSOR_COLUMNS, plan.sensor)
            cur.execute(_INSERT_SENSOR)
            result.sensor = cur.rowcount
        inserted: list[tuple[Any, ...]] = []
        if plan.events:
            _copy(cur, "COPY lk_stage_event FROM STDIN (FORMAT BINARY)", _EVENT_COLUMNS, plan.events)
            cur.execute(_INSERT_EVENTS)
            inserted = cur.fetchall()
            result.events = len(inserted)
        if plan.levels:
            _copy(cur, "COPY lk_stage_level FROM STDIN (FORMAT BINARY)", _LEVEL_COLUMNS, plan.levels)
            cur.execute(_INSERT_LEVELS)
            changed = cur.fetchall()
            result.level_events = len(changed)
            inserted += changed
        if inserted:
            # only newly inserted away/home events move a resident: a redelivered one is not
            presence = [
                (k, ts, t == EventType.AWAY and active)
                for k, t, ts, active in inserted
                if t in PRESENCE_EVENTS
            ]
            if presence:
                result.residents_updated = _apply_presence(cur, presence, away_s)
            # wakes the detectors at commit, so an SOS does not wait for their next sweep
            cur.execute("SELECT pg_notify('lovekey_events', '')")
        if plan.rejected:
            _copy(
                cur,
                "COPY rejected_input (topic, gateway_id, device_id, reason, detail, payload,"
                " payload_bytes, source, external_id) FROM STDIN (FORMAT BINARY)",
                _REJECT_COLUMNS,
                [(*row, *origin) for row, origin in zip(plan.rejected, plan.rejected_origin, strict=True)],
            )
            result.rejected = len(plan.rejected)
        # in the same transaction as the rows: an acknowledged message is fully applied
        if devices_seen:
            cur.execute(
                _DEVICES_SEEN,
                {
                    "seen": plan.seen_at,
                    "keys": [key for key, _ in devices_seen],
                    "battery": [battery for _, battery in devices_seen],
                },
            )
        if gateways_seen:
            cur.execute(
                _GATEWAYS_SEEN,
                {
                    "seen": plan.seen_at,
                    "ids": [gateway for gateway, _ in gateways_seen],
                    "online": [online for _, online in gateways_seen],
                },
            )
    # ON CONFLICT DO NOTHING counts only what it inserted; the rest were already stored
    # (a level that did not change is not a duplicate: it was never a row to store)
    result.duplicates = plan.rows - result.water - result.sensor - result.events
    result.events += result.level_events
    return result


def _copy(
    cur: psycopg.Cursor[Any],
    statement: LiteralString,
    types: list[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    with cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _apply_presence(
    cur: psycopg.Cursor[Any],
    presence: list[tuple[int, datetime, bool]],
    away_s: float,
) -> list[str]:
    cur.execute(
        _PRESENCE,
        {
            "keys": [key for key, _, _ in presence],
            "ts": [ts for _, ts, _ in presence],
            "away": [away for _, _, away in presence],
            "away_s": away_s,
        },
    )
    return sorted(row[0] for row in cur.fetchall())
