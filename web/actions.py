"""What staff do from the console, each change audited in the same transaction.

Alert transitions go through `alerts.store` (the alerts package owns the alert lifecycle);
its API is synchronous psycopg, so those calls run in a worker thread on a small synchronous
pool. Planned absences write the resident's away columns (the single source of truth for
"away", shared with the `away`/`home` buttons).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from alerts import store as alert_store
from lovekey.errors import ConsoleError
from web.auth import Actor, audit, audit_sync

CONSOLE_CHANNEL = "console"
MAX_ABSENCE = timedelta(days=366)
MAX_NOTE = 2000
MAX_REASON = 200


def acknowledge_alert(pool: ConnectionPool[Any], alert_id: int, actor: Actor, now: datetime) -> bool:
    """Acknowledge (blocking: run it in a thread). False if someone acknowledged it first."""
    with pool.connection() as conn, conn.transaction():
        first = alert_store.acknowledge(
            conn, alert_id, by=actor.username, channel=CONSOLE_CHANNEL, now=now
        )
        audit_sync(conn, actor, "acknowledge", f"alert:{alert_id}", now, {"first": first})
    return first


def resolve_alert(
    pool: ConnectionPool[Any], alert_id: int, outcome: str, note: str | None, actor: Actor, now: datetime
) -> None:
    """Resolve with the outcome of the visit (blocking: run it in a thread)."""
    note = (note or "").strip()[:MAX_NOTE] or None
    with pool.connection() as conn, conn.transaction():
        alert_store.resolve(
            conn, alert_id, outcome=outcome, note=note, by=actor.username,
            channel=CONSOLE_CHANNEL, now=now,
        )
        audit_sync(conn, actor, "resolve", f"alert:{alert_id}", now, {"outcome": outcome, "note": note})


def check_absence(until: datetime, reason: str, now: datetime) -> str:
    """The cleaned reason, or ConsoleError when the absence makes no sense."""
    if until.tzinfo is None:
        raise ConsoleError("the end of an absence needs a time zone")
    if until <= now:
        raise ConsoleError("an absence must end in the future")
    if until > now + MAX_ABSENCE:
        raise ConsoleError("an absence may last at most a year")
    cleaned = " ".join(reason.split())[:MAX_REASON]
    if not cleaned:
        raise ConsoleError("an absence needs a reason")
    return cleaned


async def set_absence(
    conn: psycopg.AsyncConnection[Any],
    resident_id: str,
    *,
    until: datetime,
    reason: str,
    actor: Actor,
    now: datetime,
) -> None:
    """Mark the resident away until `until` (staff-planned absence)."""
    reason = check_absence(until, reason, now)
    async with conn.transaction():
        cur = await conn.execute(
            """
            UPDATE resident SET status = 'away', away_until = %s, away_reason = %s, updated_at = %s
            WHERE id = %s AND status IN ('active', 'away')
            """,
            (until, reason, now, resident_id),
        )
        if cur.rowcount != 1:
            raise ConsoleError(f"resident {resident_id} is not active; absence not recorded")
        await audit(conn, actor, "set_absence", f"resident:{resident_id}", now,
                    {"until": until.isoformat(), "reason": reason})


async def clear_absence(
    conn: psycopg.AsyncConnection[Any], resident_id: str, *, actor: Actor, now: datetime
) -> bool:
    """Mark the resident home again; False if they were not away."""
    async with conn.transaction():
        cur = await conn.execute(
            """
            UPDATE resident SET status = 'active', away_until = NULL, away_reason = NULL,
                                updated_at = %s
            WHERE id = %s AND status = 'away'
            """,
            (now, resident_id),
        )
        changed = cur.rowcount == 1
        await audit(conn, actor, "clear_absence", f"resident:{resident_id}", now, {"changed": changed})
    return changed
