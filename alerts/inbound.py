"""Acknowledgement from outside: a signed link, or an SMS reply.

Both end in `alerts.store.acknowledge` / `resolve`; what is here decides *which* alert and
*who*. Synchronous psycopg; each function runs its own transaction.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lovekey.alerts import store
from lovekey.alerts.tokens import make_token, parse_token, verify_token
from lovekey.errors import AckTokenError, AlertStateError


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


def holder_of(conn: psycopg.Connection[Any], secret: bytes, token: str, now: datetime) -> LinkHolder:
    """The recipient a token was issued to; AckTokenError when it is malformed, forged,
    for no notification we sent, or expired."""
    parts = parse_token(token)
    row = conn.execute(
        """
        SELECT id, alert_id, recipient_key, contact_ref, name, language, detail
        FROM alert_outbox WHERE id = %s AND alert_id IS NOT NULL
        """,
        (parts.outbox_id,),
    ).fetchone()
    if row is None:
        raise AckTokenError("forged")  # never issued: same answer as a bad MAC
    holder = LinkHolder(*row)
    verify_token(secret, parts, alert_id=holder.alert_id, recipient_key=holder.recipient_key, now=now)
    return holder


def other_alerts(
    conn: psycopg.Connection[Any],
    secret: bytes,
    holder: LinkHolder,
    now: datetime,
    ttl_s: int,
    base_url: str,
) -> list[dict[str, Any]]:
    """The holder's other unresolved alerts (a bundle's members), each with its own link."""
    rows = conn.execute(
        """
        SELECT DISTINCT ON (o.alert_id) o.id, o.alert_id, o.detail, a.status
        FROM alert_outbox o JOIN alert a ON a.id = o.alert_id
        WHERE o.recipient_key = %s AND o.purpose = 'alert' AND o.state = 'sent'
          AND o.alert_id <> %s AND a.status <> 'resolved' AND o.sent_at > %s
        ORDER BY o.alert_id, o.id DESC
        """,
        (holder.recipient_key, holder.alert_id, now - timedelta(seconds=ttl_s)),
    ).fetchall()
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


@dataclass(frozen=True, slots=True)
class SmsReply:
    acknowledged: int | None  # the alert acknowledged (None: nothing matched)
    first: bool  # this reply was the first acknowledgement
    reason: str  # 'ok', 'already_acknowledged', 'not_understood', 'no_alert'


_CODE = re.compile(r"#?\s*(\d{1,12})\b")


def parse_reply(text: str) -> int | None:
    """`1` means "the latest alert I was sent"; any other number (or `#123`) is an alert's
    short code (its id). Full-width digits count. None: not an acknowledgement."""
    normalized = unicodedata.normalize("NFKC", text).strip()
    match = _CODE.match(normalized)
    if not match:
        return None
    return int(match[1])


def phone_variants(sender: str, default_country_code: str) -> list[str]:
    """E.164 forms the sender's number may be stored as."""
    digits = re.sub(r"\D", "", sender)
    if not digits:
        return []
    if sender.strip().startswith("+"):
        return [f"+{digits}"]
    return [f"+{digits}", f"+{default_country_code}{digits.lstrip('0')}"]


def acknowledge_by_sms(
    conn: psycopg.Connection[Any],
    sender: str,
    text: str,
    now: datetime,
    *,
    ttl_s: int,
    default_country_code: str,
) -> SmsReply:
    code = parse_reply(text)
    if code is None:
        return SmsReply(None, False, "not_understood")
    phones = phone_variants(sender, default_country_code)
    with conn.transaction():
        row = conn.execute(
            """
            SELECT o.alert_id, o.name, o.contact_ref
            FROM alert_outbox o JOIN alert a ON a.id = o.alert_id
            WHERE o.phone = ANY(%(phones)s) AND o.purpose = 'alert' AND o.state = 'sent'
              AND o.sent_at > %(since)s AND a.status <> 'resolved'
              AND (%(code)s = 1 OR o.alert_id = %(code)s)
            ORDER BY (o.alert_id = %(code)s) DESC, o.sent_at DESC, o.id DESC
            LIMIT 1
            """,
            {"phones": phones, "since": now - timedelta(seconds=ttl_s), "code": code},
        ).fetchone()
        if row is None:
            return SmsReply(None, False, "no_alert")
        alert_id, name, contact_ref = row
        try:
            first = store.acknowledge(
                conn,
                alert_id,
                by=name or sender,
                channel="sms",
                now=now,
                contact_id=_contact_id(contact_ref),
            )
        except AlertStateError:
            return SmsReply(None, False, "no_alert")
    return SmsReply(alert_id, first, "ok" if first else "already_acknowledged")


def _contact_id(contact_ref: str) -> int | None:
    table, _, ident = contact_ref.partition(":")
    return int(ident) if table == "contact" and ident.isdigit() else None
