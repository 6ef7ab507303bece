"""Acknowledgement from outside: a signed link, an SMS reply, or a key pressed in a call.

Both end in `alerts.store.acknowledge` / `resolve`; what is here decides *which* alert and
*who*. Like the store, each step is its SQL literal and its pure checks defined once, with two
thin shells: the plain functions over a synchronous connection and `*_async` variants over an
asynchronous one (the acknowledgement pages run on the console's `AsyncConnectionPool`).
`acknowledge_by_sms` runs its own transaction; the others run in the caller's.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from lovekey.alerts import check_in, store
from lovekey.alerts.tokens import TokenParts, make_token, parse_token, verify_token
from lovekey.errors import AckTokenError, AlertStateError
from lovekey.vocabulary import ContactRole


@dataclass(frozen=True, slots=True)
class LinkHolder:
    """Who a valid token belongs to, and the alert it is for."""

    outbox_id: int
    alert_id: int
    recipient_key: str
    contact_ref: str
    name: str
    language: str
    detail: dict[str, Any]
    role: str = ""  # 'resident': the resident's own check-in page


_HOLDER = """
    SELECT id, alert_id, recipient_key, contact_ref, name, language, detail, role
    FROM alert_outbox WHERE id = %s AND alert_id IS NOT NULL
"""


def _verified_holder(
    secret: bytes, parts: TokenParts, row: tuple[Any, ...] | None, now: datetime
) -> LinkHolder:
    if row is None:
        raise AckTokenError("forged")  # never issued: same answer as a bad MAC
    holder = LinkHolder(*row)
    verify_token(secret, parts, alert_id=holder.alert_id, recipient_key=holder.recipient_key, now=now)
    return holder


def holder_of(conn: psycopg.Connection[Any], secret: bytes, token: str, now: datetime) -> LinkHolder:
    """The recipient a token was issued to; AckTokenError when it is malformed, forged,
    for no notification we sent, or expired."""
    parts = parse_token(token)
    row = conn.execute(_HOLDER, (parts.outbox_id,)).fetchone()
    return _verified_holder(secret, parts, row, now)


async def holder_of_async(
    conn: psycopg.AsyncConnection[Any], secret: bytes, token: str, now: datetime
) -> LinkHolder:
    """`holder_of` over an asynchronous connection."""
    parts = parse_token(token)
    row = await (await conn.execute(_HOLDER, (parts.outbox_id,))).fetchone()
    return _verified_holder(secret, parts, row, now)


_OTHER_ALERTS = """
    SELECT DISTINCT ON (o.alert_id) o.id, o.alert_id, o.detail, a.status
    FROM alert_outbox o JOIN alert a ON a.id = o.alert_id
    WHERE o.recipient_key = %s AND o.purpose = 'alert' AND o.state = 'sent'
      AND o.alert_id <> %s AND a.status <> 'resolved' AND o.sent_at > %s
    ORDER BY o.alert_id, o.id DESC
