"""The daily "all is well" digest: family contacts who opted in (`contact.digest_opt_in`, off by
default) hear once a day that the resident's water use has started, as Japanese water
utilities do. Sent at the first water use of the local day, never while the resident has an
unresolved alert, never to a resident who is away.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from lovekey.alerts.channels import recipient_channels
from lovekey.alerts.escalation_pass import queue_outbox
from lovekey.alerts.policy import quiet_until
from lovekey.alerts.recipients import recipient_key
from lovekey.config import Settings

# a reading must show at least this much use to count as "water was used"
FIRST_USE_MIN_L = 0.5


def queue_digests(conn: psycopg.Connection[Any], settings: Settings, now: datetime) -> int:
    """Queue today's digest for every opted-in family contact whose resident has used water
    today and who has not had one yet. Returns how many were queued; commits."""
    zone = settings.zone
    local = now.astimezone(zone)
    midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=zone)
    with conn.transaction():
        contacts = conn.execute(
            """
            SELECT c.id, c.resident_id, c.role, c.name, c.language, c.phone, c.push_url,
                   c.quiet_start, c.quiet_end, r.name
            FROM contact c JOIN resident r ON r.id = c.resident_id
            WHERE c.digest_opt_in AND c.role = 'family' AND r.status = 'active'
              AND NOT EXISTS (
                  SELECT 1 FROM alert_outbox o
                  WHERE o.purpose = 'digest' AND o.contact_ref = 'contact:' || c.id
                    AND o.digest_date = %s)
              AND NOT EXISTS (
                  SELECT 1 FROM alert a
                  WHERE a.resident_id = c.resident_id AND a.status <> 'resolved')
            """,
            (local.date(),),
        ).fetchall()
        if not contacts:
            return 0
        residents = sorted({c[1] for c in contacts})
        first_use = dict(
            conn.execute(
                """
                SELECT d.resident_id, min(x.ts)
                FROM device d
                CROSS JOIN LATERAL (
                    SELECT ts, reading_total_l(total_dl, total_l_exact)
                              - lag(reading_total_l(total_dl, total_l_exact)) OVER (ORDER BY ts) AS used_l
                    FROM water_reading
                    WHERE device_key = d.key AND ts > %(since)s AND ts <= %(now)s
                ) x
                WHERE d.kind = 'water_meter' AND d.resident_id = ANY(%(residents)s)
                  AND x.ts >= %(midnight)s AND x.used_l >= %(min_l)s
                GROUP BY d.resident_id
                """,
                {
                    "since": midnight - timedelta(days=2),
                    "now": now,
                    "midnight": midnight,
                    "residents": residents,
                    "min_l": FIRST_USE_MIN_L,
                },
            ).fetchall()
        )
        prefs = settings.alerts.role_channels
        rows = []
        for cid, resident_id, role, name, language, phone, push_url, q_start, q_end, rname in contacts:
            at = first_use.get(resident_id)
            if at is None:
                continue
            push_urls = (push_url or "").split()
            channels = recipient_channels(
                prefs.get(role) or prefs.get("default") or ["push", "sms"],
                phone=phone,
                push_urls=push_urls,
                sms_enabled=settings.alerts.sms_url is not None,
            )
            if not channels:
                continue
            rows.append(
                {
                    "alert_id": None,
                    "purpose": "digest",
                    "round": 0,
                    "step": None,
                    "recipient_key": recipient_key(phone, push_urls),
                    "contact_ref": f"contact:{cid}",
                    "role": role,
                    "name": name,
                    "language": language,
                    "phone": phone,
                    "push_urls": push_urls,
                    "channels": channels,
                    "urgent": False,
                    "not_before": quiet_until(now, q_start, q_end, zone) or now,
                    "created_at": now,
                    "digest_date": local.date(),
                    "detail": Jsonb({"name": rname, "first_use_at": at.isoformat()}),
                }
            )
        return queue_outbox(conn, rows)
