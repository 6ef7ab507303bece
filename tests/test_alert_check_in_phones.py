"""The check-in stage through the template SMS and voice providers: the resident is asked by an
Alibaba Cloud or Tencent Cloud call (or template SMS) made through the official SDKs against the
local stand-ins (lovekey.alerts.providers.standins), and the answer comes back only the verified
ways - the provider's callback to the secret URL, matched to the call or the number LoveKey
wrote to, or the HMAC-signed generic inbound webhook - and ends in alerts.check_in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from lovekey.alerts.ack_pages import create_app, inbound_signature
from lovekey.alerts.channels import ChannelSender
from lovekey.alerts.dispatch import dispatch_once
from lovekey.alerts.escalation_pass import escalate_once
from lovekey.alerts.providers.standins import FakeAliyun, FakeTencent, SentMessage
from lovekey.alerts.store import AlertCandidate, get_alert, history, raise_alerts
from lovekey.bench.support.provider import FakeProvider
from lovekey.config import Settings
from tests.fix_alerts import TEST_SECRET, DeliveryRig, at_local, delivery_rig, serve_app

T0 = at_local("2025-03-01 09:00")  # daytime: outside the default check-in quiet hours
RESIDENT_PHONE = "+8613700000001"
RESIDENT_MOBILE = "13700000001"  # as Alibaba Cloud writes a mainland number
SECRET = "callback-secret-0123456789"
INBOUND, INBOUND_KEY = "inbound-secret-123", "inbound-hmac-key-0123456789"
ALI_KEY, ALI_SECRET = "LTAI5tExampleKeyId", "alibaba-access-key-secret"
TC_KEY, TC_SECRET = "AKIDexampleSecretId", "tencent-secret-key"

# the check-in wording an operator registers (docs/alerts.md, "Templates to register"):
# ${var} for Alibaba Cloud, {n} for Tencent Cloud, the variables in the documented order
ALIYUN_TEMPLATES = {
    "SMS_600001": "${name}您好，社区问候您：一切都好吗？平安请回复1，需要帮助请回复2。https://lk.example/a/${link}",
    "TTS_600002": "${name}您好，这里是社区爱心钥匙。您一切都好吗？平安请按1，需要帮助请按2。",
}
TENCENT_TEMPLATES = {
    "4001": "{1}您好，社区问候您：一切都好吗？平安请回复1，需要帮助请回复2。https://lk.example/a/{2}",
    "4002": "{1}您好，这里是社区爱心钥匙。您一切都好吗？平安请按1，需要帮助请按2。",
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    rig: DeliveryRig
    aliyun: FakeAliyun
    tencent: FakeTencent
    sender: ChannelSender
    client: httpx.Client
    base_url: str
    clock: Clock

    def run(self, now: datetime) -> None:
        """One escalation pass, then dispatch until nothing more is due at `now`."""
        self.clock.now = now
        escalate_once(self.rig.conn, self.rig.escalation, now)
        while dispatch_once(
            self.rig.conn, self.rig.log_conn, self.sender, self.rig.dispatch, lambda: now
        ).claimed:
            pass

    def callback(self, provider: str, topic: str, secret: str = SECRET) -> str:
        return f"{self.base_url}/alerts/providers/{provider}/{secret}/{topic}"

    def check_in(self, now: datetime, resident: str = "R-1") -> int:
        """A check-in alert for `resident`, as the detectors' sensitive tier raises it."""
        with self.rig.conn.transaction():
            result = raise_alerts(
                self.rig.conn,
                [
                    AlertCandidate(
                        "low_usage", resident, resident, None, None, now - timedelta(hours=5), tier="check_in"
                    )
                ],
                now,
            )
        return result.opened[0]

    def answer(self, alert_id: int) -> tuple[Any, ...] | None:
        return self.rig.conn.execute(
            "SELECT answer, channel FROM check_in_answer WHERE alert_id = %s", (alert_id,)
        ).fetchone()

    def status(self, alert_id: int) -> tuple[str, str | None]:
        alert = get_alert(self.rig.conn, alert_id)
        assert alert is not None
        return alert["status"], alert["outcome"]

    def refusals(self) -> list[str]:
        return [
            r[0]
            for r in self.rig.conn.execute(
                "SELECT reason FROM provider_callback WHERE NOT accepted ORDER BY id"
            )
        ]


