"""The check-in stage on real PostgreSQL, with the local fake SMS provider, a fake clock and the
real acknowledgement app over HTTP: the resident is asked first, "fine" closes the alert,
"need help" or silence goes on to the love-key holder."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from lovekey.alerts.ack_pages import create_app, inbound_signature
from lovekey.alerts.store import AlertCandidate, get_alert, history, raise_alerts
from lovekey.bench.support.provider import FakeProvider
from lovekey.cli import main as lovekey_main
from lovekey.config import Settings
from tests.fix_alerts import TEST_SECRET, DeliveryRig, at_local, delivery_rig, serve_app

T0 = at_local("2025-03-01 09:00")  # daytime: outside the default quiet hours (21:00-07:00)
RESIDENT_PHONE = "+8613700000001"
RESIDENT_SMS = "sms/8613700000001"
LINK = re.compile(r"https://lk\.example/a/([0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]+)")
INBOUND = "inbound-secret-123"
INBOUND_KEY = "inbound-hmac-key-0123456789"  # the generic webhook takes only signed replies


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def rig(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[DeliveryRig]:
    with FakeProvider() as fake:
        settings = make_settings(
            database_url=database_url,
            alerts={
                "sms_url": fake.sms_template(),
                "public_base_url": "https://lk.example",
                "ack_secret": TEST_SECRET.decode(),
                "inbound_sms_token": INBOUND,
                "inbound_sms_hmac_key": INBOUND_KEY,
                "token_ttl_s": 3 * 3600,
            },
        )
        with delivery_rig(database_url, settings, fake) as r:
            r.conn.execute("TRUNCATE check_in_answer")
            r.conn.execute("UPDATE resident SET phone = %s WHERE id = 'R-1'", (RESIDENT_PHONE,))
            yield r


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def client(rig: DeliveryRig, database_url: str, clock: Clock) -> Iterator[httpx.Client]:
    with (
        serve_app(create_app(rig.settings, database_url, clock=clock)) as base_url,
        httpx.Client(base_url=base_url, timeout=30, follow_redirects=True) as c,
    ):
        yield c


def sms_in(client: httpx.Client, clock: Clock, **kwargs: Any) -> httpx.Response:
    """POST to the generic inbound-SMS webhook, signed as the operator's gateway signs."""
    request = client.build_request("POST", f"/alerts/sms/{INBOUND}", **kwargs)
    body = request.read()
    timestamp = str(int(clock.now.timestamp()))
    request.headers["X-LoveKey-Timestamp"] = timestamp
    request.headers["X-LoveKey-Signature"] = inbound_signature(INBOUND_KEY, timestamp, body)
    return client.send(request)


def raise_tier(
    rig: DeliveryRig,
    tier: str,
    now: datetime,
    *,
    kind: str = "low_usage",
    details: dict[str, Any] | None = None,
) -> int:
    with rig.conn.transaction():
        result = raise_alerts(
            rig.conn,
            [
                AlertCandidate(
                    kind=kind,
                    subject="R-1",
                    resident_id="R-1",
                    device_id=None,
                    gateway_id=None,
                    since=now - timedelta(hours=5),
                    details=details or {},
                    tier=tier,
                )
            ],
            now,
        )
    return (result.opened or result.updated)[0]


def answer_row(rig: DeliveryRig, alert_id: int) -> tuple[object, ...] | None:
    return rig.conn.execute(
        "SELECT answer, channel, dry_minutes, part_of_day FROM check_in_answer WHERE alert_id = %s",
        (alert_id,),
    ).fetchone()


def stage(rig: DeliveryRig, alert_id: int) -> str | None:
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    return alert["stage"]  # type: ignore[no-any-return]


def events(rig: DeliveryRig, alert_id: int) -> list[str]:
    return [h["event"] for h in history(rig.conn, alert_id)]