"""


def _other_alerts_params(holder: LinkHolder, now: datetime, ttl_s: int) -> tuple[Any, ...]:
    return (holder.recipient_key, holder.alert_id, now - timedelta(seconds=ttl_s))


def _with_links(
    rows: Sequence[tuple[Any, ...]],
    secret: bytes,
    holder: LinkHolder,
    now: datetime,
    ttl_s: int,
    base_url: str,
) -> list[dict[str, Any]]:
    out = []
    for outbox_id, alert_id, detail, status in rows:
        token = make_token(
            secret,
            outbox_id=outbox_id,
            alert_id=alert_id,
            recipient_key=holder.recipient_key,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        out.append(
            {
                "alert_id": alert_id,
                "detail": detail,
                "status": status,
                "link": f"{base_url.rstrip('/')}/a/{token}",
            }
        )
    return out


def other_alerts(
    conn: psycopg.Connection[Any],
    secret: bytes,
    holder: LinkHolder,
    now: datetime,
    ttl_s: int,
    base_url: str,
) -> list[dict[str, Any]]:
    """The holder's other unresolved alerts (a bundle's members), each with its own link."""
    rows = conn.execute(_OTHER_ALERTS, _other_alerts_params(holder, now, ttl_s)).fetchall()
    return _with_links(rows, secret, holder, now, ttl_s, base_url)


async def other_alerts_async(
    conn: psycopg.AsyncConnection[Any],
    secret: bytes,
    holder: LinkHolder,
    now: datetime,
    ttl_s: int,
    base_url: str,
) -> list[dict[str, Any]]:
    """`other_alerts` over an asynchronous connection."""
    cur = await conn.execute(_OTHER_ALERTS, _other_alerts_params(holder, now, ttl_s))
    return _with_links(await cur.fetchall(), secret, holder, now, ttl_s, base_url)


@dataclass(frozen=True, slots=True)
class SmsReply:
    acknowledged: int | None  # the alert acknowledged (None: nothing matched)
    first: bool  # this reply was the first acknowledgement
    # 'ok', 'already_acknowledged', 'not_understood', 'no_alert'; a resident's answer to
    # their check-in: 'check_in_fine', 'check_in_need_help'
    reason: str


_CODE = re.compile(r"#?\s*(\d{1,12})\b")


def parse_reply(text: str) -> int | None:
    """`1` means "the latest alert I was sent"; any other number (or `#123`) is an alert's
    short code (its id). Full-width digits count. None: not an acknowledgement."""
    normalized = unicodedata.normalize("NFKC", text).strip()
    match = _CODE.match(normalized)
    if not match:
        return None
    return int(match[1])


def named_alert(text: str) -> int | None:
    """The alert id a reply names, if any. A bare key (`1`, `2`: what a message asks to reply
    or a call to press) is never an id, however the alerts are numbered: alerts 1 and 2 exist
    in every installation, and a neighbour's "1" to the newest alert must not acknowledge
    alert #1 sent to them days before. Written as a short code (`#1`, `#2`) it is one."""
    code = parse_reply(text)
    if code is None:
        return None
    bare = unicodedata.normalize("NFKC", text).strip() == str(code)
    return None if bare and code in check_in.REPLIES else code


def phone_variants(sender: str, default_country_code: str) -> list[str]:
    """E.164 forms the sender's number may be stored as."""
    digits = re.sub(r"\D", "", sender)
    if not digits:
        return []
    if sender.strip().startswith("+"):
        return [f"+{digits}"]
    return [f"+{digits}", f"+{default_country_code}{digits.lstrip('0')}"]


# the newest alert sent to this phone that is still open: `1` means that one; an alert id the
# reply names (`named_alert`: never a bare key) must be one sent to this phone, and such a
# match wins over the newest
_SMS_TARGET = """
    SELECT o.alert_id, o.name, o.contact_ref, o.sent_at
    FROM alert_outbox o JOIN alert a ON a.id = o.alert_id
    WHERE o.phone = ANY(%(phones)s) AND o.purpose = 'alert' AND o.state = 'sent'
      AND o.sent_at > %(since)s AND a.status <> 'resolved' AND o.role <> 'resident'
      AND (%(code)s = 1 OR o.alert_id = %(named)s::bigint)
    ORDER BY (o.alert_id = %(named)s::bigint) DESC NULLS LAST, o.sent_at DESC, o.id DESC
    LIMIT 1
"""


def _sms_target_params(
    text: str, code: int, sender: str, now: datetime, ttl_s: int, default_country_code: str
) -> dict[str, Any]:
    phones = phone_variants(sender, default_country_code)
    return {
        "phones": phones,
        "since": now - timedelta(seconds=ttl_s),
        "code": code,
        "named": named_alert(text),
    }


# the newest check-in this phone was sent as the resident (`1` fine, `2` need help), and
# whether it is still open to an answer
_CHECK_IN_TARGET = """
    SELECT o.alert_id, o.name, o.sent_at,
           a.status <> 'resolved' AND (c.answer IS NULL OR c.answer = 'none') AS open
    FROM alert_outbox o JOIN alert a ON a.id = o.alert_id
    LEFT JOIN check_in_answer c ON c.alert_id = o.alert_id
    WHERE o.phone = ANY(%(phones)s) AND o.role = 'resident' AND o.purpose = 'alert'
      AND o.state = 'sent' AND o.sent_at > %(since)s
    ORDER BY o.sent_at DESC, o.id DESC
    LIMIT 1
"""


