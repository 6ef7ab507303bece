"""The alert table and its history: open, update, clear, acknowledge, resolve, list.

The caller passes a connection and owns the transaction (every function here runs inside
whatever transaction `conn` is in, and never commits). Each transition writes one
`alert_history` row in the same statement batch, so the history can never disagree with the
alert row it describes.

The detectors, the worker and the CLI are synchronous and use the plain functions. The
console (with the acknowledgement pages it serves) is asynchronous and uses the `*_async`
variants (acknowledge, resolve, get_alert) over its one `AsyncConnectionPool`. Both kinds run the same SQL
literals and the same checks defined once here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lovekey.errors import AlertStateError
from lovekey.vocabulary import CHOSEN_OUTCOMES, AlertTier

_COLUMNS = (
    "id, kind, subject, resident_id, device_id, gateway_id, status, since, opened_at,"
    " last_triggered_at, notified_at, acknowledged_at, acknowledged_by, ack_channel,"
    " resolved_at, outcome, outcome_note, details, tier, stage"
)


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """What a detector found: a condition about one subject that should be an open alert."""

    kind: str
    subject: str
    resident_id: str | None
    device_id: str | None
    gateway_id: str | None
    since: datetime
    details: Mapping[str, Any] = field(default_factory=dict)
    # which welfare tier fired: 'check_in' only asks the resident, 'neighbour' (every other
    # kind too) goes to the love-key holder and onwards
    tier: str = AlertTier.NEIGHBOUR


@dataclass(frozen=True, slots=True)
class RaiseResult:
    opened: list[int]
    updated: list[int]
    raised_tier: list[int] = field(default_factory=list)  # open check_in alerts now 'neighbour'


def raise_alerts(
    conn: psycopg.Connection[Any], candidates: Sequence[AlertCandidate], now: datetime
) -> RaiseResult:
    """Open an alert per candidate, or refresh the unresolved one of the same (kind, subject).

    Safe under concurrency: the upsert targets the partial unique index, so two detectors
    raising the same condition at once end with one alert. A refresh moves
    `last_triggered_at` and replaces `details`; it writes an 'updated' history row only when
    the details changed, so a detector re-raising every sweep does not flood the history.
    A refresh with tier 'neighbour' raises an unresolved 'check_in' alert to 'neighbour'
    (never back down) and makes its escalation due at once, so the chain goes on past the
    resident stage without waiting for the stage to end.
    """
    if not candidates:
        return RaiseResult([], [])
    rows = conn.execute(
        """
        WITH c AS (
            SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                                 %s::timestamptz[], %s::jsonb[], %s::text[])
                AS c(kind, subject, resident_id, device_id, gateway_id, since, details, tier)
        ),
        before AS (
            SELECT DISTINCT a.id, a.details, a.tier FROM alert a JOIN c USING (kind, subject)
            WHERE a.status <> 'resolved'
        ),
        up AS (
            INSERT INTO alert AS a (kind, subject, resident_id, device_id, gateway_id, since,
                                    opened_at, last_triggered_at, escalation_due_at, details,
                                    tier)
            SELECT DISTINCT ON (kind, subject)
                   kind, subject, resident_id, device_id, gateway_id, since, %s, %s, %s, details,
                   tier
            FROM c ORDER BY kind, subject, tier DESC
            ON CONFLICT (kind, subject) WHERE status <> 'resolved' DO UPDATE
               SET last_triggered_at = greatest(a.last_triggered_at, EXCLUDED.last_triggered_at),
                   details = EXCLUDED.details,
                   tier = CASE WHEN EXCLUDED.tier = 'neighbour' THEN 'neighbour' ELSE a.tier END,
                   escalation_due_at = CASE WHEN a.tier = 'check_in' AND EXCLUDED.tier = 'neighbour'
                                            THEN EXCLUDED.escalation_due_at
                                            ELSE a.escalation_due_at END
            RETURNING a.id, a.details, (a.xmax = 0) AS inserted, a.tier
        )
        SELECT up.id, up.inserted, before.details IS DISTINCT FROM up.details AS changed,
               up.details, before.tier IS DISTINCT FROM up.tier AS raised
        FROM up LEFT JOIN before USING (id)
        ORDER BY up.id
        """,
        (
            [c.kind for c in candidates],
            [c.subject for c in candidates],
            [c.resident_id for c in candidates],
            [c.device_id for c in candidates],
            [c.gateway_id for c in candidates],
            [c.since for c in candidates],
            [Jsonb(dict(c.details)) for c in candidates],
            [str(AlertTier(c.tier)) for c in candidates],
            now,
            now,
            now,
        ),
    ).fetchall()
    opened = [r[0] for r in rows if r[1]]
    updated = [r[0] for r in rows if not r[1]]
    raised = [r[0] for r in rows if not r[1] and r[4]]
    history: list[tuple[int, str, Any]] = [(r[0], "opened", Jsonb(r[3])) for r in rows if r[1]]
    history += [(r[0], "updated", Jsonb(r[3])) for r in rows if not r[1] and r[2]]
    history += [(i, "tier_raised", Jsonb({"tier": AlertTier.NEIGHBOUR})) for i in raised]
    add_history(conn, history, now, actor="detector")
    return RaiseResult(opened, updated, raised)


def clear_alerts(
    conn: psycopg.Connection[Any],
    kind: str,
    subjects: Sequence[str],
    now: datetime,
    *,
    reason: str = "condition_cleared",
) -> list[int]:
    """Auto-resolve the unresolved alerts of `kind` for `subjects` (outcome 'auto_cleared').

    The alert worker later sends a stand-down to everyone who was notified about them.
    Returns the ids resolved here.
    """
    if not subjects:
        return []
    ids = [
        r[0]
        for r in conn.execute(
            """
            UPDATE alert SET status = 'resolved', resolved_at = %s, outcome = 'auto_cleared',
                             outcome_note = %s, escalation_due_at = %s
            WHERE kind = %s AND subject = ANY(%s) AND status <> 'resolved'
            RETURNING id
            """,
            (now, reason, now, kind, list(subjects)),
        )
    ]
    add_history(conn, [(i, "auto_resolved", Jsonb({"reason": reason})) for i in ids], now, "detector")
    return sorted(ids)


_LOCK_STATUS = "SELECT status FROM alert WHERE id = %s FOR UPDATE"
_ACKNOWLEDGE = """
    UPDATE alert SET status = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s,
                     ack_channel = %s, escalation_due_at = %s
    WHERE id = %s
