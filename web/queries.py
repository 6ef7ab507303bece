"""What the console reads, scoped: every query composes the staff member's `Scope` predicate.

Async psycopg on a pooled connection; `now` comes from the caller. The SQL reads tables of
other packages (registry, readings, alerts and their delivery outbox) and never writes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from lovekey.storage.history import read_water_async
from lovekey.vocabulary import (
    LIFE_SAFETY_KINDS,
    MAINTENANCE_KINDS,
    RESIDENT_CONTACT_ROLES,
    WELFARE_KINDS,
    AlertKind,
)
from lovekey.web.scope import ALERT_HOUSEHOLD_JOINS, Scope

# a plain async connection; `web.deps.Conn` is the route dependency that hands one out
AsyncConn = psycopg.AsyncConnection[Any]


# Urgency tiers of the queue: life-safety first, then welfare, then maintenance (device faults).
QUEUE_KINDS: tuple[AlertKind, ...] = LIFE_SAFETY_KINDS + WELFARE_KINDS + MAINTENANCE_KINDS


def urgency_tier(kind: str) -> int:
    """0 life-safety, 1 welfare, 2 maintenance and anything else."""
    if kind in LIFE_SAFETY_KINDS:
        return 0
    if kind in WELFARE_KINDS:
        return 1
    return 2


_TIER = sql.SQL(
    "CASE WHEN a.kind = ANY({}::text[]) THEN 0 WHEN a.kind = ANY({}::text[]) THEN 1 ELSE 2 END"
).format(sql.Literal(list(LIFE_SAFETY_KINDS)), sql.Literal(list(WELFARE_KINDS)))


Params = Sequence[Any] | dict[str, Any]
Query = sql.SQL | sql.Composed | str


async def _rows(conn: AsyncConn, query: Query, params: Params) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _one(conn: AsyncConn, query: Query, params: Params) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


# ---------------------------------------------------------------------------------- alerts


async def alert_queue(
    conn: AsyncConn, scope: Scope, *, kind: str | None = None, offset: int = 0, limit: int = 200
) -> list[dict[str, Any]]:
    """Unresolved alerts in scope by urgency: tier, not yet acknowledged first, oldest first;
    with the escalation state from the outbox (who was told, when, how many rounds)."""
    query = sql.SQL(
        """
        SELECT a.id, a.kind, a.subject, a.resident_id, a.device_id, a.gateway_id, a.status,
               a.since, a.opened_at, a.last_triggered_at, a.notified_at, a.acknowledged_at,
               a.acknowledged_by, a.ack_channel, a.escalation_due_at, a.details, a.stage,
               {tier} AS tier, ar.name AS resident_name, h.address, h.community_id, h.grid_id,
               t.told, t.last_told_at, t.rounds, t.pending, t.told_to,
               t.failed + coalesce(pm.undelivered, 0) AS undelivered,
               EXISTS (SELECT 1 FROM alert_history hi WHERE hi.alert_id = a.id
                         AND hi.event = 'provider_error' AND hi.detail @> '{{"operator": true}}')
                   AS operator_error
        FROM alert a {joins}
        LEFT JOIN LATERAL (
            SELECT count(*) FILTER (WHERE o.state = 'sent') AS told,
                   max(o.sent_at) AS last_told_at,
                   coalesce(max(o.round) + 1, 0) AS rounds,
                   count(*) FILTER (WHERE o.state = 'pending') AS pending,
                   count(*) FILTER (WHERE o.state = 'failed') AS failed,
                   (array_agg(json_build_object('name', o.name, 'role', o.role)
                              ORDER BY o.sent_at DESC) FILTER (WHERE o.state = 'sent'))[1:3]
                       AS told_to
            FROM alert_outbox o WHERE o.alert_id = a.id AND o.purpose = 'alert'
        ) t ON TRUE
        LEFT JOIN LATERAL (
            -- messages a provider took but then reported as never arrived (found through the
            -- outbox: provider_message is indexed by outbox row, not by alert)
            SELECT count(*) AS undelivered
            FROM alert_outbox po JOIN provider_message m ON m.outbox_id = po.id
            WHERE po.alert_id = a.id AND m.status = 'failed'
        ) pm ON TRUE
        WHERE a.status <> 'resolved' AND {visible}
          AND (%(kind)s::text IS NULL OR a.kind = %(kind)s::text)
        ORDER BY tier, a.status = 'acknowledged', a.opened_at, a.id
        OFFSET %(offset)s LIMIT %(limit)s
        """
    ).format(tier=_TIER, joins=ALERT_HOUSEHOLD_JOINS, visible=scope.alert("a", "h"))
    params = {**scope.params, "kind": kind, "offset": offset, "limit": limit}
    return await _rows(conn, query, params)


async def alert_counts(conn: AsyncConn, scope: Scope, *, kind: str | None = None) -> dict[int, int]:
    """Unresolved alerts in scope per urgency tier."""
    query = sql.SQL(
        "SELECT {tier} AS tier, count(*) AS n FROM alert a {joins}"
        " WHERE a.status <> 'resolved' AND {visible}"
        " AND (%(kind)s::text IS NULL OR a.kind = %(kind)s::text) GROUP BY 1"
    ).format(tier=_TIER, joins=ALERT_HOUSEHOLD_JOINS, visible=scope.alert("a", "h"))
    rows = await _rows(conn, query, {**scope.params, "kind": kind})
    return {int(r["tier"]): int(r["n"]) for r in rows}


async def alert_detail(conn: AsyncConn, scope: Scope, alert_id: int) -> dict[str, Any] | None:
    """One alert in scope, with who was told (outbox and attempts) and its history."""
    query = sql.SQL(
        """
        SELECT a.*, a.tier AS welfare_tier, {tier} AS tier, ar.name AS resident_name, h.address,
               h.community_id,
               h.grid_id
        FROM alert a {joins}
        WHERE a.id = %(id)s AND {visible}
        """
    ).format(tier=_TIER, joins=ALERT_HOUSEHOLD_JOINS, visible=scope.alert("a", "h"))
    alert = await _one(conn, query, {**scope.params, "id": alert_id})
    if alert is None:
        return None
    # every notification with its attempts and what the providers said: the message they
    # accepted (their id for it), its receipt (delivered / failed with their reason, a call
    # answered or not) and a key pressed in a call. `phone` leaves here only to be masked by
    # `web.notifications`.
    alert["deliveries"] = await _rows(
        conn,
        """
        SELECT o.id, o.purpose, o.round, o.step, o.role, o.name, o.phone, o.state, o.channels,
               o.created_at, o.not_before, o.sent_at, o.sent_channel, o.bundle_id,
               coalesce((SELECT json_agg(json_build_object(
                   'channel', d.channel, 'result', d.result, 'started_at', d.started_at,
                   'finished_at', d.finished_at, 'error', d.error) ORDER BY d.id)
                   FROM delivery_attempt d WHERE d.outbox_id = o.id), '[]') AS attempts,
               coalesce((SELECT json_agg(json_build_object(
                   'provider', m.provider, 'channel', m.channel, 'message_id', m.message_id,
                   'accepted_at', m.accepted_at, 'status', m.status, 'status_at', m.status_at,
                   'reason', m.reason, 'key_pressed', m.key_pressed, 'key_at', m.key_at)
                   ORDER BY m.accepted_at, m.id)
                   FROM provider_message m WHERE m.outbox_id = o.id), '[]') AS messages
        FROM alert_outbox o
        WHERE o.alert_id = %s
        ORDER BY o.round, o.created_at, o.id
        """,
        (alert_id,),
    )
    alert["history"] = await _rows(
        conn,
        "SELECT at, event, actor, detail FROM alert_history WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )
    # the check-in stage: the resident asked first, and what they answered (None: not asked)
    alert["check_in"] = await _one(
        conn,
        "SELECT asked_at, answered_at, answer, channel, dry_minutes, part_of_day"
        " FROM check_in_answer WHERE alert_id = %s",
        (alert_id,),
    )
    return alert


# how far back the overview looks for provider errors the operator must fix
OPERATOR_ERROR_WINDOW = timedelta(hours=24)


async def operator_errors(
    conn: AsyncConn, scope: Scope, *, since: datetime, limit: int = 20
) -> list[dict[str, Any]]:
    """Provider refusals the operator must fix (`provider_error` entries marked `operator` in
    the history of alerts in scope) since `since`, one row per channel and code: how many
    alerts, when last, the latest text, and the newest few alert ids."""
    query = sql.SQL(
        """
        SELECT hi.detail->>'channel' AS channel, hi.detail->>'code' AS code,
               count(DISTINCT hi.alert_id) AS alerts, max(hi.at) AS last_at,
               (array_agg(hi.detail->>'detail' ORDER BY hi.at DESC))[1] AS detail,
               (array_agg(hi.alert_id ORDER BY hi.at DESC))[1:5] AS alert_ids
        FROM alert_history hi JOIN alert a ON a.id = hi.alert_id {joins}
        WHERE hi.event = 'provider_error' AND hi.at >= %(since)s
          AND hi.detail @> '{{"operator": true}}' AND {visible}
        GROUP BY 1, 2
        ORDER BY last_at DESC
        LIMIT %(limit)s
        """
    ).format(joins=ALERT_HOUSEHOLD_JOINS, visible=scope.alert("a", "h"))
    rows = await _rows(conn, query, {**scope.params, "since": since, "limit": limit})
    for row in rows:
        row["alert_ids"] = list(dict.fromkeys(row["alert_ids"] or []))  # one alert, once
    return rows


async def alert_exists(conn: AsyncConn, alert_id: int) -> bool:
    return await _one(conn, "SELECT 1 AS x FROM alert WHERE id = %s", (alert_id,)) is not None


# ------------------------------------------------------------------------------- residents


async def resident_list(
    conn: AsyncConn, scope: Scope, *, search: str = "", offset: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """Residents in scope, by id; `search` matches id, name or address (case-insensitive)."""
    pattern = f"%{_like_escape(search.strip())}%" if search.strip() else None
    query = sql.SQL(
        """
        SELECT r.id, r.name, r.status, r.away_until, r.away_reason, h.address, h.community_id,
               h.grid_id,
               (SELECT count(*) FROM alert a WHERE a.resident_id = r.id
                  AND a.status <> 'resolved') AS open_alerts
        FROM resident r JOIN household h ON h.id = r.household_id
        WHERE {visible}
          AND (%(pattern)s::text IS NULL OR r.id ILIKE %(pattern)s OR r.name ILIKE %(pattern)s
               OR h.address ILIKE %(pattern)s)
        ORDER BY r.id
        OFFSET %(offset)s LIMIT %(limit)s
        """
    ).format(visible=scope.household("h"))
    params = {**scope.params, "pattern": pattern, "offset": offset, "limit": limit}
    return await _rows(conn, query, params)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def resident(conn: AsyncConn, scope: Scope, resident_id: str) -> dict[str, Any] | None:
    """A resident in scope with household, place, contacts and devices; None if not visible."""
    query = sql.SQL(
        """
        SELECT r.id, r.name, r.phone, r.language, r.status, r.away_until, r.away_reason,
               r.rules, r.updated_at, h.id AS household_id, h.address, h.community_id,
               c.name AS community_name, h.grid_id, g.name AS grid_name,
               h.building_id, h.unit_id
        FROM resident r JOIN household h ON h.id = r.household_id
        LEFT JOIN community c ON c.id = h.community_id
        LEFT JOIN grid g ON g.id = h.grid_id
        WHERE r.id = %(id)s AND {visible}
        """
    ).format(visible=scope.household("h"))
    row = await _one(conn, query, {**scope.params, "id": resident_id})
    if row is None:
        return None
    row["contacts"] = await _rows(
        conn,
        "SELECT role, position, name, phone, language FROM contact WHERE resident_id = %s"
        " ORDER BY array_position(%s::text[], role), position",
        (resident_id, list(RESIDENT_CONTACT_ROLES)),
    )
    return row


async def resident_exists(conn: AsyncConn, resident_id: str) -> bool:
    return await _one(conn, "SELECT 1 AS x FROM resident WHERE id = %s", (resident_id,)) is not None


async def resident_devices(
    conn: AsyncConn, resident_id: str, household_id: str, *, now: datetime, grace_s: int, low_battery_v: float
) -> list[dict[str, Any]]:
    """The devices of the resident (or of their household with no resident set) with health."""
    return await _rows(
        conn,
        """
        SELECT d.id, d.key, d.kind, d.gateway_id, d.report_interval_s, d.last_seen, d.battery_v,
               gw.online AS gateway_online, gw.last_seen AS gateway_last_seen,
               d.report_interval_s IS NOT NULL
                 AND (d.last_seen IS NULL OR d.last_seen < %(now)s
                      - make_interval(secs => d.report_interval_s + %(grace)s)) AS silent,
               d.battery_v IS NOT NULL AND d.battery_v < %(low)s AS low_battery
        FROM device d LEFT JOIN gateway gw ON gw.id = d.gateway_id
        WHERE d.resident_id = %(resident)s
           OR (d.resident_id IS NULL AND d.household_id = %(household)s)
        ORDER BY d.kind, d.id
        """,
        {
            "now": now,
            "grace": grace_s,
            "low": low_battery_v,
            "resident": resident_id,
            "household": household_id,
        },
    )


async def resident_alerts(
    conn: AsyncConn, resident_id: str, device_ids: Sequence[str], *, limit: int = 50
) -> list[dict[str, Any]]:
    """The resident's alerts and their devices' alerts, newest first."""
    query = sql.SQL(
        """
        SELECT a.id, a.kind, a.status, a.since, a.opened_at, a.acknowledged_at,
               a.acknowledged_by, a.resolved_at, a.outcome, a.outcome_note, {tier} AS tier,
               c.answer AS check_in_answer
        FROM alert a LEFT JOIN check_in_answer c ON c.alert_id = a.id
        WHERE a.resident_id = %s OR a.device_id = ANY(%s::text[])
        ORDER BY a.opened_at DESC, a.id DESC
        LIMIT %s
        """
    ).format(tier=_TIER)
    return await _rows(conn, query, (resident_id, list(device_ids), limit))


async def resident_events(
    conn: AsyncConn, device_keys: Sequence[int], *, since: datetime, limit: int = 50
) -> list[dict[str, Any]]:
    """Device events (smoke, gas, sos, away, home, ...) of these devices since `since`."""
    return await _rows(
        conn,
        """
        SELECT e.ts, e.received_at, e.type, e.active, e.value, d.id AS device_id, d.kind
        FROM device_event e JOIN device d ON d.key = e.device_key
        WHERE e.device_key = ANY(%s::int[]) AND e.ts >= %s
        ORDER BY e.ts DESC
        LIMIT %s
        """,
        (list(device_keys), since, limit),
    )


@dataclass(frozen=True, slots=True)
class MeterSeries:
    """Water readings of a few meters, sorted by (device, ts), as arrays."""

    device_index: np.ndarray[Any, np.dtype[np.int64]]
    ts_s: np.ndarray[Any, np.dtype[np.float64]]
    total_l: np.ndarray[Any, np.dtype[np.float64]]


async def water_readings(
    conn: AsyncConn, device_keys: Sequence[int], start: datetime, end: datetime, *, max_flow_lpm: float
) -> MeterSeries:
    """Readings of the meters in [start, end], hot and packed alike (storage.history: one
    index range scan of each table per meter); rises faster than `max_flow_lpm`
    (`ingest.max_flow_lpm`) taken out, see `without_jumps`."""
    got = await read_water_async(conn, device_keys, start, end + timedelta(microseconds=1))
    if not len(got):
        empty_f = np.zeros(0, dtype=np.float64)
        return MeterSeries(np.zeros(0, dtype=np.int64), empty_f, empty_f.copy())
    device_index = got.device_key.astype(np.int64)
    ts_s = got.ts_us / 1_000_000
    return MeterSeries(
        device_index,
        ts_s,
        without_jumps(device_index, ts_s, got.total_l, max_flow_lpm=max_flow_lpm),
    )


def without_jumps(
    device_index: np.ndarray[Any, np.dtype[np.int64]],
    ts_s: np.ndarray[Any, np.dtype[np.float64]],
    total_l: np.ndarray[Any, np.dtype[np.float64]],
    *,
    max_flow_lpm: float,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Totals (sorted by device, ts) with every rise faster than a pipe can deliver taken out.

    Such a step (a register glitch stored before the ingester rejected them) is no use, as
    the detectors count it; left in, one 5e11 L step drew a 1e12 L bar. Later totals are
    lowered by the step, so what the meter counted after it is still shown.
    """
    if total_l.size < 2:
        return total_l
    rise = np.diff(total_l)
    span_s = np.maximum(np.diff(ts_s), 60.0)
    jump = (device_index[1:] == device_index[:-1]) & (rise > max_flow_lpm / 60.0 * span_s)
    if not jump.any():
        return total_l
    step = np.concatenate([[0.0], np.where(jump, rise, 0.0)])
    run = np.cumsum(step)
    first = np.concatenate([[True], device_index[1:] != device_index[:-1]])
    # each device's running sum starts again at its first reading
    start_of = np.maximum.accumulate(np.where(first, np.arange(total_l.size), 0))
    rebased: np.ndarray[Any, np.dtype[np.float64]] = total_l - (run - run[start_of])
    return rebased