def _answers_check_in(asked: tuple[Any, ...] | None, row: tuple[Any, ...] | None) -> bool:
    """Whether a reply answers the phone's own check-in rather than an alert it was sent as a
    contact: the newer of the two messages wins. A resident who also holds a neighbour's key
    and replies "1" to a check-in that has just closed must not acknowledge the neighbour's
    alert ("I'm going") by mistake; and a resident never acknowledges their own alert."""
    return asked is not None and (row is None or asked[2] >= row[3])


def _check_in_reply(answered: check_in.Answered) -> SmsReply:
    return SmsReply(answered.alert_id, True, f"check_in_{answered.answer}")


def _acknowledged(alert_id: int, first: bool) -> SmsReply:
    return SmsReply(alert_id, first, "ok" if first else "already_acknowledged")


def acknowledge_by_sms(
    conn: psycopg.Connection[Any],
    sender: str,
    text: str,
    now: datetime,
    *,
    ttl_s: int,
    default_country_code: str,
    channel: str = "sms",
) -> SmsReply:
    """Acknowledge the alert an SMS reply points at, in one transaction of its own. From a
    resident with an open check-in, `1` answers it "fine" and `2` "need help" (`channel`
    says how the answer came: a key pressed in a call arrives here too)."""
    code = parse_reply(text)
    if code is None:
        return SmsReply(None, False, "not_understood")
    params = _sms_target_params(text, code, sender, now, ttl_s, default_country_code)
    with conn.transaction():
        asked = conn.execute(_CHECK_IN_TARGET, params).fetchone() if code in check_in.REPLIES else None
        row = conn.execute(_SMS_TARGET, params).fetchone()
        if asked is not None and _answers_check_in(asked, row):
            if not asked[3]:
                return SmsReply(None, False, "no_alert")  # that check-in is over
            try:
                answered = check_in.answer(
                    conn, asked[0], check_in.REPLIES[code], by=asked[1] or sender, channel=channel, now=now
                )
            except AlertStateError:
                return SmsReply(None, False, "no_alert")
            return _check_in_reply(answered)
        if row is None:
            return SmsReply(None, False, "no_alert")
        alert_id, name, contact_ref, _ = row
        try:
            first = store.acknowledge(
                conn,
                alert_id,
                by=name or sender,
                channel="sms",
                now=now,
                contact_id=contact_id_of(contact_ref),
            )
        except AlertStateError:
            return SmsReply(None, False, "no_alert")
    return _acknowledged(alert_id, first)


async def acknowledge_by_sms_async(
    conn: psycopg.AsyncConnection[Any],
    sender: str,
    text: str,
    now: datetime,
    *,
    ttl_s: int,
    default_country_code: str,
    channel: str = "sms",
) -> SmsReply:
    """`acknowledge_by_sms` over an asynchronous connection."""
    code = parse_reply(text)
    if code is None:
        return SmsReply(None, False, "not_understood")
    params = _sms_target_params(text, code, sender, now, ttl_s, default_country_code)
    async with conn.transaction():
        asked = None
        if code in check_in.REPLIES:
            asked = await (await conn.execute(_CHECK_IN_TARGET, params)).fetchone()
        row = await (await conn.execute(_SMS_TARGET, params)).fetchone()
        if asked is not None and _answers_check_in(asked, row):
            if not asked[3]:
                return SmsReply(None, False, "no_alert")  # that check-in is over
            try:
                answered = await check_in.answer_async(
                    conn, asked[0], check_in.REPLIES[code], by=asked[1] or sender, channel=channel, now=now
                )
            except AlertStateError:
                return SmsReply(None, False, "no_alert")
            return _check_in_reply(answered)
        if row is None:
            return SmsReply(None, False, "no_alert")
        alert_id, name, contact_ref, _ = row
        try:
            first = await store.acknowledge_async(
                conn,
                alert_id,
                by=name or sender,
                channel="sms",
                now=now,
                contact_id=contact_id_of(contact_ref),
            )
        except AlertStateError:
            return SmsReply(None, False, "no_alert")
    return _acknowledged(alert_id, first)


def contact_id_of(contact_ref: str) -> int | None:
    table, _, ident = contact_ref.partition(":")
    return int(ident) if table == "contact" and ident.isdigit() else None