def _providers(aliyun: FakeAliyun, tencent: FakeTencent) -> dict[str, Any]:
    ali = {"access_key_id": ALI_KEY, "access_key_secret": ALI_SECRET, "endpoint": aliyun.endpoint}
    tc = {"access_key_id": TC_KEY, "access_key_secret": TC_SECRET, "endpoint": tencent.endpoint}
    return {
        "aliyun": {
            "kind": "aliyun_sms",
            **ali,
            "sign_name": "爱心钥匙",
            "callback_secret": SECRET,
            "templates": {"check_in.zh": "SMS_600001"},
        },
        "tencent": {
            "kind": "tencent_sms",
            **tc,
            "sign_name": "爱心钥匙",
            "app_id": "1400000001",
            "callback_secret": SECRET,
            "templates": {"check_in.zh": "4001"},
        },
        "aliyun_voice": {
            "kind": "aliyun_voice",
            **ali,
            "caller_number": "057188880000",
            "callback_secret": SECRET,
            "templates": {"check_in_call.zh": "TTS_600002"},
        },
        "tencent_voice": {
            "kind": "tencent_voice",
            **tc,
            "app_id": "1400000002",
            "callback_secret": SECRET,
            "templates": {"check_in_call.zh": "4002"},
        },
    }


@pytest.fixture
def rig_factory(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Rig]]:
    with ExitStack() as stack:

        def build(tweak: Callable[[dict[str, Any]], None] | None = None, **alerts: Any) -> Rig:
            aliyun = stack.enter_context(
                FakeAliyun(
                    key_id=ALI_KEY, key_secret=ALI_SECRET, sign_name="爱心钥匙", templates=ALIYUN_TEMPLATES
                )
            )
            tencent = stack.enter_context(
                FakeTencent(
                    key_id=TC_KEY, key_secret=TC_SECRET, sign_name="爱心钥匙", templates=TENCENT_TEMPLATES
                )
            )
            fake = stack.enter_context(FakeProvider())  # the contacts' push URLs
            providers = _providers(aliyun, tencent)
            if tweak is not None:
                tweak(providers)
            settings = make_settings(
                database_url=database_url,
                alerts={
                    "public_base_url": "https://lk.example",
                    "ack_secret": TEST_SECRET.decode(),
                    "providers": providers,
                    "inbound_sms_token": INBOUND,
                    "inbound_sms_hmac_key": INBOUND_KEY,
                    "token_ttl_s": 3 * 3600,
                    **alerts,
                },
            )
            rig = stack.enter_context(delivery_rig(database_url, settings, fake))
            rig.conn.execute("UPDATE resident SET phone = %s WHERE id = 'R-1'", (RESIDENT_PHONE,))
            clock = Clock(T0)
            base_url = stack.enter_context(serve_app(create_app(settings, database_url, clock=clock)))
            client = stack.enter_context(httpx.Client(base_url=base_url, timeout=30))
            sender = ChannelSender(providers=dict(settings.alerts.providers))
            stack.callback(sender.close)
            return Rig(rig, aliyun, tencent, sender, client, base_url, clock)

        yield build


def _only(messages: list[SentMessage]) -> SentMessage:
    assert len(messages) == 1, messages
    return messages[0]