# ----------------------------------------------------------------------------- device health


async def device_health(
    conn: AsyncConn, scope: Scope, *, now: datetime, grace_s: int, low_battery_v: float, limit: int = 100
) -> dict[str, Any]:
    """Silent meters, offline gateways and low batteries in scope: counts by community, and
    the first `limit` of each list."""
    params = {**scope.params, "now": now, "grace": grace_s, "low": low_battery_v, "limit": limit}
    # One pass over the devices in scope, hash-aggregated by community (no ordered aggregate,
    # which would sort every device): the counts, the flagged devices with their sort key,
    # and the devices behind offline gateways. The lists are the first `limit` flagged
    # devices in order, fetched by key.
    summary = await _rows(
        conn,
        sql.SQL(
            """
            SELECT h.community_id, max(c.name) AS community_name,
                   count(*) FILTER (WHERE d.kind = 'water_meter') AS meters,
                   count(*) FILTER (WHERE f.silent) AS silent_meters,
                   count(*) FILTER (WHERE f.low) AS low_batteries,
                   count(*) AS devices,
                   json_agg(json_build_array(d.id, extract(epoch FROM d.last_seen)))
                       FILTER (WHERE f.silent) AS silent,
                   json_agg(json_build_array(d.id, d.battery_v)) FILTER (WHERE f.low) AS low,
                   array_agg(d.gateway_id) FILTER (WHERE gw.online IS NOT TRUE) AS offline_devices
            FROM device d JOIN household h ON h.id = d.household_id
            LEFT JOIN gateway gw ON gw.id = d.gateway_id
            CROSS JOIN LATERAL (
                SELECT d.kind = 'water_meter' AND {silent} AS silent,
                       coalesce(d.battery_v < %(low)s, false) AS low
            ) f
            LEFT JOIN community c ON c.id = h.community_id
            WHERE {visible}
            GROUP BY h.community_id
            ORDER BY h.community_id NULLS LAST
            """
        ).format(silent=_SILENT, visible=scope.household("h")),
        params,
    )
    silent = await _devices_by_id(conn, _first(summary, "silent", limit))
    low = await _devices_by_id(conn, _first(summary, "low", limit))
    # offline gateways: which communities in scope they serve, and how many devices there
    served: dict[str, Counter[str | None]] = {}
    for row in summary:
        behind = Counter(row.pop("offline_devices") or [])
        row["offline_gateways"] = len(behind)
        for gateway_id, devices in behind.items():
            served.setdefault(gateway_id, Counter())[row["community_id"]] += devices
    gateways = (
        await _rows(
            conn,
            """
        SELECT id, name, online, status_changed_at, last_seen FROM gateway WHERE id = ANY(%s::text[])
        ORDER BY status_changed_at NULLS FIRST, id
        LIMIT %s
        """,
            (list(served), limit),
        )
        if served
        else []
    )
    for gw in gateways:
        by_community = served[gw["id"]]
        gw["communities"] = sorted(c for c in by_community if c is not None)
        gw["devices"] = sum(by_community.values())
    return {"summary": summary, "silent_meters": silent, "low_batteries": low, "offline_gateways": gateways}


