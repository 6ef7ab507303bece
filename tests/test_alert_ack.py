"""Acknowledgement: signed links, the page, inbound SMS replies, the CLI, planned absences."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from lovekey.alerts.ack_pages import create_app, inbound_signature
from lovekey.alerts.store import get_alert, history
from lovekey.bench.support.provider import FakeProvider
from lovekey.cli import main as lovekey_main
from lovekey.config import Settings
from tests.fix_alerts import TEST_SECRET, DeliveryRig, at_local, delivery_rig, serve_app

T0 = at_local("2025-03-01 09:00")
LINK = re.compile(r"https://lk\.example/a/([0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]+)")
INBOUND = "inbound-secret-123"
INBOUND_KEY = "inbound-hmac-key-0123456789"


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
                "token_ttl_s": 3600,
            },
        )
        with delivery_rig(database_url, settings, fake) as r:
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


def token_in(message: str) -> str:
    match = LINK.search(message)
    assert match, message
    return match[1]


def test_link_page_acknowledge_then_resolve(rig: DeliveryRig, client: httpx.Client) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    token = token_in(rig.fake.received("push/lkh")[0].message)

    page = client.get(f"/a/{token}")
    assert page.status_code == 200
    assert "王秀英" in page.text
    assert "我这就去" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    # the one inline stylesheet is allowed by its hash, nothing else inline
    style = re.search(r"<style>(.*?)</style>", page.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style[1].encode()).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"style-src 'sha256-{digest}'" in policy
    assert "unsafe-inline" not in policy
    assert " style=" not in page.text
    english = client.get(f"/a/{token}?lang=en").text
    assert "Resident is fine" in english
    assert "low water use" in english

    done = client.post(f"/a/{token}", data={"action": "going"}, follow_redirects=False)
    assert done.status_code == 303
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["acknowledged_by"], alert["ack_channel"]) == (
        "acknowledged",
        "李阿姨",
        "link",
    )

    refused = client.post(f"/a/{token}", data={"action": "resolve", "outcome": "other"})
    assert "请填写备注" in refused.text
    client.post(f"/a/{token}", data={"action": "resolve", "outcome": "hospital", "note": "送医大一院"})
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["outcome"], alert["outcome_note"]) == (
        "resolved",
        "hospital",
        "送医大一院",
    )
    assert [h["event"] for h in history(rig.conn, alert_id)][-2:] == ["acknowledged", "resolved"]


def test_resident_is_fine_button_resolves(rig: DeliveryRig, client: httpx.Client) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    token = token_in(rig.fake.received("push/lkh")[0].message)
    client.post(f"/a/{token}", data={"action": "fine"})
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["outcome"]) == ("resolved", "resident_ok")


def test_needs_help_tells_family_grid_worker_and_staff_at_once(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    token = token_in(rig.fake.received("push/lkh")[0].message)
    clock.now = T0 + timedelta(minutes=3)
    client.post(f"/a/{token}", data={"action": "going"})
    rig.fake.clear()
    clock.now = T0 + timedelta(minutes=8)
    page = client.post(f"/a/{token}", data={"action": "help"})
    assert "tel:120" in page.text
    rig.run(T0 + timedelta(minutes=8))
    assert sorted(r.path for r in rig.fake.received()) == [
        "/push/grid",
        "/sms/8613800000002",
        "/sms/8613800000004",
    ]
    family = rig.fake.received("sms/8613800000002")[0].message
    assert "李阿姨" in family
    assert "需要帮助" in family
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["acknowledged_by"]) == ("acknowledged", "李阿姨")
    assert [h["event"] for h in history(rig.conn, alert_id)][-2:] == [
        "acknowledged",
        "help_needed",
    ]


def test_needs_help_with_nobody_to_tell_says_so_and_keeps_escalating(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    """Only a neighbour and an emergency number: "needs help" reaches nobody, so the page
    must not say that people were told, and the alert must stay unhandled and escalate."""
    from lovekey.bench.support.seeding import seed_resident
    from tests.fix_alerts import standard_contacts

    contacts = standard_contacts(rig.fake)
    seed_resident(rig.conn, "R-2", name="赵大爷", contacts=[contacts[0], contacts[4]])
    alert_id = rig.raise_("low_usage", "R-2", T0)
    rig.run(T0)
    token = token_in(rig.fake.received("push/lkh")[0].message)
    clock.now = T0 + timedelta(minutes=3)
    client.post(f"/a/{token}", data={"action": "going"})
    rig.fake.clear()
    clock.now = T0 + timedelta(minutes=8)

    page = client.post(f"/a/{token}", data={"action": "help"})
    assert "没有通知到任何人" in page.text
    assert "已通知家属" not in page.text
    assert "tel:120" in page.text
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["acknowledged_by"]) == ("notified", None)
    help_row = history(rig.conn, alert_id)[-1]
    assert help_row["event"] == "help_needed"
    assert (help_row["detail"]["recipients"], help_row["detail"]["nobody_reachable"]) == (0, True)

    # the chain goes on past the empty family / grid / staff steps to the emergency number
    rig.run(T0 + timedelta(minutes=10))
    assert [r.path for r in rig.fake.received()] == ["/sms/8613800000120"]


def test_tokens_cannot_be_forged_reused_or_used_late(
    rig: DeliveryRig, client: httpx.Client, clock: Clock
) -> None:
    from lovekey.bench.support.seeding import seed_resident
    from tests.fix_alerts import standard_contacts

    seed_resident(rig.conn, "R-2", name="赵大爷", contacts=standard_contacts(rig.fake)[:1])
    first = rig.raise_("low_usage", "R-1", T0)
    second = rig.raise_("low_usage", "R-2", T0 + timedelta(minutes=5))
    rig.run(T0)
    rig.run(T0 + timedelta(minutes=5))
    token_a = token_in(rig.fake.received("push/lkh")[0].message)
    token_b = token_in(rig.fake.received("push/lkh")[1].message)
    outbox_a, exp_a, mac_a = token_a.split(".")
    outbox_b, _, _ = token_b.split(".")

    # forged: a made-up MAC; A's MAC on B's notification (reuse for another alert)
    for forged in (
        f"{outbox_a}.{exp_a}.AAAAAAAAAAAA",
        f"{outbox_b}.{exp_a}.{mac_a}",
        f"{outbox_a}.{exp_a}x.{mac_a}",
    ):
        response = client.post(f"/a/{forged}", data={"action": "going"})
        assert response.status_code == 403
        assert "无法识别" in response.text
    assert client.get("/a/nonsense").status_code == 404
    for alert_id in (first, second):
        alert = get_alert(rig.conn, alert_id)
        assert alert is not None
        assert alert["status"] == "notified"

    # A's genuine token acts on A only
    client.post(f"/a/{token_a}", data={"action": "going"})
    a, b = get_alert(rig.conn, first), get_alert(rig.conn, second)
    assert a is not None
    assert b is not None
    assert (a["status"], b["status"]) == ("acknowledged", "notified")

    # expired (token_ttl_s is one hour here)
    clock.now = T0 + timedelta(minutes=5, hours=1, seconds=60)
    late = client.post(f"/a/{token_b}", data={"action": "going"})
    assert late.status_code == 403
    assert "过期" in late.text
    b = get_alert(rig.conn, second)
    assert b is not None
    assert b["status"] == "notified"


def test_inbound_sms_reply_acknowledges(rig: DeliveryRig, client: httpx.Client, clock: Clock) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    rig.run(T0 + timedelta(minutes=10))  # the family member gets an SMS
    assert rig.fake.received("sms/8613800000002")
    clock.now = T0 + timedelta(minutes=12)

    assert (
        client.post("/alerts/sms/wrong-secret", json={"from": "+8613800000002", "text": "1"}).status_code
        == 404
    )
    # the path secret alone no longer acknowledges anything: a forged or missing signature,
    # or a replayed one, is refused and the alert stays as it was
    unsigned = client.post(f"/alerts/sms/{INBOUND}", json={"from": "+8613800000002", "text": "1"})
    assert (unsigned.status_code, unsigned.json()) == (401, {"error": "unsigned"})
    forged = client.post(
        f"/alerts/sms/{INBOUND}",
        json={"from": "+8613800000002", "text": "1"},
        headers={
            "X-LoveKey-Timestamp": str(int(clock.now.timestamp())),
            "X-LoveKey-Signature": inbound_signature("not-the-key-0123456789", "0", b"{}"),
        },
    )
    assert (forged.status_code, forged.json()) == (401, {"error": "bad_signature"})
    stale = sms_in(
        client, Clock(clock.now - timedelta(minutes=10)), json={"from": "+8613800000002", "text": "1"}
    )
    assert (stale.status_code, stale.json()) == (401, {"error": "stale"})
    untouched = get_alert(rig.conn, alert_id)
    assert untouched is not None
    assert untouched["status"] == "notified"

    stranger = sms_in(client, clock, json={"from": "+8613999999999", "text": "1"})
    assert stranger.json() == {"acknowledged": None, "first": False, "result": "no_alert"}
    chatter = sms_in(client, clock, data={"from": "8613800000002", "text": "好的"})
    assert chatter.json()["result"] == "not_understood"

    reply = sms_in(client, clock, data={"from": "13800000002", "text": "１"})
    assert reply.json() == {"acknowledged": alert_id, "first": True, "result": "ok"}
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["acknowledged_by"], alert["ack_channel"]) == (
        "acknowledged",
        "王小明",
        "sms",
    )


def test_inbound_sms_short_code_picks_the_alert(rig: DeliveryRig, client: httpx.Client, clock: Clock) -> None:
    first = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0 + timedelta(minutes=0))
    rig.run(T0 + timedelta(minutes=10))
    second = rig.raise_("smoke", "R-1", T0 + timedelta(minutes=11))
    rig.run(T0 + timedelta(minutes=11))  # smoke also reaches the family by SMS
    assert len(rig.fake.received("sms/8613800000002")) == 2
    clock.now = T0 + timedelta(minutes=12)
    reply = sms_in(client, clock, json={"from": "+8613800000002", "text": f"#{first}"})
    assert reply.json()["acknowledged"] == first
    a, b = get_alert(rig.conn, first), get_alert(rig.conn, second)
    assert a is not None
    assert b is not None
    assert (a["status"], b["status"]) == ("acknowledged", "notified")


def test_cli_ack_and_resolve(rig: DeliveryRig, database_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", database_url)
    alert_id = rig.raise_("low_usage", "R-1", T0)
    assert lovekey_main(["alerts", "ack", str(alert_id), "--by", "值班员"]) == 0
    assert lovekey_main(["alerts", "resolve", str(alert_id), "--outcome", "other"]) == 1
    assert "needs a note" in capsys.readouterr().err
    assert (
        lovekey_main(
            ["alerts", "resolve", str(alert_id), "--outcome", "false_data", "--note", "meter read wrong"]
        )
        == 0
    )
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    assert (alert["acknowledged_by"], alert["ack_channel"], alert["outcome"]) == (
        "值班员",
        "cli",
        "false_data",
    )
    assert lovekey_main(["alerts", "ack", str(alert_id)]) == 1


def test_planned_absence_resolves_low_usage_and_stands_down(
    rig: DeliveryRig, database_url: str, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", database_url)
    t0 = datetime.now(UTC)  # the CLI runs on the real clock
    low = rig.raise_("low_usage", "R-1", t0)
    gas = rig.raise_("gas", "R-1", t0)
    rig.run(t0)
    rig.fake.clear()
    assert lovekey_main(["away", "R-1", "--until", "3d", "--reason", "住女儿家"]) == 0
    assert f"resolved alert(s) {low}" in capsys.readouterr().out
    status, until, reason = rig.conn.execute(
        "SELECT status, away_until, away_reason FROM resident WHERE id = 'R-1'"
    ).fetchone()
    assert (status, reason) == ("away", "住女儿家")
    assert until > datetime.now(until.tzinfo) + timedelta(days=2)
    low_alert, gas_alert = get_alert(rig.conn, low), get_alert(rig.conn, gas)
    assert low_alert is not None
    assert gas_alert is not None
    assert (low_alert["status"], low_alert["outcome"]) == ("resolved", "away")
    assert gas_alert["status"] == "notified"  # life safety is never suppressed
    rig.run(t0 + timedelta(minutes=1))
    assert [r.path for r in rig.fake.received()] == ["/push/lkh"]  # stand-down for low usage
    assert "解除" in rig.fake.received()[0].body["title"]

    # a new low-usage alert while away is resolved by the worker before anyone is told
    again = rig.raise_("low_usage", "R-1", t0 + timedelta(minutes=2))
    rig.run(t0 + timedelta(minutes=2))
    again_alert = get_alert(rig.conn, again)
    assert again_alert is not None
    assert again_alert["outcome"] == "away"
    assert len(rig.fake.received()) == 1

    assert lovekey_main(["away", "R-1", "--clear"]) == 0
    assert rig.conn.execute("SELECT status, away_until FROM resident WHERE id = 'R-1'").fetchone() == (
        "active",
        None,
    )
    assert lovekey_main(["away", "R-1", "--until", "tomorrow", "--reason", "x"]) == 1