def test_a_resident_who_answers_fine_closes_the_alert_and_nobody_is_woken(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    # only the resident is asked, by SMS with a reply (no voice provider is configured)
    asked = rig.fake.received()
    assert [r.path for r in asked] == [f"/{RESIDENT_SMS}"]
    assert "回复1" in asked[0].message
    assert "https://lk.example/a/" in asked[0].message
    assert stage(rig, alert_id) == "check_in"

    clock.now = T0 + timedelta(minutes=4)
    reply = sms_in(client, clock, json={"from": RESIDENT_PHONE, "text": "1"})
    assert reply.json() == {"acknowledged": alert_id, "first": True, "result": "check_in_fine"}

    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["outcome"]) == ("resolved", "resident_ok")
    assert answer_row(rig, alert_id) == ("fine", "sms", 5 * 60, "morning")
    for minutes in (5, 10, 30, 60, 120):
        rig.run(T0 + timedelta(minutes=minutes))
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}"], "nobody else was told"
    assert "stand_down" not in events(rig, alert_id)
    # a second "1" finds nothing open
    again = sms_in(client, clock, json={"from": RESIDENT_PHONE, "text": "1"})
    assert again.json()["result"] == "no_alert"


def test_no_answer_asks_three_times_then_the_neighbour_is_called(rig: DeliveryRig) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    rig.run(T0 + timedelta(minutes=9))
    assert len(rig.fake.received()) == 1
    rig.run(T0 + timedelta(minutes=10))  # asked again
    rig.run(T0 + timedelta(minutes=20))  # the last ask, a text
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}"] * 3
    assert answer_row(rig, alert_id) == (None, None, 5 * 60, "morning")
    rig.run(T0 + timedelta(minutes=29))
    assert len(rig.fake.received()) == 3
    rig.run(T0 + timedelta(minutes=30))  # the stage is over: the love-key holder, as always
    assert rig.fake.received()[-1].path == "/push/lkh"
    assert stage(rig, alert_id) == "love_key_holder"
    assert answer_row(rig, alert_id)[0] == "none"  # type: ignore[index]
    rig.run(T0 + timedelta(minutes=40))
    assert sorted(r.path for r in rig.fake.received()[4:]) == ["/push/grid", "/sms/8613800000002"]
    assert stage(rig, alert_id) == "family"
    assert events(rig, alert_id).count("check_in_ended") == 1


def test_need_help_goes_to_the_neighbour_at_once(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    clock.now = T0 + timedelta(minutes=2)
    reply = sms_in(client, clock, json={"from": RESIDENT_PHONE, "text": "２"})
    assert reply.json()["result"] == "check_in_need_help"
    rig.run(T0 + timedelta(minutes=2))
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}", "/push/lkh"]
    assert answer_row(rig, alert_id)[0] == "need_help"  # type: ignore[index]
    assert get_alert(rig.conn, alert_id)["status"] != "resolved"  # type: ignore[index]


def test_the_residents_page_answers_the_check_in(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    token = LINK.search(rig.fake.received()[0].message)
    assert token
    page = client.get(f"/a/{token[1]}")
    assert page.status_code == 200
    assert "我很好" in page.text
    assert "我需要帮助" in page.text
    assert "我这就去" not in page.text  # not the neighbour's page
    # a contact's action on the resident's link is refused
    assert client.post(f"/a/{token[1]}", data={"action": "going"}).status_code == 400
    clock.now = T0 + timedelta(minutes=12)
    done = client.post(f"/a/{token[1]}", data={"action": "i_am_fine"})
    assert done.status_code == 200
    assert "谢谢" in done.text
    assert answer_row(rig, alert_id) == ("fine", "link", 5 * 60, "morning")
    assert get_alert(rig.conn, alert_id)["outcome"] == "resident_ok"  # type: ignore[index]


def test_a_neighbour_tier_raise_goes_past_the_stage_at_once(rig: DeliveryRig) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    later = T0 + timedelta(minutes=3)
    raise_tier(rig, "neighbour", later)
    rig.run(later)
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}", "/push/lkh"]
    assert answer_row(rig, alert_id)[0] == "none"  # type: ignore[index]
    assert stage(rig, alert_id) == "love_key_holder"