"""
_RESOLVE = """
    UPDATE alert SET status = 'resolved', resolved_at = %s, outcome = %s, outcome_note = %s,
                     escalation_due_at = %s
    WHERE id = %s
"""
_COPY_HISTORY = "COPY alert_history (alert_id, at, event, actor, detail) FROM STDIN"


def _first_acknowledgement(alert_id: int, status: str | None) -> bool:
    """Whether an acknowledgement of an alert in `status` is the first one; raises
    `AlertStateError` for an unknown (None) or resolved alert."""
    if status is None:
        raise AlertStateError(alert_id, "no such alert")
    if status == "resolved":
        raise AlertStateError(alert_id, "already resolved")
    return status != "acknowledged"


def _check_resolution(alert_id: int, outcome: str, note: str | None) -> None:
    if outcome not in CHOSEN_OUTCOMES:
        choices = ", ".join(CHOSEN_OUTCOMES)
        raise AlertStateError(alert_id, f"unknown outcome {outcome!r}; one of {choices}")
    if outcome == "other" and not (note and note.strip()):
        raise AlertStateError(alert_id, "outcome 'other' needs a note")


def _status_of(row: tuple[Any, ...] | None) -> str | None:
    return None if row is None else str(row[0])


def acknowledge(
    conn: psycopg.Connection[Any],
    alert_id: int,
    *,
    by: str,
    channel: str,
    now: datetime,
    contact_id: int | None = None,
) -> bool:
    """Record that a person has taken the alert. Returns False if it was already acknowledged
    (the first acknowledgement stands; later ones are kept in the history only).

    Raises `AlertStateError` for an unknown or resolved alert.
    """
    status = _status_of(conn.execute(_LOCK_STATUS, (alert_id,)).fetchone())
    detail = {"by": by, "channel": channel, "contact_id": contact_id}
    if not _first_acknowledgement(alert_id, status):
        add_history(conn, [(alert_id, "acknowledged_again", Jsonb(detail))], now, by)
        return False
    conn.execute(_ACKNOWLEDGE, (now, by, channel, now, alert_id))
    add_history(conn, [(alert_id, "acknowledged", Jsonb(detail))], now, by)
    return True


async def acknowledge_async(
    conn: psycopg.AsyncConnection[Any],
    alert_id: int,
    *,
    by: str,
    channel: str,
    now: datetime,
    contact_id: int | None = None,
) -> bool:
    """`acknowledge` over an asynchronous connection (the console)."""
    status = _status_of(await (await conn.execute(_LOCK_STATUS, (alert_id,))).fetchone())
    detail = {"by": by, "channel": channel, "contact_id": contact_id}
    if not _first_acknowledgement(alert_id, status):
        await add_history_async(conn, [(alert_id, "acknowledged_again", Jsonb(detail))], now, by)
        return False
    await conn.execute(_ACKNOWLEDGE, (now, by, channel, now, alert_id))
    await add_history_async(conn, [(alert_id, "acknowledged", Jsonb(detail))], now, by)
    return True


def resolve(
    conn: psycopg.Connection[Any],
    alert_id: int,
    *,
    outcome: str,
    note: str | None,
    by: str,
    channel: str,
    now: datetime,
) -> None:
    """Close an alert with the outcome of the visit. An alert nobody acknowledged is taken to
    be acknowledged by whoever resolves it (both transitions are recorded)."""
    _check_resolution(alert_id, outcome, note)
    status = _status_of(conn.execute(_LOCK_STATUS, (alert_id,)).fetchone())
    if _first_acknowledgement(alert_id, status):
        acknowledge(conn, alert_id, by=by, channel=channel, now=now)
    conn.execute(_RESOLVE, (now, outcome, note, now, alert_id))
    detail = {"outcome": outcome, "note": note, "by": by, "channel": channel}
    add_history(conn, [(alert_id, "resolved", Jsonb(detail))], now, by)


async def resolve_async(
    conn: psycopg.AsyncConnection[Any],
    alert_id: int,
    *,
    outcome: str,
    note: str | None,
    by: str,
    channel: str,
    now: datetime,
) -> None:
    """`resolve` over an asynchronous connection (the console)."""
    _check_resolution(alert_id, outcome, note)
    status = _status_of(await (await conn.execute(_LOCK_STATUS, (alert_id,))).fetchone())
    if _first_acknowledgement(alert_id, status):
        await acknowledge_async(conn, alert_id, by=by, channel=channel, now=now)
    await conn.execute(_RESOLVE, (now, outcome, note, now, alert_id))
    detail = {"outcome": outcome, "note": note, "by": by, "channel": channel}
    await add_history_async(conn, [(alert_id, "resolved", Jsonb(detail))], now, by)


def mark_notified(conn: psycopg.Connection[Any], alert_id: int, now: datetime) -> None:
    """open -> notified, the first time a notification for the alert is handed to a channel."""
    changed = conn.execute(
        "UPDATE alert SET status = 'notified', notified_at = %s WHERE id = %s AND status = 'open'",
        (now, alert_id),
    ).rowcount
    if changed:
        add_history(conn, [(alert_id, "notified", Jsonb({}))], now, "worker")


_GET_ALERT = "SELECT " + _COLUMNS + " FROM alert WHERE id = %s"  # noqa: S608 - constant columns


def get_alert(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_GET_ALERT, (alert_id,))
        row = cur.fetchone()
    return row


async def get_alert_async(conn: psycopg.AsyncConnection[Any], alert_id: int) -> dict[str, Any] | None:
    """`get_alert` over an asynchronous connection."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_ALERT, (alert_id,))
        return await cur.fetchone()


