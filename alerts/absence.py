"""Planned absences ("staying at my daughter's until Sunday").

The resident's away state is `resident.status = 'away'` with `away_until` and `away_reason`:
the single source of truth that the away button, the console and this CLI all write. While
away, kinds whose chain has `suppress_when_away` (low usage, routine break) raise no alerts
(the detectors skip them) and any that are open are resolved with outcome 'away' here, so
the worker stands down whoever was already told.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from lovekey.alerts.chains import ChainBook
from lovekey.alerts.store import add_history, add_history_async
from lovekey.errors import AlertError
from lovekey.vocabulary import Outcome

# the longest planned absence, as the console allows (web.actions.MAX_ABSENCE): while away
# a resident gets no low-usage alerts, so "300d" typed for "30d" would silence them for a year
MAX_ABSENCE = timedelta(days=366)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm])\s*$")


def parse_until(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """'2025-03-09 18:00', '2025-03-09' (end of that day), or relative '3d' / '12h' / '90m'."""
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match[1]), match[2]
        seconds = amount * {"d": 86400, "h": 3600, "m": 60}[unit]
        try:
            return now + timedelta(seconds=seconds)
        except OverflowError as exc:  # "9999999999d": past the last date there is
            raise AlertError(f"--until: too far: {text!r} (an absence lasts at most a year)") from exc
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise AlertError(f"--until: not a time: {text!r} (use 2025-03-09 18:00 or 3d)") from exc
    if len(text.strip()) == 10:  # a date alone: until the end of that day
        value = value.replace(hour=23, minute=59, second=59)
    return value if value.tzinfo else value.replace(tzinfo=zone)


_SET_AWAY = """
    UPDATE resident SET status = 'away', away_until = %s, away_reason = %s,
                        updated_at = %s
    WHERE id = %s AND status IN ('active', 'away')
    RETURNING (SELECT coalesce(c.rules, '{}') FROM household h
               LEFT JOIN community c ON c.id = h.community_id
               WHERE h.id = resident.household_id), rules
"""
_UNRESOLVED_OF = "SELECT id, kind FROM alert WHERE resident_id = %s AND status <> 'resolved'"
_RESOLVE_AWAY = """
    UPDATE alert SET status = 'resolved', resolved_at = %s, outcome = 'away',
                     outcome_note = %s, escalation_due_at = %s
    WHERE id = ANY(%s)
"""
_CLEAR_AWAY = """
    UPDATE resident SET status = 'active', away_until = NULL, away_reason = NULL,
                        updated_at = %s
    WHERE id = %s AND status = 'away'
"""


def _checked_reason(until: datetime, reason: str, now: datetime) -> str:
    if until <= now:
        raise AlertError("an absence must end in the future")
    if until > now + MAX_ABSENCE:  # a typo in the CLI must not silence a resident for decades
        raise AlertError("an absence may last at most a year")
    reason = " ".join(reason.split())
    if not reason:
        raise AlertError("an absence needs a reason")
    return reason


def _suppressed(
    chains: ChainBook, rules: tuple[Any, ...] | None, open_alerts: list[tuple[Any, ...]], resident_id: str
) -> list[int]:
    """The ids among `open_alerts` (id, kind) whose chain is suppressed while away."""
    if rules is None:
        raise AlertError(f"no active resident {resident_id!r}")
    community_rules, resident_rules = rules
    return [
        alert_id
        for alert_id, kind in open_alerts
        if chains.chain_for(kind, community_rules, resident_rules).suppress_when_away
    ]


def _away_history(ids: list[int], until: datetime) -> list[tuple[int, str, Any]]:
    return [(i, "resolved", Jsonb({"outcome": Outcome.AWAY, "away_until": until.isoformat()})) for i in ids]


def set_away(
    conn: psycopg.Connection[Any],
    resident_id: str,
    *,
    until: datetime,
    reason: str,
    now: datetime,
    chains: ChainBook,
) -> list[int]:
    """Mark the resident away; resolve their suppressed-while-away alerts. Returns those ids."""
    reason = _checked_reason(until, reason, now)
    with conn.transaction():
        rules = conn.execute(_SET_AWAY, (until, reason, now, resident_id)).fetchone()
        open_alerts = conn.execute(_UNRESOLVED_OF, (resident_id,)).fetchall() if rules else []
        ids = _suppressed(chains, rules, open_alerts, resident_id)
        if ids:
            conn.execute(_RESOLVE_AWAY, (now, f"away until {until.isoformat()}: {reason}", now, ids))
            add_history(conn, _away_history(ids, until), now, actor="absence")
    return ids


async def set_away_async(
    conn: psycopg.AsyncConnection[Any],
    resident_id: str,
    *,
    until: datetime,
    reason: str,
    now: datetime,
    chains: ChainBook,
) -> list[int]:
    """`set_away` over an asynchronous connection (the console)."""
    reason = _checked_reason(until, reason, now)
    async with conn.transaction():
        rules = await (await conn.execute(_SET_AWAY, (until, reason, now, resident_id))).fetchone()
        open_alerts = await (await conn.execute(_UNRESOLVED_OF, (resident_id,))).fetchall() if rules else []
        ids = _suppressed(chains, rules, open_alerts, resident_id)
        if ids:
            await conn.execute(_RESOLVE_AWAY, (now, f"away until {until.isoformat()}: {reason}", now, ids))
            await add_history_async(conn, _away_history(ids, until), now, actor="absence")
    return ids


def clear_away(conn: psycopg.Connection[Any], resident_id: str, *, now: datetime) -> bool:
    """Back home. False if the resident was not away."""
    with conn.transaction():
        changed = conn.execute(_CLEAR_AWAY, (now, resident_id)).rowcount
    return bool(changed)


async def clear_away_async(conn: psycopg.AsyncConnection[Any], resident_id: str, *, now: datetime) -> bool:
    """`clear_away` over an asynchronous connection (the console)."""
    async with conn.transaction():
        changed = (await conn.execute(_CLEAR_AWAY, (now, resident_id))).rowcount
    return bool(changed)