def test_a_check_in_after_the_door_saw_them_go_out_waits_for_the_neighbour_tier(rig: DeliveryRig) -> None:
    """`detect.door_out_holds_neighbour`: the stage's silence wakes nobody (the resident is
    probably out); the detectors' neighbour tier, when it fires, goes on as any raise does."""
    alert_id = raise_tier(rig, "check_in", T0, kind="routine_break", details={"door_out": True})
    for minutes in (0, 10, 20):
        rig.run(T0 + timedelta(minutes=minutes))
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}"] * 3
    for minutes in (30, 90, 200):  # the stage is over, unanswered: held
        rig.run(T0 + timedelta(minutes=minutes))
    assert len(rig.fake.received()) == 3, "nobody else was told"
    assert stage(rig, alert_id) == "check_in"
    assert answer_row(rig, alert_id)[0] is None  # type: ignore[index]
    later = T0 + timedelta(minutes=240)
    raise_tier(rig, "neighbour", later, kind="routine_break", details={"door_out": True})
    rig.run(later)
    assert rig.fake.received()[-1].path == "/push/lkh"
    assert stage(rig, alert_id) == "love_key_holder"
    assert answer_row(rig, alert_id)[0] == "none"  # type: ignore[index]


def test_door_out_false_is_the_stage_as_always(rig: DeliveryRig) -> None:
    """The detail is written false while the setting is off: the neighbour is called."""
    alert_id = raise_tier(rig, "check_in", T0, kind="routine_break", details={"door_out": False})
    for minutes in (0, 10, 20, 30):
        rig.run(T0 + timedelta(minutes=minutes))
    assert rig.fake.received()[-1].path == "/push/lkh"
    assert stage(rig, alert_id) == "love_key_holder"


def test_a_late_fine_stands_the_neighbour_down(rig: DeliveryRig, client: httpx.Client, clock: Clock) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    for minutes in (0, 10, 20, 30):
        rig.run(T0 + timedelta(minutes=minutes))
    assert rig.fake.received()[-1].path == "/push/lkh"
    clock.now = T0 + timedelta(minutes=33)
    reply = sms_in(client, clock, json={"from": RESIDENT_PHONE, "text": "1"})
    assert reply.json()["result"] == "check_in_fine"
    rig.fake.clear()
    rig.run(T0 + timedelta(minutes=33))
    # the neighbour hears the all-clear; the resident, who said it, is not told it
    assert [r.path for r in rig.fake.received()] == ["/push/lkh"]
    assert answer_row(rig, alert_id)[0] == "fine"  # type: ignore[index]


def test_a_neighbour_tier_alert_never_asks_the_resident(rig: DeliveryRig) -> None:
    raise_tier(rig, "neighbour", T0)
    rig.run(T0)
    assert [r.path for r in rig.fake.received()] == ["/push/lkh"]


def test_life_safety_never_waits_for_the_resident(rig: DeliveryRig) -> None:
    raise_tier(rig, "check_in", T0, kind="sos")  # a tier on an SOS means nothing
    rig.run(T0)
    paths = [r.path for r in rig.fake.received()]
    assert f"/{RESIDENT_SMS}" not in paths
    assert "/push/lkh" in paths


def test_quiet_hours_hold_the_check_in_until_morning(rig: DeliveryRig) -> None:
    night = at_local("2025-03-01 23:30")
    alert_id = raise_tier(rig, "check_in", night)
    rig.run(night)
    rig.run(at_local("2025-03-02 06:59"))
    assert rig.fake.received() == []
    rig.run(at_local("2025-03-02 07:00"))
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}"]
    assert answer_row(rig, alert_id)[3] == "morning"  # type: ignore[index]


def test_a_check_in_raised_by_the_neighbour_tier_waits_for_no_morning(rig: DeliveryRig) -> None:
    """`detect.quiet_neighbour_asks_first`: a check-in raised although the detectors'
    neighbour tier had fired (`details.neighbour_tier`) asks the resident first by day; in
    quiet hours the neighbour is told at once, as without the stage, instead of waiting for
    the morning."""
    night = at_local("2025-03-01 23:30")
    raise_tier(rig, "check_in", night, details={"neighbour_tier": True})
    rig.run(night)
    paths = [r.path for r in rig.fake.received()]
    assert f"/{RESIDENT_SMS}" not in paths
    assert "/push/lkh" in paths


def test_a_check_in_raised_by_the_neighbour_tier_asks_the_resident_by_day(rig: DeliveryRig) -> None:
    raise_tier(rig, "check_in", T0, details={"neighbour_tier": True})
    rig.run(T0)
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}"]


def test_community_quiet_hours_and_switch(rig: DeliveryRig) -> None:
    # this community marks 08:00-10:00 quiet: 09:00 is inside
    rig.conn.execute(
        "UPDATE community SET check_in_quiet_start = '08:00', check_in_quiet_end = '10:00' WHERE id = 'C-1'"
    )
    raise_tier(rig, "check_in", T0)
    rig.run(T0)
    assert rig.fake.received() == []
    rig.run(T0 + timedelta(hours=1))
    assert [r.path for r in rig.fake.received()] == [f"/{RESIDENT_SMS}"]