def history(conn: psycopg.Connection[Any], alert_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, at, event, actor, detail FROM alert_history WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        )
        return cur.fetchall()


_CHECK_IN = """(
    SELECT jsonb_build_object('answer', c.answer, 'asked_at', c.asked_at, 'answered_at', c.answered_at)
    FROM check_in_answer c WHERE c.alert_id = alert.id
) AS check_in"""


def list_alerts(
    conn: psycopg.Connection[Any], *, include_resolved: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """Alerts newest first as JSON-ready dicts (timestamps as RFC 3339 strings), each with its
    `check_in` (the resident's answer, when they were asked; null: never asked)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT " + _COLUMNS + ", " + _CHECK_IN + " FROM alert"  # noqa: S608 - constant columns
            " WHERE %s OR status <> 'resolved' ORDER BY opened_at DESC, id DESC LIMIT %s",
            (include_resolved, limit),
        )
        return [_json_ready(r) for r in cur.fetchall()]


def _json_ready(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def add_history(
    conn: psycopg.Connection[Any],
    rows: Sequence[tuple[int, str, Any]],
    now: datetime,
    actor: str | None,
) -> None:
    """Append history rows `(alert_id, event, detail)` at `now` (COPY: one round trip)."""
    if not rows:
        return
    with conn.cursor() as cur, cur.copy(_COPY_HISTORY) as copy:
        for alert_id, event, detail in rows:
            copy.write_row((alert_id, now, event, actor, detail))


async def add_history_async(
    conn: psycopg.AsyncConnection[Any],
    rows: Sequence[tuple[int, str, Any]],
    now: datetime,
    actor: str | None,
) -> None:
    """`add_history` over an asynchronous connection."""
    if not rows:
        return
    async with conn.cursor() as cur, cur.copy(_COPY_HISTORY) as copy:
        for alert_id, event, detail in rows:
            await copy.write_row((alert_id, now, event, actor, detail))