def _first(summary: list[dict[str, Any]], name: str, limit: int) -> list[str]:
    """The first `limit` ids of a list from the per-community [id, sort key] pairs, in order
    of key then id; a missing key (a meter never heard from) comes first."""
    pairs = [
        (pair[1] is not None, pair[1] or 0, pair[0]) for row in summary for pair in (row.pop(name) or [])
    ]
    return [device_id for _, _, device_id in sorted(pairs)[:limit]]


async def _devices_by_id(conn: AsyncConn, ids: list[str]) -> list[dict[str, Any]]:
    """The devices of `ids` with their place, in the order given."""
    if not ids:
        return []
    rows = await _rows(
        conn,
        """
        SELECT d.id, d.kind, d.gateway_id, d.last_seen, d.report_interval_s, d.battery_v,
               d.resident_id, h.community_id, h.grid_id, h.address
        FROM device d JOIN household h ON h.id = d.household_id
        WHERE d.id = ANY(%s::text[])
        """,
        (ids,),
    )
    position = {device_id: n for n, device_id in enumerate(ids)}
    return sorted(rows, key=lambda r: position[r["id"]])


_SILENT = sql.SQL(
    "d.report_interval_s IS NOT NULL AND (d.last_seen IS NULL OR d.last_seen < %(now)s"
    " - make_interval(secs => d.report_interval_s + %(grace)s))"
)