def test_switched_off_a_check_in_alert_goes_to_the_neighbour(rig: DeliveryRig) -> None:
    rig.conn.execute("UPDATE community SET check_in_enabled = false WHERE id = 'C-1'")
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    # nobody asks the resident; the sensitive tier's flag is not dropped: the chain's steps
    assert [r.path for r in rig.fake.received()] == ["/push/lkh"]
    assert "check_in_skipped" in events(rig, alert_id)
    assert answer_row(rig, alert_id) is None  # the resident was not asked, and not unreachable
    assert stage(rig, alert_id) == "love_key_holder"


def test_a_resident_without_a_phone_goes_straight_to_the_neighbour(rig: DeliveryRig) -> None:
    rig.conn.execute("UPDATE resident SET phone = NULL WHERE id = 'R-1'")
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    assert [r.path for r in rig.fake.received()] == ["/push/lkh"]
    # the detectors read this as "use the neighbour tier's timing for this resident"
    assert answer_row(rig, alert_id) == ("unreachable", None, 5 * 60, "morning")
    rig.run(T0 + timedelta(minutes=10))
    assert sorted(r.path for r in rig.fake.received()[1:]) == ["/push/grid", "/sms/8613800000002"]


def test_without_an_sms_gateway_the_phone_is_not_usable(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    with FakeProvider() as fake:
        settings = make_settings(database_url=database_url, alerts={"public_base_url": "https://lk.example"})
        with delivery_rig(database_url, settings, fake) as r:
            r.conn.execute("TRUNCATE check_in_answer")
            r.conn.execute("UPDATE resident SET phone = %s WHERE id = 'R-1'", (RESIDENT_PHONE,))
            alert_id = raise_tier(r, "check_in", T0)
            r.run(T0)
            assert [x.path for x in fake.received()] == ["/push/lkh"]
            assert answer_row(r, alert_id)[0] == "unreachable"  # type: ignore[index]


def test_a_phone_that_never_takes_a_message_ends_unreachable(rig: DeliveryRig) -> None:
    rig.fake.script(f"/{RESIDENT_SMS}", [400] * 50)  # the provider refuses the number
    alert_id = raise_tier(rig, "check_in", T0)
    for minutes in (0, 1, 2, 5, 10, 11, 15, 20, 21, 25, 30):
        rig.run(T0 + timedelta(minutes=minutes))
    assert answer_row(rig, alert_id)[0] == "unreachable"  # type: ignore[index]
    assert rig.fake.received("push/lkh")


def test_alerts_list_json_shows_tier_and_stage(
    rig: DeliveryRig,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", database_url)
    assert lovekey_main(["alerts", "list", "--json"]) == 0
    (row,) = [a for a in json.loads(capsys.readouterr().out) if a["id"] == alert_id]
    assert (row["tier"], row["stage"]) == ("check_in", "check_in")
    assert row["check_in"] == {"answer": None, "asked_at": row["check_in"]["asked_at"], "answered_at": None}


def test_the_check_in_command_switches_a_community(
    rig: DeliveryRig,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", database_url)
    assert lovekey_main(["alerts", "check-in", "--community", "C-1", "--off", "--quiet", "22:30-06:00"]) == 0
    capsys.readouterr()
    assert lovekey_main(["alerts", "check-in", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row == {
        "community_id": "C-1",
        "name": "C-1",
        "enabled": False,
        "enabled_from": "community",
        "quiet": "22:30-06:00",
        "quiet_from": "community",
    }
    # off: the check-in alert does not ask the resident, it goes to the neighbour
    raise_tier(rig, "check_in", T0)
    rig.run(T0)
    assert [r.path for r in rig.fake.received()] == ["/push/lkh"]
    assert lovekey_main(["alerts", "check-in", "--community", "C-1", "--default", "--quiet-default"]) == 0
    assert lovekey_main(["alerts", "check-in", "--community", "C-1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert (row["enabled"], row["enabled_from"], row["quiet"]) == (True, "settings", "21:00-07:00")
    assert lovekey_main(["alerts", "check-in", "--off"]) != 0  # which community?
    assert lovekey_main(["alerts", "check-in", "--community", "C-9", "--on"]) != 0
    assert lovekey_main(["alerts", "check-in", "--community", "C-1", "--quiet", "late"]) != 0


def test_check_ins_are_counted_by_answer(rig: DeliveryRig, database_url: str) -> None:
    from lovekey.alerts.metrics import outbox_registry

    def counts() -> dict[str, float]:
        (family,) = [
            f for f in outbox_registry(database_url).collect() if f.name == "lovekey_alerts_check_ins"
        ]
        return {s.labels["answer"]: s.value for s in family.samples}

    assert counts() == {"asking": 0, "fine": 0, "need_help": 0, "none": 0, "unreachable": 0}
    raise_tier(rig, "check_in", T0)
    rig.run(T0)
    assert counts()["asking"] == 1
    for minutes in (10, 20, 30):
        rig.run(T0 + timedelta(minutes=minutes))
    assert counts() == {"asking": 0, "fine": 0, "need_help": 0, "none": 1, "unreachable": 0}


def test_a_key_pressed_in_the_call_answers_like_a_reply(rig: DeliveryRig, database_url: str) -> None:
    import asyncio

    import psycopg as pg

    from lovekey.alerts.check_in import answer_key_async

    first = raise_tier(rig, "check_in", T0)
    rig.run(T0)

    async def press(alert_id: int, key: str) -> str:
        async with await pg.AsyncConnection.connect(database_url) as conn, conn.transaction():
            return await answer_key_async(
                conn, alert_id, key, by="王秀英", channel="voice@test", now=T0 + timedelta(minutes=1)
            )

    assert asyncio.run(press(first, "9")) == "ignored"
    assert answer_row(rig, first)[0] is None  # type: ignore[index]
    assert asyncio.run(press(first, "2")) == "help"
    assert answer_row(rig, first)[:2] == ("need_help", "voice@test")  # type: ignore[index]
    assert asyncio.run(press(first, "1")) == "no_alert"  # a given answer stands
    rig.run(T0 + timedelta(minutes=1))
    assert rig.fake.received()[-1].path == "/push/lkh"


def test_a_reply_goes_to_the_newest_message_the_phone_was_sent(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    from lovekey.bench.support.seeding import ContactSpec, seed_resident

    # the resident R-1 also holds the key of R-2, on the same phone
    seed_resident(
        rig.conn,
        "R-2",
        name="刘桂芳",
        contacts=[ContactSpec("love_key_holder", "王秀英", phone=RESIDENT_PHONE)],
    )

    def reply(minutes: int, text: str) -> str:
        clock.now = T0 + timedelta(minutes=minutes)
        answer = sms_in(client, clock, json={"from": RESIDENT_PHONE, "text": text})
        return str(answer.json()["result"])

    own = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    assert reply(2, "1") == "check_in_fine"
    assert reply(3, "1") == "no_alert"  # a second "1" to the closed check-in changes nothing
    with rig.conn.transaction():
        neighbour = raise_alerts(
            rig.conn,
            [AlertCandidate("low_usage", "R-2", "R-2", None, None, T0 - timedelta(hours=12))],
            T0 + timedelta(minutes=5),
        ).opened[0]
    rig.run(T0 + timedelta(minutes=5))
    assert reply(6, "1") == "ok"  # now the newest message is R-2's alert: "I'm going"
    assert get_alert(rig.conn, neighbour)["status"] == "acknowledged"  # type: ignore[index]
    assert get_alert(rig.conn, own)["outcome"] == "resident_ok"  # type: ignore[index]


def test_a_resident_never_acknowledges_their_own_alert(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    clock.now = T0 + timedelta(minutes=1)
    assert sms_in(client, clock, json={"from": RESIDENT_PHONE, "text": "2"}).json()["result"] == (
        "check_in_need_help"
    )
    clock.now = T0 + timedelta(minutes=2)
    again = sms_in(client, clock, json={"from": RESIDENT_PHONE, "text": "1"})
    assert again.json()["result"] == "no_alert"
    assert get_alert(rig.conn, alert_id)["status"] != "acknowledged"  # type: ignore[index]
    rig.run(T0 + timedelta(minutes=2))
    assert rig.fake.received()[-1].path == "/push/lkh"  # help is still on its way
