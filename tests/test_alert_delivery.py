"""Escalation and delivery on real PostgreSQL with a local HTTP provider and a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from lovekey.alerts.dispatch import _CLAIM
from lovekey.alerts.store import acknowledge, clear_alerts, get_alert, history, resolve
from lovekey.alerts.texts import fits_one_sms
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.config import Settings
from tests.fix_alerts import DeliveryRig, at_local, delivery_rig, seed_community_contact

T0 = at_local("2025-03-01 09:00")


@pytest.fixture(params=[True, False], ids=["keepalive", "apprise"])
def world(
    request: pytest.FixtureRequest, database_url: str, make_settings: Callable[..., Settings]
) -> Iterator[DeliveryRig]:
    """Every test runs with json:// sent over kept-alive connections (the default) and with
    everything through Apprise."""
    with FakeProvider() as fake:
        settings = make_settings(
            database_url=database_url,
            alerts={
                "sms_url": fake.sms_template(),
                "retry_base_s": 10,
                "public_base_url": "https://lk.example",
                "keepalive_webhooks": request.param,
            },
        )
        with delivery_rig(database_url, settings, fake) as rig:
            yield rig


def paths(fake: FakeProvider) -> list[str]:
    return [r.path for r in fake.received()]


def test_chain_escalates_step_by_step_and_stops_at_acknowledgement(world: DeliveryRig) -> None:
    alert_id = world.raise_("low_usage", "R-1", T0)
    world.run(T0)
    assert paths(world.fake) == ["/push/lkh"]
    first = world.fake.received()[0]
    assert "王秀英" in first.body["title"]
    assert "幸福里3-2-101" in first.message
    assert "https://lk.example/a/" in first.message
    alert = get_alert(world.conn, alert_id)
    assert alert is not None
    assert alert["status"] == "notified"

    world.run(T0 + timedelta(minutes=9))  # still waiting for the neighbour
    assert len(world.fake.received()) == 1

    world.run(T0 + timedelta(minutes=10))  # family (SMS) and grid worker (push first)
    assert sorted(paths(world.fake)[1:]) == ["/push/grid", "/sms/8613800000002"]
    sms = world.fake.received("sms")[0]
    assert sms.body["to"] == "+8613800000002"
    assert len(sms.message) <= 70  # one UCS-2 segment
    assert sms.idempotency_key

    world.run(T0 + timedelta(minutes=25))  # community staff, in English
    staff = world.fake.received("sms/8613800000004")
    assert len(staff) == 1
    # English, but the resident's name is Chinese: UCS-2, so the 70-unit variant is chosen
    assert "low water use" in staff[0].message
    assert fits_one_sms(staff[0].message)

    with world.conn.transaction():
        acknowledge(world.conn, alert_id, by="社区刘", channel="cli", now=T0 + timedelta(minutes=30))
    for minutes in (40, 60, 120, 300):
        world.run(T0 + timedelta(minutes=minutes))
    assert len(world.fake.received()) == 4  # nothing after the acknowledgement
    events = [h["event"] for h in history(world.conn, alert_id)]
    assert events == ["opened", "escalated", "notified", "escalated", "escalated", "acknowledged"]


def test_unacknowledged_chain_reaches_emergency_then_repeats(world: DeliveryRig) -> None:
    world.raise_("low_usage", "R-1", T0)
    for minutes in (0, 10, 25, 40):
        world.run(T0 + timedelta(minutes=minutes))
    assert world.fake.received("sms/8613800000120"), "emergency was told at step 4"
    before = len(world.fake.received())
    world.run(T0 + timedelta(minutes=69))
    assert len(world.fake.received()) == before
    world.run(T0 + timedelta(minutes=70))  # 30 min after emergency: repeat round
    repeat = sorted(paths(world.fake)[before:])
    assert repeat == ["/push/grid", "/sms/8613800000004", "/sms/8613800000120"]


def test_life_safety_notifies_several_tiers_at_once(world: DeliveryRig) -> None:
    world.raise_("smoke", "R-1", T0)
    world.run(T0)
    assert sorted(paths(world.fake)) == [
        "/push/grid",
        "/push/lkh",
        "/sms/8613800000002",
        "/sms/8613800000004",
    ]
    texts = [r.body["title"] + r.message for r in world.fake.received()]
    assert all("紧急" in t or "URGENT" in t for t in texts)


def test_device_fault_goes_to_maintenance_only(world: DeliveryRig) -> None:
    seed_community_contact(world.conn, "maintenance", "维修班", phone="+8613900000001")
    seed_resident(world.conn, "R-1", meter_id="WM-1", gateway_id="GW-1")  # R-1 is seeded: adds the meter
    world.raise_("meter_silent", "R-1", T0, subject="WM-1", device_id="WM-1")
    for minutes in (0, 300, 1000):
        world.run(T0 + timedelta(minutes=minutes))
    assert {r.path for r in world.fake.received()} == {"/sms/8613900000001"}
    assert "WM-1" in world.fake.received()[0].message


def test_auto_resolve_sends_stand_down_to_everyone_notified(world: DeliveryRig) -> None:
    alert_id = world.raise_("low_usage", "R-1", T0)
    world.run(T0)
    world.run(T0 + timedelta(minutes=10))
    assert len(world.fake.received()) == 3
    world.fake.clear()
    with world.conn.transaction():
        assert clear_alerts(world.conn, "low_usage", ["R-1"], T0 + timedelta(minutes=12)) == [alert_id]
    world.run(T0 + timedelta(minutes=12))
    got = sorted(paths(world.fake))
    assert got == ["/push/grid", "/push/lkh", "/sms/8613800000002"]
    assert all("解除" in r.message or "解除" in r.body.get("title", "") for r in world.fake.received())
    world.run(T0 + timedelta(minutes=60))  # nothing further, no community staff step
    assert len(world.fake.received()) == 3
    assert [h["event"] for h in history(world.conn, alert_id)][-2:] == [
        "auto_resolved",
        "stand_down",
    ]


def test_provider_500_is_retried_then_falls_back(world: DeliveryRig) -> None:
    world.fake.script("push/grid", [500, 500, 500])
    world.raise_("low_usage", "R-1", T0)
    world.run(T0)
    world.run(T0 + timedelta(minutes=10))  # grid push fails (1)
    assert len(world.fake.received("push/grid")) == 1
    assert not world.fake.received("sms/8613800000003")
    world.run(T0 + timedelta(minutes=10, seconds=9))  # back-off not over
    assert len(world.fake.received("push/grid")) == 1
    world.run(T0 + timedelta(minutes=10, seconds=10))  # retry (2) fails
    world.run(T0 + timedelta(minutes=10, seconds=30))  # retry (3) fails -> falls back to SMS
    assert len(world.fake.received("push/grid")) == 3
    assert len(world.fake.received("sms/8613800000003")) == 1
    results = world.conn.execute(
        """
        SELECT a.channel, a.result, a.error IS NOT NULL FROM delivery_attempt a
        JOIN alert_outbox o ON o.id = a.outbox_id WHERE o.contact_ref = 'contact:3'
        ORDER BY a.id
        """
    ).fetchall()
    assert results == [
        ("push:0", "failed", True),
        ("push:0", "failed", True),
        ("push:0", "failed", True),
        ("sms", "ok", False),
    ]


def test_unanswered_rows_are_cancelled_once_acknowledged(world: DeliveryRig) -> None:
    world.fake.script("push/lkh", [503])
    alert_id = world.raise_("low_usage", "R-1", T0)
    world.run(T0)  # fails, retry due at +10 s
    with world.conn.transaction():
        resolve(
            world.conn,
            alert_id,
            outcome="resident_ok",
            note=None,
            by="staff",
            channel="cli",
            now=T0 + timedelta(seconds=5),
        )
    world.run(T0 + timedelta(minutes=1))
    assert len(world.fake.received()) == 1  # no retry, and no stand-down: never reached
    states = world.conn.execute(
        "SELECT purpose, state FROM alert_outbox WHERE alert_id = %s", (alert_id,)
    ).fetchall()
    assert states == [("alert", "cancelled")]


def test_burst_to_one_recipient_is_bundled(world: DeliveryRig) -> None:
    """One neighbour holds the keys of six residents: six alerts at once are one message."""
    for i in range(2, 7):
        seed_resident(
            world.conn,
            f"R-{i}",
            name=f"住户{i}",
            contacts=[
                ContactSpec("love_key_holder", "李阿姨", push_url=world.fake.url("push/lkh")),
            ],
        )
    ids = [world.raise_("low_usage", f"R-{i}", T0) for i in range(1, 7)]
    report = world.run(T0)
    assert (report.rows_sent, report.messages_sent) == (6, 1)
    (message,) = world.fake.received("push/lkh")
    assert "6条提醒" in message.body["title"]
    assert all(f"#{i}" in message.message for i in ids)
    for alert_id in ids:
        alert = get_alert(world.conn, alert_id)
        assert alert is not None
        assert alert["status"] == "notified"


def test_rate_limit_holds_then_bundles(world: DeliveryRig) -> None:
    """After three messages in ten minutes, a fourth and fifth wait and go out together."""
    for i in range(2, 7):
        seed_resident(
            world.conn,
            f"R-{i}",
            name=f"住户{i}",
            contacts=[
                ContactSpec("love_key_holder", "李阿姨", push_url=world.fake.url("push/lkh")),
            ],
        )
    for i, minute in zip(range(1, 6), (0, 1, 2, 3, 4), strict=True):
        now = T0 + timedelta(minutes=minute)
        world.raise_("low_usage", f"R-{i}", now)
        world.run(now)
    assert len(world.fake.received("push/lkh")) == 3
    world.run(T0 + timedelta(minutes=9, seconds=59))
    assert len(world.fake.received("push/lkh")) == 3
    world.run(T0 + timedelta(minutes=10))
    got = world.fake.received("push/lkh")
    assert len(got) == 4
    assert "2条提醒" in got[3].body["title"]


def test_smoke_is_not_rate_limited(world: DeliveryRig) -> None:
    for i in range(2, 6):
        seed_resident(
            world.conn,
            f"R-{i}",
            name=f"住户{i}",
            contacts=[
                ContactSpec("love_key_holder", "李阿姨", push_url=world.fake.url("push/lkh")),
            ],
        )
    for i in range(1, 5):
        now = T0 + timedelta(minutes=i)
        world.raise_("low_usage", f"R-{i}", now)
        world.run(now)
    assert len(world.fake.received("push/lkh")) == 3
    world.raise_("smoke", "R-5", T0 + timedelta(minutes=5))
    world.run(T0 + timedelta(minutes=5))
    got = world.fake.received("push/lkh")
    assert len(got) == 4
    assert "烟雾" in got[3].body["title"]


def test_quiet_hours_hold_non_urgent_alerts_only(world: DeliveryRig) -> None:
    seed_resident(
        world.conn,
        "R-9",
        name="夜住户",
        contacts=[
            ContactSpec(
                "love_key_holder", "夜邻居", push_url=world.fake.url("push/night"), quiet=("22:00", "07:00")
            ),
        ],
    )
    night = at_local("2025-03-01 23:30")
    world.raise_("low_usage", "R-9", night)
    world.run(night)
    assert world.fake.received("push/night") == []
    world.raise_("gas", "R-9", night)
    world.run(night)
    assert len(world.fake.received("push/night")) == 1  # gas goes through at once
    world.run(at_local("2025-03-02 07:00"))
    assert len(world.fake.received("push/night")) == 2  # the low-usage alert in the morning


def test_daily_digest_to_opted_in_family_once_a_day(world: DeliveryRig) -> None:
    from datetime import UTC, datetime

    from lovekey.alerts.digest import queue_digests

    zone = world.settings.zone
    midnight = datetime.now(UTC).astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    now = midnight + timedelta(hours=8)
    seed_resident(
        world.conn,
        "R-D",
        name="孙奶奶",
        meter_id="WM-D",
        contacts=[
            ContactSpec("family", "孙女", phone="+8613700000001", digest_opt_in=True),
            ContactSpec("family", "孙子", phone="+8613700000002", position=2),  # not opted in
        ],
    )
    seed_resident(
        world.conn,
        "R-E",
        name="钱爷爷",
        meter_id="WM-E",
        contacts=[
            ContactSpec("family", "钱女儿", phone="+8613700000003", digest_opt_in=True),
        ],
    )
    world.conn.execute(
        """
        INSERT INTO water_reading_wide (ts, device_key, total_l)
        SELECT t, d.key, v FROM device d, (VALUES
            (%(m)s - interval '2 hours', 100.0), (%(m)s + interval '6 hours', 100.0),
            (%(m)s + interval '7 hours 10 minutes', 103.5)) AS r(t, v)
        WHERE d.id = 'WM-D'
        UNION ALL
        SELECT %(m)s + interval '7 hours', d.key, 50.0 FROM device d WHERE d.id = 'WM-E'
        """,
        {"m": midnight},
    )
    assert queue_digests(world.conn, world.settings, now) == 1  # R-E used no water yet
    world.run(now)
    (got,) = world.fake.received()
    assert got.path == "/sms/8613700000001"
    assert "孙奶奶" in got.message
    assert "07:10" in got.message
    assert queue_digests(world.conn, world.settings, now + timedelta(hours=2)) == 0
    # no "all is well" while the resident has an open alert, even once water is used
    world.raise_("sos", "R-E", now)
    world.conn.execute(
        "INSERT INTO water_reading_wide (ts, device_key, total_l)"
        " SELECT %s, key, 60.0 FROM device WHERE id = 'WM-E'",
        (midnight + timedelta(hours=9),),
    )
    assert queue_digests(world.conn, world.settings, now + timedelta(hours=3)) == 0


def test_a_claim_reads_the_queue_in_order_instead_of_sorting_all_of_it(database_url: str) -> None:
    """A burst queues thousands of notifications at once; each claim must read its batch off
    an index in the claim's own order (urgent first), not sort every pending row."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO alert_outbox (purpose, recipient_key, contact_ref, role, channels, urgent,
                                      not_before, created_at)
            SELECT 'alert', 'tel:+86139' || lpad(i::text, 8, '0'), 'contact:' || i, 'love_key_holder',
                   '{sms}', i % 10 = 0, now() - interval '1 second' * i, now()
            FROM generate_series(1, 3000) AS i
            """
        )
        conn.execute("ANALYZE alert_outbox")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + _CLAIM, (datetime.now(UTC), 50)))
        conn.rollback()
    assert "alert_outbox_claim_idx" in plan, plan
    assert "Sort" not in plan, plan