def test_key_1_in_an_alibaba_check_in_call_closes_the_alert(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(sms_providers=["aliyun"], voice_providers=["aliyun_voice"])
    alert_id = r.check_in(T0)
    r.run(T0)
    # the resident is called (voice first, as the chain's check-in step says), nobody else
    call = _only(r.aliyun.sent)
    assert (call.kind, call.phone, call.template) == ("voice", RESIDENT_MOBILE, "TTS_600002")
    assert call.rendered.endswith("王秀英您好，这里是社区爱心钥匙。您一切都好吗？平安请按1，需要帮助请按2。")
    assert r.rig.fake.received() == []

    # forged: a wrong secret, and the right secret with a call to another number
    status, _ = r.aliyun.voice_report(
        r.callback("aliyun_voice", "voice_report", "guessed-0123456789"), call, dtmf="1"
    )
    assert status == 403
    other = SentMessage("aliyun", "voice", call.message_id, "13900000000", call.template, {}, "", "")
    status, _ = r.aliyun.voice_report(r.callback("aliyun_voice", "voice_report"), other, dtmf="1")
    assert status == 403
    assert r.refusals() == ["bad_secret", "unmatched"]
    assert r.answer(alert_id) == (None, None)
    assert r.status(alert_id)[0] != "resolved"

    r.clock.now = T0 + timedelta(minutes=1)
    status, answer = r.aliyun.voice_report(r.callback("aliyun_voice", "voice_report"), call, dtmf="1")
    assert (status, answer) == (200, {"code": 0, "msg": "接收成功"})
    assert r.answer(alert_id) == ("fine", "voice@aliyun_voice")
    assert r.status(alert_id) == ("resolved", "resident_ok")
    events = [h["event"] for h in history(r.rig.conn, alert_id)]
    assert {"key_pressed", "check_in_answered", "resolved"} <= set(events)
    for minutes in (10, 20, 30, 60):
        r.run(T0 + timedelta(minutes=minutes))
    assert len(r.aliyun.sent) == 1, "the resident was not asked again"
    assert r.rig.fake.received() == [], "nobody else was woken"


def test_key_2_in_a_tencent_check_in_call_tells_the_love_key_holder(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(sms_providers=["tencent"], voice_providers=["tencent_voice"])
    alert_id = r.check_in(T0)
    r.run(T0)
    call = _only(r.tencent.sent)
    assert call.kind == "voice"
    r.clock.now = T0 + timedelta(minutes=2)
    status, _ = r.tencent.key_press(r.callback("tencent_voice", "voice"), call, "2")
    assert status == 200
    assert r.answer(alert_id) == ("need_help", "voice@tencent_voice")
    # "need help" is the check-in's answer, not a contact's help request: the chain goes on
    # from the love-key holder, at once, exactly as after no answer
    r.run(T0 + timedelta(minutes=2))
    assert [m.path for m in r.rig.fake.received()] == ["/push/lkh"]
    assert r.status(alert_id)[0] == "notified"


def test_a_reply_to_the_check_in_sms_through_alibaba_answers_it(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(sms_providers=["aliyun"])  # no voice provider: the check-in is a text
    alert_id = r.check_in(T0)
    r.run(T0)
    sms = _only(r.aliyun.sent)
    assert (sms.kind, sms.template) == ("sms", "SMS_600001")
    assert sms.rendered.startswith("【爱心钥匙】王秀英您好，社区问候您：一切都好吗？平安请回复1")
    assert "https://lk.example/a/" in sms.rendered

    assert (
        r.aliyun.sms_up(r.callback("aliyun", "sms_up", "guessed-0123456789"), RESIDENT_MOBILE, "1")[0] == 403
    )
    assert r.aliyun.sms_up(r.callback("aliyun", "sms_up"), "13900000000", "1")[0] == 403  # a stranger
    assert r.answer(alert_id) == (None, None)
    r.clock.now = T0 + timedelta(minutes=3)
    assert r.aliyun.sms_up(r.callback("aliyun", "sms_up"), RESIDENT_MOBILE, "1")[0] == 200
    assert r.answer(alert_id) == ("fine", "sms@aliyun")
    assert r.status(alert_id) == ("resolved", "resident_ok")


def test_a_tencent_sms_reply_2_asks_for_help(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(sms_providers=["tencent"])
    alert_id = r.check_in(T0)
    r.run(T0)
    assert _only(r.tencent.sent).kind == "sms"
    r.clock.now = T0 + timedelta(minutes=3)
    assert r.tencent.sms_reply(r.callback("tencent", "sms_reply"), RESIDENT_PHONE, "2")[0] == 200
    assert r.answer(alert_id) == ("need_help", "sms@tencent")
    r.run(T0 + timedelta(minutes=3))
    assert [m.path for m in r.rig.fake.received()] == ["/push/lkh"]


def test_the_generic_inbound_webhook_answers_only_when_signed(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(sms_providers=["aliyun"])
    alert_id = r.check_in(T0)
    r.run(T0)
    r.clock.now = T0 + timedelta(minutes=1)
    body = {"from": RESIDENT_PHONE, "text": "1"}
    unsigned = r.client.post(f"/alerts/sms/{INBOUND}", json=body)
    assert unsigned.status_code == 401
    assert r.answer(alert_id) == (None, None)

    request = r.client.build_request("POST", f"/alerts/sms/{INBOUND}", json=body)
    timestamp = str(int(r.clock.now.timestamp()))
    request.headers["X-LoveKey-Timestamp"] = timestamp
    request.headers["X-LoveKey-Signature"] = inbound_signature(INBOUND_KEY, timestamp, request.read())
    signed = r.client.send(request)
    assert signed.json() == {"acknowledged": alert_id, "first": True, "result": "check_in_fine"}
    assert r.answer(alert_id) == ("fine", "sms")


def test_a_silent_resident_is_called_twice_then_texted_then_the_neighbour(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(sms_providers=["aliyun"], voice_providers=["aliyun_voice"])
    alert_id = r.check_in(T0)
    for minutes in (0, 10, 20):
        r.run(T0 + timedelta(minutes=minutes))
    # the default chain: call, call again, then a text (channels voice, sms / voice, sms / sms)
    assert [(m.kind, m.phone) for m in r.aliyun.sent] == [
        ("voice", RESIDENT_MOBILE),
        ("voice", RESIDENT_MOBILE),
        ("sms", RESIDENT_MOBILE),
    ]
    assert r.rig.fake.received() == []
    r.run(T0 + timedelta(minutes=30))
    assert r.answer(alert_id) == ("none", None)
    assert [m.path for m in r.rig.fake.received()] == ["/push/lkh"]


def test_a_voice_provider_without_the_check_in_template_falls_back_to_the_text(
    rig_factory: Callable[..., Rig],
) -> None:
    def no_check_in_call(providers: dict[str, Any]) -> None:
        # the operator registered the contacts' call but not the check-in call
        providers["aliyun_voice"]["templates"] = {"call.zh": "TTS_600003"}

    r = rig_factory(no_check_in_call, sms_providers=["aliyun"], voice_providers=["aliyun_voice"])
    alert_id = r.check_in(T0)
    r.run(T0)
    # no call was made; the resident still gets the text, and the alert says what to fix
    sms = _only(r.aliyun.sent)
    assert (sms.kind, sms.template) == ("sms", "SMS_600001")
    (error,) = [h["detail"] for h in history(r.rig.conn, alert_id) if h["event"] == "provider_error"]
    assert (error["channel"], error["operator"]) == ("voice@aliyun_voice", True)
    assert r.aliyun.sms_up(r.callback("aliyun", "sms_up"), RESIDENT_MOBILE, "1")[0] == 200
    assert r.answer(alert_id) == ("fine", "sms@aliyun")


def test_check_ins_sent_in_one_batch_are_answered_each_on_its_own(rig_factory: Callable[..., Rig]) -> None:
    from lovekey.bench.support.seeding import ContactSpec, seed_resident

    r = rig_factory(sms_providers=["aliyun"])
    seed_resident(
        r.rig.conn,
        "R-2",
        name="刘桂芳",
        address="幸福里3-2-102",
        contacts=[ContactSpec("love_key_holder", "李阿姨", push_url=r.rig.fake.url("push/lkh2"))],
    )
    r.rig.conn.execute("UPDATE resident SET phone = '+8613700000002' WHERE id = 'R-2'")
    first, second = r.check_in(T0), r.check_in(T0, "R-2")
    r.run(T0)
    # the two check-in texts went in one SendBatchSms: one BizId, each with its own name and link
    sent = sorted(r.aliyun.sent, key=lambda m: m.phone)
    assert [m.phone for m in sent] == [RESIDENT_MOBILE, "13700000002"]
    assert sent[0].message_id == sent[1].message_id
    assert sent[0].rendered.startswith("【爱心钥匙】王秀英您好")
    assert sent[1].rendered.startswith("【爱心钥匙】刘桂芳您好")
    assert sent[0].params != sent[1].params  # each resident's own link
    # a receipt for one number of the batch is recorded against that resident's check-in only
    assert r.aliyun.sms_report(r.callback("aliyun", "sms_report"), sent[1])[0] == 200
    statuses = dict(r.rig.conn.execute("SELECT alert_id, status FROM provider_message").fetchall())
    assert statuses == {first: "accepted", second: "delivered"}

    r.clock.now = T0 + timedelta(minutes=2)
    assert r.aliyun.sms_up(r.callback("aliyun", "sms_up"), "13700000002", "1")[0] == 200
    assert r.answer(second) == ("fine", "sms@aliyun")
    assert r.answer(first) == (None, None)
    for minutes in (10, 20, 30):
        r.run(T0 + timedelta(minutes=minutes))
    assert r.answer(first) == ("none", None)
    assert [m.path for m in r.rig.fake.received()] == ["/push/lkh"]  # R-1's neighbour, not R-2's