# --- voice key presses ---------------------------------------------------------------------
# A key pressed during a provider's voice call arrives (verified and matched to the call by
# `alerts.provider_webhooks`) as a `KeyPress` naming the notification it answers. Keys mean
# the same in every call: 1 = "I'm going" (a contact) / "I'm fine" (the resident), 2 = "help
# is needed", which tells the help roles at once (`request_help`). A role can be given its
# own handling through `KEY_HANDLERS` (the resident check-in registers one).


@dataclass(frozen=True, slots=True)
class KeyPress:
    outbox_id: int  # the notification the call delivered
    alert_id: int
    role: str  # the called person's contact role
    name: str
    contact_ref: str
    key: str  # "1", "2", ...
    channel: str  # "voice@<provider>"


@dataclass(frozen=True, slots=True)
class KeyResult:
    alert_id: int
    action: str  # 'acknowledged', 'already_acknowledged', 'resolved', 'help', 'ignored', 'no_alert'


KeyHandler = Callable[[psycopg.AsyncConnection[Any], KeyPress, datetime], Awaitable[KeyResult]]
# role -> handler; the default handling below applies to roles not listed
KEY_HANDLERS: dict[str, KeyHandler] = {}

_KEY_TARGET = """
    SELECT o.id, o.alert_id, o.role, o.name, o.contact_ref
    FROM alert_outbox o WHERE o.id = %s AND o.alert_id IS NOT NULL
"""


async def key_press_for_async(
    conn: psycopg.AsyncConnection[Any], outbox_id: int, key: str, channel: str
) -> KeyPress | None:
    """The `KeyPress` for a key pressed in the call that delivered notification `outbox_id`."""
    row = await (await conn.execute(_KEY_TARGET, (outbox_id,))).fetchone()
    if row is None:
        return None
    return KeyPress(row[0], row[1], row[2], row[3], row[4], key, channel)


async def accept_key_press_async(
    conn: psycopg.AsyncConnection[Any],
    press: KeyPress,
    now: datetime,
    *,
    request_help: Callable[[psycopg.AsyncConnection[Any], int, str, datetime], Awaitable[int]],
) -> KeyResult:
    """Act on a key, in one transaction of its own; the press is on the alert's history."""
    async with conn.transaction():
        await store.add_history_async(
            conn,
            [
                (
                    press.alert_id,
                    "key_pressed",
                    Jsonb(
                        {
                            "outbox_id": press.outbox_id,
                            "key": press.key,
                            "role": press.role,
                            "channel": press.channel,
                        }
                    ),
                )
            ],
            now,
            press.name or press.role,
        )
        handler = KEY_HANDLERS.get(press.role)
        if handler is not None:
            return await handler(conn, press, now)
        return await _default_key(conn, press, now, request_help)


async def _default_key(
    conn: psycopg.AsyncConnection[Any],
    press: KeyPress,
    now: datetime,
    request_help: Callable[[psycopg.AsyncConnection[Any], int, str, datetime], Awaitable[int]],
) -> KeyResult:
    by = press.name or press.role
    try:
        if press.key == "1":
            first = await store.acknowledge_async(
                conn,
                press.alert_id,
                by=by,
                channel="voice",
                now=now,
                contact_id=contact_id_of(press.contact_ref),
            )
            return KeyResult(press.alert_id, "acknowledged" if first else "already_acknowledged")
        if press.key == "2":
            await request_help(conn, press.alert_id, by, now)
            return KeyResult(press.alert_id, "help")
    except AlertStateError:
        return KeyResult(press.alert_id, "no_alert")
    return KeyResult(press.alert_id, "ignored")


async def _resident_key(conn: psycopg.AsyncConnection[Any], press: KeyPress, now: datetime) -> KeyResult:
    """A key the resident pressed in their check-in call: the answer to the check-in (1 fine,
    2 need help), recorded by `alerts.check_in` as a reply would be. "Need help" makes the
    escalation due at once, so the love-key holder is told and the chain goes on."""
    action = await check_in.answer_key_async(
        conn, press.alert_id, press.key, by=press.name or press.role, channel=press.channel, now=now
    )
    return KeyResult(press.alert_id, action)


KEY_HANDLERS[ContactRole.RESIDENT] = _resident_key
