"""Views shared by the pages and the JSON API: fetch in scope, call the pure cores, shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import HTTPException, Request

from lovekey.vocabulary import DeviceKind
from lovekey.web import auth, queries
from lovekey.web.auth import Staff
from lovekey.web.deps import Console, actor_for, console_of
from lovekey.web.notifications import alert_view
from lovekey.web.queries import AsyncConn
from lovekey.web.reports import Report, build_report, month_range, month_starts
from lovekey.web.usage import HOUR_S, chart_start, hourly_usage, to_json, window_hours

# readings this far before the chart's first window are fetched, so its first delta is whole
USAGE_LOOKBACK = timedelta(days=1)


async def alert_or_404(request: Request, conn: AsyncConn, staff: Staff, alert_id: int) -> dict[str, Any]:
    """The alert with its notifications (shaped by `notifications.alert_view`: masked numbers,
    provider receipts, keys pressed, operator errors) and history if in scope; 404 otherwise
    (audited when it exists but is out of scope)."""
    alert = await queries.alert_detail(conn, staff.scope, alert_id)
    if alert is None:
        if await queries.alert_exists(conn, alert_id):
            await auth.audit(
                conn,
                actor_for(request, staff),
                "access_denied",
                f"alert:{alert_id}",
                console_of(request).clock(),
            )
        raise HTTPException(status_code=404, detail="alert")
    return alert_view(alert)


async def resident_or_404(
    request: Request, conn: AsyncConn, staff: Staff, resident_id: str
) -> dict[str, Any]:
    """The resident if in the staff member's scope; 404 otherwise (out of scope is audited,
    and answers exactly like a resident that does not exist)."""
    row = await queries.resident(conn, staff.scope, resident_id)
    if row is None:
        if await queries.resident_exists(conn, resident_id):
            await auth.audit(
                conn,
                actor_for(request, staff),
                "access_denied",
                f"resident:{resident_id}",
                console_of(request).clock(),
            )
        raise HTTPException(status_code=404, detail="resident")
    return row


async def build_resident_view(conn: AsyncConn, console: Console, row: dict[str, Any]) -> dict[str, Any]:
    web = console.settings.web
    now = console.clock()
    devices = await queries.resident_devices(
        conn,
        row["id"],
        row["household_id"],
        now=now,
        grace_s=web.silent_grace_s,
        low_battery_v=web.low_battery_v,
    )
    alerts = await queries.resident_alerts(conn, row["id"], [d["id"] for d in devices])
    events = await queries.resident_events(conn, [d["key"] for d in devices], since=queries.events_since(now))
    return {
        "resident": row,
        "devices": devices,
        "alerts": alerts,
        "events": events,
        "rule": {
            "min_l": console.settings.detect.low_usage_min_l,
            "window_h": window_hours(console.settings.detect.low_usage_window_h),
        },
    }


async def resident_usage(
    conn: AsyncConn, console: Console, row: dict[str, Any], *, days: int
) -> dict[str, Any]:
    """The hourly chart of the resident's water meters over the last `days` days."""
    detect = console.settings.detect
    zone = console.settings.zone
    now = console.clock()
    hours = days * 24
    start = chart_start(now, zone, hours)
    devices = await queries.resident_devices(
        conn, row["id"], row["household_id"], now=now, grace_s=0, low_battery_v=0.0
    )
    meters = [d["key"] for d in devices if d["kind"] == DeviceKind.WATER_METER]
    fetch_from = start - timedelta(seconds=(window_hours(detect.low_usage_window_h) - 1) * HOUR_S)
    readings = await queries.water_readings(
        conn, meters, fetch_from - USAGE_LOOKBACK, now, max_flow_lpm=console.settings.ingest.max_flow_lpm
    )
    usage = hourly_usage(
        readings.device_index,
        readings.ts_s,
        readings.total_l,
        start=start,
        hours=hours,
        now=now,
        min_l=detect.low_usage_min_l,
        window_h=detect.low_usage_window_h,
    )
    data = to_json(usage, zone, resident_id=row["id"], now=now)
    data["meters"] = [d["id"] for d in devices if d["kind"] == DeviceKind.WATER_METER]
    return data


@dataclass(frozen=True, slots=True)
class ReportRequest:
    months: int = 6


async def load_report(conn: AsyncConn, console: Console, staff: Staff, request: ReportRequest) -> Report:
    zone = console.settings.zone
    start, end = month_range(console.clock(), zone, request.months)
    rows = await queries.report_rows(conn, staff.scope, months=month_starts(start, end, zone))
    return build_report(rows, start=start, end=end, zone=zone)
