"""What staff do from the console, each change audited in the same transaction.

Alert transitions go through `alerts.store`, planned absences through `alerts.absence` (the
alerts package owns the alert lifecycle, and an absence resolves the alerts it suppresses).
Both are synchronous psycopg, so these functions block: the routes run them in a worker
thread on the console's small synchronous pool.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from lovekey.alerts import absence
from lovekey.alerts import store as alert_store
from lovekey.alerts.chains import ChainBook
from lovekey.errors import AlertError, ConsoleError
from lovekey.web.auth import Actor, audit_sync

CONSOLE_CHANNEL = "console"
MAX_ABSENCE = timedelta(days=366)
MAX_NOTE = 2000
MAX_REASON = 200


def acknowledge_alert(pool: ConnectionPool[Any], alert_id: int, actor: Actor, now: datetime) -> bool:
    """Acknowledge (blocking: run it in a thread). False if someone acknowledged it first."""
    with pool.connection() as conn, conn.transaction():
        first = alert_store.acknowledge(conn, alert_id, by=actor.username, channel=CONSOLE_CHANNEL, now=now)
        audit_sync(conn, actor, "acknowledge", f"alert:{alert_id}", now, {"first": first})
    return first


def resolve_alert(
    pool: ConnectionPool[Any], alert_id: int, outcome: str, note: str | None, actor: Actor, now: datetime
) -> None:
    """Resolve with the outcome of the visit (blocking: run it in a thread)."""
    note = (note or "").strip()[:MAX_NOTE] or None
    with pool.connection() as conn, conn.transaction():
        alert_store.resolve(
            conn,
            alert_id,
            outcome=outcome,
            note=note,
            by=actor.username,
            channel=CONSOLE_CHANNEL,
            now=now,
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


def set_absence(
    pool: ConnectionPool[Any],
    chains: ChainBook,
    resident_id: str,
    *,
    until: datetime,
    reason: str,
    actor: Actor,
    now: datetime,
) -> list[int]:
    """Mark the resident away until `until` through `alerts.absence` (which also resolves
    their alerts that are suppressed while away, as 'away'). Blocking: run it in a thread.
    Returns the ids of the alerts resolved."""
    reason = check_absence(until, reason, now)
    with pool.connection() as conn, conn.transaction():
        try:
            resolved = absence.set_away(conn, resident_id, until=until, reason=reason, now=now, chains=chains)
        except AlertError as exc:
            raise ConsoleError(str(exc)) from exc
        audit_sync(
            conn,
            actor,
            "set_absence",
            f"resident:{resident_id}",
            now,
            {"until": until.isoformat(), "reason": reason, "resolved_alerts": resolved},
        )
    return resolved


def clear_absence(pool: ConnectionPool[Any], resident_id: str, *, actor: Actor, now: datetime) -> bool:
    """Mark the resident home again; False if they were not away. Blocking: run it in a thread."""
    with pool.connection() as conn, conn.transaction():
        changed = absence.clear_away(conn, resident_id, now=now)
        audit_sync(conn, actor, "clear_absence", f"resident:{resident_id}", now, {"changed": changed})
    return changed
