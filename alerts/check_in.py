"""The check-in record: one `check_in_answer` row per alert whose resident was asked, and the
resident's answer.

The escalation pass starts the row when it first asks (`start`), records a resident who cannot
be asked (`unreachable`) and closes a row the stage left unanswered (`close_unanswered`);
`answer` / `answer_async` record what the resident said (an SMS reply, a key pressed in a
call, the button on their page): "fine" resolves the alert as `resident_ok` (whoever else was
told gets the stand-down), "need help" makes the escalation due at once, and the pass goes on
to the love-key holder. The detectors read the rows to learn each resident's own threshold.
Every function runs in the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from lovekey.alerts import store
from lovekey.errors import AlertStateError
from lovekey.vocabulary import CheckInAnswer, Outcome, PartOfDay

log = logging.getLogger(__name__)

# what a resident's reply means: 1 fine, 2 need help (the same keys in a call)
REPLIES: dict[int, CheckInAnswer] = {1: CheckInAnswer.FINE, 2: CheckInAnswer.NEED_HELP}


def answers(conn: psycopg.Connection[Any], alert_ids: Sequence[int]) -> dict[int, str | None]:
    """The check-in answer of each alert that has a check-in (None: still unanswered)."""
    rows = conn.execute(
        "SELECT alert_id, answer FROM check_in_answer WHERE alert_id = ANY(%s)", (list(alert_ids),)
    )
    return {alert_id: answer for alert_id, answer in rows}


def _facts(since: datetime, now: datetime, zone: ZoneInfo) -> tuple[int, str]:
    dry_minutes = max(0, int((now - since).total_seconds() // 60))
    return dry_minutes, PartOfDay.of_hour(now.astimezone(zone).hour)


_START = """
    INSERT INTO check_in_answer (alert_id, resident_id, kind, asked_at, dry_minutes, part_of_day,
                                 answer, answered_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (alert_id) DO NOTHING
"""


def start(
    conn: psycopg.Connection[Any],
    alert_id: int,
    resident_id: str | None,
    kind: str,
    since: datetime,
    now: datetime,
    zone: ZoneInfo,
) -> None:
    """The resident is being asked about the alert for the first time."""
    if resident_id is None:
        return
    dry, part = _facts(since, now, zone)
    conn.execute(_START, (alert_id, resident_id, kind, now, dry, part, None, None))


def unreachable(
    conn: psycopg.Connection[Any],
    alert_id: int,
    resident_id: str,
    kind: str,
    since: datetime,
    now: datetime,
    zone: ZoneInfo,
) -> None:
    """The resident could not be asked at all (no usable phone)."""
    dry, part = _facts(since, now, zone)
    conn.execute(_START, (alert_id, resident_id, kind, now, dry, part, CheckInAnswer.UNREACHABLE, now))


# A question reached the resident's phone when it was sent and no report of its provider
# says otherwise: a call reported `unanswered` (nobody picked up, busy, switched off: see
# alerts.providers.callbacks) or a text reported `failed` did not; a text delivered, or sent
# with no report yet, did (a text with no reply still reached the phone). A call whose report
# has not come by the end of the stage counts as reached: without a callback URL no report
# ever comes, and a missing report is no proof that nobody picked up.
_CLOSE = """
    UPDATE check_in_answer SET answered_at = %(now)s,
           answer = CASE WHEN EXISTS (
               SELECT 1 FROM alert_outbox o
               WHERE o.alert_id = %(alert)s AND o.role = 'resident' AND o.state = 'sent'
                 AND (NOT EXISTS (SELECT 1 FROM provider_message p WHERE p.outbox_id = o.id)
                      OR EXISTS (SELECT 1 FROM provider_message p
                                 WHERE p.outbox_id = o.id
                                   AND p.status NOT IN ('failed', 'unanswered')))
           ) THEN 'none' ELSE 'unreachable' END
    WHERE alert_id = %(alert)s AND answer IS NULL
    RETURNING answer
"""


def close_unanswered(conn: psycopg.Connection[Any], alert_id: int, now: datetime) -> str | None:
    """End an unanswered check-in: 'none' when a question reached the phone, 'unreachable'
    when none did (every call went unanswered, every text failed, or nothing could be sent).
    Returns the answer recorded (None: nothing open)."""
    row = conn.execute(_CLOSE, {"alert": alert_id, "now": now}).fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True, slots=True)
class Answered:
    alert_id: int
    answer: CheckInAnswer
    resolved: bool  # "fine" closed the alert


_LOCK = "SELECT status FROM alert WHERE id = %s FOR NO KEY UPDATE"
# a late answer (after the stage ended as 'none') still counts; a given answer stands
_RECORD = """
    UPDATE check_in_answer SET answer = %s, answered_at = %s, channel = %s
    WHERE alert_id = %s AND (answer IS NULL OR answer = 'none')
    RETURNING resident_id
"""
_GO_ON = "UPDATE alert SET escalation_due_at = %s WHERE id = %s AND status <> 'resolved'"
_NOTE = "the resident answered the check-in: fine"


def _event(answer: CheckInAnswer, channel: str) -> dict[str, Any]:
    return {"answer": answer, "channel": channel}


def answer(
    conn: psycopg.Connection[Any],
    alert_id: int,
    reply: CheckInAnswer,
    *,
    by: str,
    channel: str,
    now: datetime,
) -> Answered:
    """Record the resident's answer; raises AlertStateError when the alert is resolved, or the
    resident was never asked about it, or already answered."""
    status = conn.execute(_LOCK, (alert_id,)).fetchone()
    if status is None or status[0] == "resolved":
        raise AlertStateError(alert_id, "no open check-in")
    if conn.execute(_RECORD, (reply, now, channel, alert_id)).fetchone() is None:
        raise AlertStateError(alert_id, "no open check-in")
    store.add_history(conn, [(alert_id, "check_in_answered", Jsonb(_event(reply, channel)))], now, by)
    if reply == CheckInAnswer.FINE:
        store.resolve(
            conn, alert_id, outcome=Outcome.RESIDENT_OK, note=_NOTE, by=by, channel=channel, now=now
        )
        return Answered(alert_id, reply, True)
    conn.execute(_GO_ON, (now, alert_id))
    return Answered(alert_id, reply, False)


async def answer_async(
    conn: psycopg.AsyncConnection[Any],
    alert_id: int,
    reply: CheckInAnswer,
    *,
    by: str,
    channel: str,
    now: datetime,
) -> Answered:
    """`answer` over an asynchronous connection (the resident's page)."""
    status = await (await conn.execute(_LOCK, (alert_id,))).fetchone()
    if status is None or status[0] == "resolved":
        raise AlertStateError(alert_id, "no open check-in")
    if await (await conn.execute(_RECORD, (reply, now, channel, alert_id))).fetchone() is None:
        raise AlertStateError(alert_id, "no open check-in")
    await store.add_history_async(
        conn, [(alert_id, "check_in_answered", Jsonb(_event(reply, channel)))], now, by
    )
    if reply == CheckInAnswer.FINE:
        await store.resolve_async(
            conn, alert_id, outcome=Outcome.RESIDENT_OK, note=_NOTE, by=by, channel=channel, now=now
        )
        return Answered(alert_id, reply, True)
    await conn.execute(_GO_ON, (now, alert_id))
    return Answered(alert_id, reply, False)


async def answer_key_async(
    conn: psycopg.AsyncConnection[Any], alert_id: int, key: str, *, by: str, channel: str, now: datetime
) -> str:
    """A key the resident pressed in the check-in call: 1 fine, 2 need help (the same as a
    reply). Returns 'resolved', 'help', 'ignored' (another key) or 'no_alert' (nothing open).
    For the voice channel's per-role key handling: the handler for the role 'resident'."""
    reply = REPLIES.get(int(key)) if key.isdigit() else None
    if reply is None:
        return "ignored"
    try:
        answered = await answer_async(conn, alert_id, reply, by=by, channel=channel, now=now)
    except AlertStateError:
        return "no_alert"
    return "resolved" if answered.resolved else "help"