# ---------------------------------------------------------------------------------- reports


async def report_rows(
    conn: AsyncConn, scope: Scope, *, months: Sequence[datetime]
) -> dict[str, list[dict[str, Any]]]:
    """Alert figures per (community, month) for alerts opened from `months[0]` up to
    `months[-1]` (the boundaries of local months, ascending), in one pass over the alerts:
    counts per kind and per outcome, and acknowledgement times per community-month and per
    month over all communities (grouping sets). A row's month is found by binary search
    over the boundaries (width_bucket), not by time-zone arithmetic on every alert."""
    query = sql.SQL(
        """
        WITH al AS (
            SELECT a.kind, a.outcome, h.community_id,
                   width_bucket(a.opened_at, %(bounds)s::timestamptz[]) AS month,
                   extract(epoch FROM a.acknowledged_at - a.opened_at)::float8 AS ack_s
            FROM alert a {joins}
            WHERE a.opened_at >= %(start)s AND a.opened_at < %(end)s AND {visible}
        )
        SELECT community_id, month, kind, outcome,
               GROUPING(community_id, kind, outcome) AS grouping,
               count(*) AS n, count(ack_s) AS acknowledged,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_s) AS ack_p50_s,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY ack_s) AS ack_p90_s
        FROM al
        GROUP BY GROUPING SETS ((community_id, month, kind), (community_id, month, outcome),
                                (community_id, month), (month))
        """
    ).format(joins=ALERT_HOUSEHOLD_JOINS, visible=scope.alert("a", "h"))
    params = {**scope.params, "bounds": list(months), "start": months[0], "end": months[-1]}
    rows = await _rows(conn, query, params)
    for row in rows:
        row["month"] = months[row["month"] - 1]
    # GROUPING bits, high to low: community_id, kind, outcome (1 = rolled up)
    by_kind = [r for r in rows if r["grouping"] == 0b001]
    by_outcome = [r for r in rows if r["grouping"] == 0b010 and r["outcome"] is not None]
    ack = [{**r, "all_communities": r["grouping"] == 0b111} for r in rows if r["grouping"] in (0b011, 0b111)]
    households = await _rows(
        conn,
        sql.SQL(
            "SELECT h.community_id, count(*) AS households FROM household h WHERE {visible}"
            " GROUP BY 1 ORDER BY 1"
        ).format(visible=scope.household("h")),
        scope.params,
    )
    return {"by_kind": by_kind, "by_outcome": by_outcome, "ack": ack, "households": households}


# ------------------------------------------------------------------------------------ audit


async def audit_entries(
    conn: AsyncConn, *, limit: int = 200, before_id: int | None = None
) -> list[dict[str, Any]]:
    return await _rows(
        conn,
        "SELECT id, at, username, action, target, ip, user_agent, detail FROM audit_log"
        " WHERE %s::bigint IS NULL OR id < %s ORDER BY id DESC LIMIT %s",
        (before_id, before_id, limit),
    )


def events_since(now: datetime) -> datetime:
    """How far back the resident page lists device events."""
    return now - timedelta(days=30)
