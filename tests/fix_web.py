"""Console test support (a pytest plugin): a small district, and signing in over HTTP.

Two communities, three grids, three residents with meters, readings with a known hourly
pattern (a meter swap and a dry spell included), alerts raised through alerts.store, their
delivery rows, and staff of every role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import psycopg

from lovekey.alerts.store import AlertCandidate, raise_alerts, resolve
from lovekey.devices import apply_registry, parse_registry
from lovekey.web.users import add_user

# the console's fake "now": half past an hour, so the newest chart hour is partial
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1, minutes=30)
PASSWORD = "correct horse battery"
SLOT_S = 900
READING_DAYS = 9

REGISTRY = """\
device_id,gateway_id,resident_id,kind,report_interval_s,resident_name,household_id,address,community_id,community_name,grid_id,grid_name,contact1_role,contact1_name,contact1_phone,contact2_role,contact2_name,contact2_phone
WM-A1,GW-A,R-A1,water_meter,900,Zhang Wei,H-A1,Building 1 Room 101,C-A,Sunshine,G-A1,Grid A1,love_key_holder,Li Na,13900000001,family,Zhang Min,13700000001
SMK-A1,GW-A,R-A1,smoke,3600,,H-A1,,C-A,,G-A1,,,,,,,
WM-A2,GW-A,R-A2,water_meter,900,Wang Fang,H-A2,Building 2 Room 202,C-A,Sunshine,G-A2,Grid A2,love_key_holder,Zhao Lei,13900000002,,,
WM-B1,GW-B,R-B1,water_meter,900,Liu Yang,H-B1,Building 9 Room 901,C-B,Riverside,G-B1,Grid B1,family,Liu Jie,13700000003,,,
"""

STAFF = {
    # name: (role, grids, communities)
    "root": ("admin", [], []),
    "gw_a1": ("grid_worker", ["G-A1"], []),
    "cs_a": ("community_staff", [], ["C-A"]),
    "cs_b": ("community_staff", [], ["C-B"]),
}


@dataclass(frozen=True, slots=True)
class Seeded:
    alerts: dict[str, int]  # 'low_usage:R-A1' -> alert id
    slot_start_s: float  # epoch of the first reading of WM-A1
    slot_use_l: np.ndarray  # litres used in each 15-minute slot ending at reading i (i >= 1)
    reading_ts_s: np.ndarray  # epoch of each WM-A1 reading
    reading_total_l: np.ndarray  # cumulative totals as stored (with the swap)


def usage_pattern(n: int) -> np.ndarray:
    """Litres per 15-minute slot: a daily rhythm, a dry spell of 14 hours 2 days ago."""
    slot = np.arange(n)
    hour = (slot // 4) % 24
    use = np.where((hour >= 6) & (hour <= 22), 1.0 + (hour % 5) * 0.75 + (slot % 4) * 0.5, 0.0)
    dry_end = n - 2 * 96
    use[dry_end - 14 * 4 : dry_end] = 0.0
    use[0] = 0.0
    return use


def seed(database_url: str) -> Seeded:
    with psycopg.connect(database_url, autocommit=True) as conn:
        apply_registry(conn, parse_registry(REGISTRY, name="web-test.csv"))
    with psycopg.connect(database_url) as conn:
        for name, (role, grids, communities) in STAFF.items():
            add_user(
                conn,
                name,
                role=role,
                password=PASSWORD,
                grid_ids=grids,
                community_ids=communities,
                display_name=name.upper(),
                now=T0,
            )
        keys = dict(conn.execute("SELECT id, key FROM device").fetchall())

        # WM-A1: 15-minute readings for READING_DAYS days up to T0, a meter swap 3 days ago
        n = READING_DAYS * 96 + 1
        start = T0 - timedelta(seconds=SLOT_S * (n - 1))
        ts = start.timestamp() + np.arange(n) * SLOT_S
        use = usage_pattern(n)
        total = 1000.0 + np.cumsum(use)
        swap = n - 3 * 96
        total[swap:] = total[swap:] - total[swap] + 2.0  # the new meter starts near zero
        with conn.cursor().copy(
            "COPY water_reading_wide (ts, device_key, total_l, battery_v) FROM STDIN"
        ) as copy:
            for t, v in zip(ts, total, strict=True):
                copy.write_row((datetime.fromtimestamp(float(t), UTC), keys["WM-A1"], float(v), 3.6))
            # WM-A2 went silent two days ago; WM-B1 reports hourly with steady use
            for h in range(48):
                when = T0 - timedelta(days=4) + timedelta(hours=h)
                copy.write_row((when, keys["WM-A2"], 500.0 + h * 2.0, 3.5))
            for h in range(72):
                copy.write_row((T0 - timedelta(hours=72 - h), keys["WM-B1"], 800.0 + h * 5.0, 3.6))
        conn.execute(
            "UPDATE device SET last_seen = %s, battery_v = 3.6 WHERE id IN ('WM-A1', 'WM-B1')", (T0,)
        )
        conn.execute(
            "UPDATE device SET last_seen = %s, battery_v = 3.5 WHERE id = 'WM-A2'", (T0 - timedelta(days=2),)
        )
        conn.execute("UPDATE device SET last_seen = %s, battery_v = 2.9 WHERE id = 'SMK-A1'", (T0,))
        conn.execute(
            "UPDATE gateway SET online = true, last_seen = %s, status_changed_at = %s WHERE id = 'GW-A'",
            (T0, T0 - timedelta(days=10)),
        )
        conn.execute(
            "UPDATE gateway SET online = false, last_seen = %s, status_changed_at = %s WHERE id = 'GW-B'",
            (T0 - timedelta(hours=5), T0 - timedelta(hours=5)),
        )
        conn.execute(
            "INSERT INTO device_event (ts, device_key, type, active) VALUES (%s, %s, 'smoke', true),"
            " (%s, %s, 'smoke', false)",
            (T0 - timedelta(days=1), keys["SMK-A1"], T0 - timedelta(days=1, minutes=-5), keys["SMK-A1"]),
        )

        def candidate(
            kind: str,
            subject: str,
            resident: str | None,
            device: str | None,
            gateway: str | None,
            hours_ago: float,
        ) -> AlertCandidate:
            return AlertCandidate(
                kind, subject, resident, device, gateway, T0 - timedelta(hours=hours_ago), {"seeded": True}
            )

        # a resolved alert last month-ish, for reports (resident fine: a false alarm)
        old = raise_alerts(
            conn, [candidate("low_usage", "R-B1", "R-B1", "WM-B1", "GW-B", 30 * 24)], T0 - timedelta(days=20)
        ).opened[0]
        resolve(
            conn,
            old,
            outcome="resident_ok",
            note=None,
            by="seed",
            channel="cli",
            now=T0 - timedelta(days=20) + timedelta(minutes=25),
        )
        opened = raise_alerts(
            conn,
            [
                candidate("low_usage", "R-A1", "R-A1", "WM-A1", "GW-A", 13),
                candidate("sos", "R-A2", "R-A2", None, "GW-A", 0.2),
                candidate("smoke", "R-B1", "R-B1", None, "GW-B", 0.1),
                candidate("meter_silent", "WM-A2", None, "WM-A2", "GW-A", 30),
                candidate("gateway_offline", "GW-B", None, None, "GW-B", 5),
            ],
            T0 - timedelta(minutes=40),
        ).opened
        ids = {
            f"{kind}:{subject}": alert_id
            for alert_id, kind, subject in conn.execute(
                "SELECT id, kind, subject FROM alert WHERE id = ANY(%s)", (opened,)
            )
        }
        ids["low_usage:R-B1:resolved"] = old
        # the low-usage alert of R-A1 was sent to the love-key holder, then to the family
        for step, (role, name, minutes) in enumerate(
            [("love_key_holder", "Li Na", 38), ("family", "Zhang Min", 20)]
        ):
            sent = T0 - timedelta(minutes=minutes)
            outbox_id = conn.execute(
                """
                INSERT INTO alert_outbox (alert_id, purpose, round, step, recipient_key, contact_ref,
                                          role, name, channels, state, not_before, created_at,
                                          sent_at, sent_channel)
                VALUES (%s, 'alert', %s, %s, %s, %s, %s, %s, '{sms}', 'sent', %s, %s, %s, 'sms')
                RETURNING id
                """,
                (
                    ids["low_usage:R-A1"],
                    step,
                    step,
                    f"tel:+86139{step}",
                    f"contact:{step + 1}",
                    role,
                    name,
                    sent,
                    sent,
                    sent,
                ),
            ).fetchone()
            assert outbox_id is not None
            conn.execute(
                "INSERT INTO delivery_attempt (outbox_id, started_at, finished_at, channel, result)"
                " VALUES (%s, %s, %s, 'sms', 'ok')",
                (outbox_id[0], sent, sent + timedelta(seconds=2)),
            )
        conn.commit()
    return Seeded(ids, float(ts[0]), use, ts, total)


def expected_hourly_use(seeded: Seeded, start: datetime, hours: int) -> np.ndarray:
    """Litres per hour of WM-A1 computed straight from the seeded slots, independently of
    web.usage: the slot ending at reading i belongs to the hour containing (ts_i - 1 s).
    The reading at the swap used nothing (its delta is dropped)."""
    out = np.zeros(hours)
    swap = len(seeded.reading_ts_s) - 3 * 96
    for i in range(1, len(seeded.reading_ts_s)):
        if i == swap:
            continue
        hour = int((seeded.reading_ts_s[i] - 1 - start.timestamp()) // 3600)
        if 0 <= hour < hours:
            out[hour] += seeded.slot_use_l[i]
    return out


_CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_from_html(html: str) -> str:
    match = _CSRF_FIELD.search(html)
    if not match:
        raise AssertionError("no CSRF field in the page")
    return match.group(1)


def sign_in(client: httpx.Client, username: str, password: str) -> str:
    """Sign in through the form like a browser; returns the session's CSRF token."""
    page = client.get("/login")
    page.raise_for_status()
    response = client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "csrf": csrf_from_html(page.text),
            "next": "/api/me",
        },
    )
    if response.status_code != 303 or not response.headers["location"].endswith("/api/me"):
        raise AssertionError(f"sign-in failed: {response.status_code} {response.headers.get('location')}")
    me = client.get("/api/me")
    me.raise_for_status()
    token: str = me.json()["csrf_token"]
    return token
