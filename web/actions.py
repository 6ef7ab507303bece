"""What staff do from the console, each change audited in the same transaction.

Alert transitions go through `alerts.store`, planned absences through `alerts.absence` (the
alerts package owns the alert lifecycle, and an absence resolves the alerts it suppresses),
using their `*_async` variants: the same SQL the detectors and the worker run, awaited on the
request's own connection from the console's one pool. Each function is one transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from lovekey.alerts import absence
from lovekey.alerts import store as alert_store
from lovekey.alerts.chains import ChainBook
from lovekey.errors import AlertError, ConsoleError
from lovekey.web.auth import Actor, audit

CONSOLE_CHANNEL = "console"
MAX_ABSENCE = timedelta(days=366)
MAX_NOTE = 2000
MAX_REASON = 200


async def acknowledge_alert(
    conn: psycopg.AsyncConnection[Any], alert_id: int, actor: Actor, now: datetime
) -> bool:
    """Acknowledge. False if someone acknowledged it first."""
    async with conn.transaction():
        first = await alert_store.acknowledge_async(
            conn, alert_id, by=actor.username, channel=CONSOLE_CHANNEL, now=now
        )
        await audit(conn, actor, "acknowledge", f"alert:{alert_id}", now, {"first": first})
    return first


async def resolve_alert(
    conn: psycopg.AsyncConnection[Any],
    alert_id: int,
    outcome: str,
    note: str | None,
    actor: Actor,
    now: datetime,
) -> None:
    """Resolve with the outcome of the visit."""
    note = (note or "").strip()[:MAX_NOTE] or None
    async with conn.transaction():
        await alert_store.resolve_async(
            conn,
            alert_id,
            outcome=outcome,
            note=note,
            by=actor.username,
            channel=CONSOLE_CHANNEL,
            now=now,
        )
        await audit(conn, actor, "resolve", f"alert:{alert_id}", now, {"outcome": outcome, "note": note})


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
    chains: ChainBook,
    resident_id: str,
    *,
    until: datetime,
    reason: str,
    actor: Actor,
    now: datetime,
) -> list[int]:
    """Mark the resident away until `until` through `alerts.absence` (which also resolves
    their alerts that are suppressed while away, as 'away'). Returns the ids of the alerts
    resolved."""
    reason = check_absence(until, reason, now)
    async with conn.transaction():
        try:
            resolved = await absence.set_away_async(
                conn, resident_id, until=until, reason=reason, now=now, chains=chains
            )
        except AlertError as exc:
            raise ConsoleError(str(exc)) from exc
        await audit(
            conn,
            actor,
            "set_absence",
            f"resident:{resident_id}",
            now,
            {"until": until.isoformat(), "reason": reason, "resolved_alerts": resolved},
        )
    return resolved


async def clear_absence(
    conn: psycopg.AsyncConnection[Any], resident_id: str, *, actor: Actor, now: datetime
) -> bool:
    """Mark the resident home again; False if they were not away."""
    async with conn.transaction():
        changed = await absence.clear_away_async(conn, resident_id, now=now)
        await audit(conn, actor, "clear_absence", f"resident:{resident_id}", now, {"changed": changed})
    return changed
