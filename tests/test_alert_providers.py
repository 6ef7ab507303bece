"""Template SMS and voice providers: Alibaba Cloud and Tencent Cloud through their official
SDKs, against local stand-ins that verify the SDKs' signatures (ACS3-HMAC-SHA256, TC3) and
answer and call back with the documented bodies (lovekey.alerts.providers.standins)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from lovekey.alerts.ack_pages import create_app
from lovekey.alerts.channels import ChannelSender
from lovekey.alerts.dispatch import DispatchReport, dispatch_once
from lovekey.alerts.escalation_pass import escalate_once
from lovekey.alerts.providers.standins import FakeAliyun, FakeTencent
from lovekey.alerts.store import get_alert, history
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.config import Settings
from tests.fix_alerts import TEST_SECRET, DeliveryRig, at_local, delivery_rig, serve_app

T0 = at_local("2025-03-01 09:00")
SECRET = "callback-secret-0123456789"
ALI_KEY, ALI_SECRET = "LTAI5tExampleKeyId", "alibaba-access-key-secret"
TC_KEY, TC_SECRET = "AKIDexampleSecretId", "tencent-secret-key"

# the wording an operator registers (docs/alerts.md); ${var} for Alibaba, {n} for Tencent
ALIYUN_TEMPLATES = {
    "SMS_400001": "${name}${what}（${since}起），请查看并确认：https://lk.example/a/${link} 回复1确认",
    "SMS_400002": "紧急！${name}${what}（${since}起），请立即前往：https://lk.example/a/${link}",
    "SMS_400003": "${helper}在${name}处，老人需要帮助，请立即前往：https://lk.example/a/${link}",
    "SMS_400004": "${name}的提醒已解除：${outcome}，无需前往。",
    "SMS_400005": "LoveKey: ${name} ${what} since ${since}. Please check: https://lk.example/a/${link} Reply 1",
    "SMS_400006": "URGENT LoveKey: ${helper} is with ${name}, who needs help: https://lk.example/a/${link}",
    "TTS_500001": "爱心钥匙提醒：${name}${what}。我去看看请按1，需要帮助请按2。",
    "TTS_500002": "好的，谢谢。",
}
TENCENT_TEMPLATES = {
    "2001": "{1}{2}（{3}起），请查看并确认：https://lk.example/a/{4} 回复1确认",
    "2002": "紧急！{1}{2}（{3}起），请立即前往：https://lk.example/a/{4}",
    "2003": "{2}在{1}处，老人需要帮助，请立即前往：https://lk.example/a/{3}",
    "2004": "{1}的提醒已解除：{2}，无需前往。",
    "2005": "LoveKey: {1} {2} since {3}. Please check: https://lk.example/a/{4} Reply 1",
    "2006": "URGENT LoveKey: {2} is with {1}, who needs help: https://lk.example/a/{3}",
    "3001": "爱心钥匙提醒：{1}{2}。我去看看请按1，需要帮助请按2。",
}


@dataclass
class Phones:
    rig: DeliveryRig
    aliyun: FakeAliyun
    tencent: FakeTencent
    sender: ChannelSender
    client: httpx.Client
    base_url: str
    clock: Any

    def run(self, now: datetime) -> DispatchReport:
        """One escalation pass, then dispatch until nothing more is due at `now`."""
        self.clock.now = now
        escalate_once(self.rig.conn, self.rig.escalation, now)
        total = DispatchReport()
        while True:
            report = dispatch_once(
                self.rig.conn, self.rig.log_conn, self.sender, self.rig.dispatch, lambda: now
            )
            if not report.claimed:
                return total
            for name in total.__slots__:
                setattr(total, name, getattr(total, name) + getattr(report, name))

    def callback(self, provider: str, topic: str, secret: str = SECRET) -> str:
        return f"{self.base_url}/alerts/providers/{provider}/{secret}/{topic}"

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.rig.conn.execute(sql, args).fetchall()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def provider_settings(aliyun: FakeAliyun, tencent: FakeTencent) -> dict[str, Any]:
    common_ali = {"access_key_id": ALI_KEY, "access_key_secret": ALI_SECRET, "endpoint": aliyun.endpoint}
    common_tc = {"access_key_id": TC_KEY, "access_key_secret": TC_SECRET, "endpoint": tencent.endpoint}
    return {
        "aliyun": {
            "kind": "aliyun_sms",
            **common_ali,
            "sign_name": "爱心钥匙",
            "callback_secret": SECRET,
            "templates": {
                "alert.zh": "SMS_400001",
                "urgent.zh": "SMS_400002",
                "help.zh": "SMS_400003",
                "stand_down.zh": "SMS_400004",
                "alert.en": "SMS_400005",
                "help.en": "SMS_400006",
            },
        },
        "tencent": {
            "kind": "tencent_sms",
            **common_tc,
            "sign_name": "爱心钥匙",
            "app_id": "1400000001",
            "callback_secret": SECRET,
            "templates": {
                "alert.zh": "2001",
                "urgent.zh": "2002",
                "help.zh": "2003",
                "stand_down.zh": "2004",
                "alert.en": "2005",
                "help.en": "2006",
            },
        },
        "aliyun_voice": {
            "kind": "aliyun_voice",
            **common_ali,
            "caller_number": "057188880000",
            "callback_secret": SECRET,
            "templates": {"call.zh": "TTS_500001", "call_bye.zh": "TTS_500002"},
        },
        "tencent_voice": {
            "kind": "tencent_voice",
            **common_tc,
            "app_id": "1400000002",
            "callback_secret": SECRET,
            "templates": {"call.zh": "3001"},
        },
    }


@pytest.fixture
def phones_factory(
    database_url: str, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Phones]]:
    from contextlib import ExitStack

    with ExitStack() as stack:

        def build(tweak: Callable[[dict[str, Any]], None] | None = None, **alerts: Any) -> Phones:
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
            fake = stack.enter_context(FakeProvider())
            providers = provider_settings(aliyun, tencent)
            if tweak is not None:
                tweak(providers)
            settings = make_settings(
                database_url=database_url,
                alerts={
                    "public_base_url": "https://lk.example",
                    "ack_secret": TEST_SECRET.decode(),
                    "providers": providers,
                    "sms_providers": ["aliyun", "tencent"],
                    "voice_providers": ["tencent_voice", "aliyun_voice"],
                    "resident_naming": "surname_title",
                    **alerts,
                },
            )
            rig = stack.enter_context(delivery_rig(database_url, settings, fake))
            clock = Clock(T0)
            base_url = stack.enter_context(serve_app(create_app(settings, database_url, clock=clock)))
            client = stack.enter_context(httpx.Client(base_url=base_url, timeout=30))
            sender = ChannelSender(providers=dict(settings.alerts.providers))
            return Phones(rig, aliyun, tencent, sender, client, base_url, clock)

        yield build


def events(phones: Phones, alert_id: int, event: str) -> list[dict[str, Any]]:
    return [h["detail"] for h in history(phones.rig.conn, alert_id) if h["event"] == event]


def test_template_sms_signed_sent_and_its_receipt_recorded(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory()
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))  # family (SMS) and the grid worker (push first)
    (sms,) = p.aliyun.sent_to("13800000002")
    # the SDK's request passed the stand-in's ACS3-HMAC-SHA256 check; the phone shows the
    # approved template with the signature, the resident named by surname + title
    assert p.aliyun.refused == []
    assert sms.rendered.startswith(
        "【爱心钥匙】王老人用水异常偏少（21:00起），请查看并确认：https://lk.example/a/"
    )
    assert "王秀英" not in sms.rendered
    assert sms.template == "SMS_400001"
    (row,) = p.rows("SELECT provider, channel, message_id, status, phone FROM provider_message")
    assert row == ("aliyun", "sms@aliyun", sms.message_id, "accepted", "+8613800000002")
    assert p.tencent.sent == []  # the second provider is only the fallback

    status, answer = p.aliyun.sms_report(p.callback("aliyun", "sms_report"), sms)
    assert (status, answer) == (200, {"code": 0, "msg": "接收成功"})
    assert p.rows("SELECT status, reason FROM provider_message") == [("delivered", "DELIVERED 用户接收成功")]
    (receipt,) = events(p, alert_id, "delivery_receipt")
    assert (receipt["status"], receipt["channel"]) == ("delivered", "sms@aliyun")


def test_forged_receipts_and_replies_are_refused_and_logged(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory()
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    (sms,) = p.aliyun.sent_to("13800000002")

    # without the secret: 403, nothing recorded as delivered, the attempt kept with its reason
    status, _ = p.aliyun.sms_report(
        p.callback("aliyun", "sms_report", secret="guessed-secret-000000"), sms, success=False
    )
    assert status == 403
    status, _ = p.aliyun.sms_up(
        p.callback("aliyun", "sms_up", secret="guessed-secret-000000"), "13800000002", "1"
    )
    assert status == 403
    # with the secret but for a message LoveKey never sent to that number: 403 as well
    forged = replace(sms, phone="13999999999")
    status, _ = p.aliyun.sms_report(p.callback("aliyun", "sms_report"), forged, success=False)
    assert status == 403
    status, _ = p.aliyun.sms_report(p.callback("aliyun", "sms_report"), replace(sms, message_id="999^0"))
    assert status == 403
    # a malformed body: 400
    assert (
        p.client.post("/alerts/providers/aliyun/" + SECRET + "/sms_report", content=b"{not json").status_code
        == 400
    )

    assert p.rows("SELECT status FROM provider_message") == [("accepted",)]
    alert = get_alert(p.rig.conn, alert_id)
    assert alert is not None
    assert alert["status"] == "notified"
    refused = p.rows("SELECT reason FROM provider_callback WHERE NOT accepted ORDER BY id")
    assert [r[0] for r in refused] == [
        "bad_secret",
        "bad_secret",
        "unmatched",
        "unmatched",
        "malformed: not JSON",
    ]

    # the real reply from the number the alert went to acknowledges it
    status, answer = p.aliyun.sms_up(p.callback("aliyun", "sms_up"), "13800000002", "1")
    assert (status, answer) == (200, {"code": 0, "msg": "接收成功"})
    alert = get_alert(p.rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["ack_channel"], alert["acknowledged_by"]) == (
        "acknowledged",
        "sms",
        "王小明",
    )


def test_unapproved_template_is_an_operator_error_and_the_other_provider_sends(
    phones_factory: Callable[..., Phones],
) -> None:
    p = phones_factory()
    del p.aliyun.templates["SMS_400001"]  # withdrawn at Alibaba Cloud
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    report = p.run(T0 + timedelta(minutes=10))
    assert report.failed == 0
    (sms,) = p.tencent.sent_to("13800000002")
    assert sms.rendered.startswith(
        "【爱心钥匙】王老人用水异常偏少（21:00起），请查看并确认：https://lk.example/a/"
    )
    assert p.tencent.refused == []  # TC3 signature good
    (problem,) = events(p, alert_id, "provider_error")
    assert problem["operator"] is True
    assert problem["code"] == "isv.SMS_TEMPLATE_ILLEGAL"
    assert problem["channel"] == "sms@aliyun"


def test_missing_template_parameter_is_refused_by_the_provider(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory(sms_providers=["aliyun"])
    p.aliyun.templates["SMS_400001"] += "${extra}"  # the approved template wants a variable we lack
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    assert p.aliyun.sent_to("13800000002") == []
    (problem,) = events(p, alert_id, "provider_error")
    assert problem["code"] == "isv.TEMPLATE_MISSING_PARAMETERS"
    # no other provider: the row waits for a retry (an operator may fix the template)
    assert p.rows("SELECT state, channel_attempts FROM alert_outbox WHERE phone = '+8613800000002'") == [
        ("pending", 1)
    ]


def test_throttling_is_retried_later_on_the_same_provider(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory()
    p.aliyun.throttle(1)
    p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    report = p.run(T0 + timedelta(minutes=10))
    assert report.retried == 1
    assert p.aliyun.sent_to("13800000002") == []
    assert p.tencent.sent == []  # throttling is not a reason to switch provider
    ((state, index, not_before),) = p.rows(
        "SELECT state, channel_index, not_before FROM alert_outbox WHERE phone = '+8613800000002'"
    )
    assert (state, index) == ("pending", 0)
    assert not_before >= T0 + timedelta(minutes=11)  # the provider's throttle delay (60 s)
    p.run(T0 + timedelta(minutes=12))
    assert len(p.aliyun.sent_to("13800000002")) == 1


def test_invalid_number_is_not_retried_and_the_alert_moves_on(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory()
    p.aliyun.codes["13800000002"] = "isv.MOBILE_NUMBER_ILLEGAL"
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    assert p.tencent.sent_to("13800000002") == []  # no other provider tried for that number
    assert p.rows("SELECT state FROM alert_outbox WHERE phone = '+8613800000002'") == [("failed",)]
    (failed,) = events(p, alert_id, "delivery_failed")
    assert (failed["reason"], failed["code"], failed["role"]) == (
        "invalid_number",
        "isv.MOBILE_NUMBER_ILLEGAL",
        "family",
    )
    # the chain goes on: community staff are told at the next step
    p.run(T0 + timedelta(minutes=25))
    assert len(p.aliyun.sent_to("13800000004")) == 1


def test_a_step_that_reaches_nobody_goes_on_to_the_next_people_at_once(
    phones_factory: Callable[..., Phones],
) -> None:
    p = phones_factory()
    seed_resident(
        p.rig.conn,
        "R-2",
        name="赵大爷",
        contacts=[
            ContactSpec("love_key_holder", "邻居", phone="+8613900000009"),
            ContactSpec("family", "赵小", phone="+8613900000010"),
        ],
    )
    p.aliyun.codes["13900000009"] = "isv.MOBILE_NUMBER_ILLEGAL"  # the neighbour's only number
    alert_id = p.rig.raise_("low_usage", "R-2", T0)
    p.run(T0)
    assert p.aliyun.sent_to("13900000009") == []
    assert events(p, alert_id, "nobody_reached") == [{"round": 0}]
    p.run(T0 + timedelta(seconds=30))  # not at the 10 minutes the neighbour would have had
    assert len(p.aliyun.sent_to("13900000010")) == 1
    assert len(events(p, alert_id, "escalated")) == 2


def test_a_step_that_reaches_someone_waits_as_before(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory()
    p.aliyun.codes["13800000002"] = "isv.MOBILE_NUMBER_ILLEGAL"  # family; the grid worker is reached
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    assert events(p, alert_id, "nobody_reached") == []
    p.run(T0 + timedelta(minutes=11))
    assert p.aliyun.sent_to("13800000004") == []  # community staff wait for their step


def test_provider_down_falls_back_to_the_other(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory()
    p.aliyun.down = True
    p.rig.raise_("smoke", "R-1", T0)  # life safety: everyone at once
    p.run(T0)
    assert p.aliyun.sent == []
    family = p.tencent.sent_to("13800000002")
    assert len(family) == 1
    assert family[0].rendered.startswith("【爱心钥匙】紧急！王老人烟雾报警")
    assert p.rows("SELECT DISTINCT sent_channel FROM alert_outbox WHERE phone = '+8613800000002'") == [
        ("sms@tencent",)
    ]


def test_voice_call_key_2_asks_for_help_at_once(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory(role_channels={"default": ["push", "sms"], "family": ["voice", "sms"]})
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    (call,) = p.tencent.sent_to("13800000002")
    assert call.kind == "voice"
    assert call.rendered == "(call, read 2x) 爱心钥匙提醒：王老人用水异常偏少。我去看看请按1，需要帮助请按2。"
    assert p.rows("SELECT channel FROM provider_message") == [("voice@tencent_voice",)]

    # a key press from another number naming the same call: refused, nothing happens
    status, _ = p.tencent.key_press(p.callback("tencent_voice", "voice"), call, "1", phone="+8613999999999")
    assert status == 403
    status, answer = p.tencent.key_press(p.callback("tencent_voice", "voice"), call, "2")
    assert (status, answer) == (200, {"result": 0, "errmsg": "OK"})
    (pressed,) = events(p, alert_id, "key_pressed")
    assert (pressed["key"], pressed["role"], pressed["channel"]) == ("2", "family", "voice@tencent_voice")
    (help_needed,) = events(p, alert_id, "help_needed")
    assert help_needed["recipients"] >= 1
    # community staff (not yet in the chain) are told now, urgently
    p.run(T0 + timedelta(minutes=10, seconds=30))
    (staff,) = p.aliyun.sent_to("13800000004")
    assert staff.rendered.startswith("【爱心钥匙】URGENT LoveKey: 王小明 is with resident 王, who needs help")
    # the key is on the call that carried it; the family, a help role, is called again
    assert p.rows("SELECT key_pressed FROM provider_message WHERE channel LIKE 'voice%%' ORDER BY id") == [
        ("2",),
        (None,),
    ]


def test_aliyun_ivr_call_key_1_acknowledges(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory(
        role_channels={"default": ["push", "sms"], "family": ["voice", "sms"]},
        voice_providers=["aliyun_voice"],
    )
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    (call,) = p.aliyun.sent_to("13800000002")
    assert call.kind == "voice"
    assert p.aliyun.refused == []
    status, _ = p.aliyun.voice_report(p.callback("aliyun_voice", "voice_report"), call, dtmf="1")
    assert status == 200
    alert = get_alert(p.rig.conn, alert_id)
    assert alert is not None
    assert (alert["status"], alert["ack_channel"]) == ("acknowledged", "voice")
    assert p.rows("SELECT status, key_pressed FROM provider_message") == [("answered", "1")]


def test_tencent_reply_and_status_report(phones_factory: Callable[..., Phones]) -> None:
    p = phones_factory(sms_providers=["tencent"])
    alert_id = p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    (sms,) = p.tencent.sent_to("13800000002")
    status, _ = p.tencent.sms_status(
        p.callback("tencent", "sms_status"), sms, success=False, errmsg="MK:0001"
    )
    assert status == 200
    assert p.rows("SELECT status, reason FROM provider_message") == [("failed", "MK:0001 失败")]
    status, _ = p.tencent.sms_reply(
        p.callback("tencent", "sms_reply", secret="x" * 20), "+8613800000002", "1"
    )
    assert status == 403
    status, _ = p.tencent.sms_reply(p.callback("tencent", "sms_reply"), "+8613800000002", "1")
    assert status == 200
    alert = get_alert(p.rig.conn, alert_id)
    assert alert is not None
    assert alert["status"] == "acknowledged"


def test_a_message_the_provider_accepted_is_not_sent_again_after_a_crash(
    phones_factory: Callable[..., Phones],
) -> None:
    """The worker dies after the provider accepted and before the outbox row was marked sent:
    the acceptance was committed first, so the next claim marks the row sent instead."""
    p = phones_factory()
    p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    escalate_once(p.rig.conn, p.rig.escalation, T0 + timedelta(minutes=10))

    class Crash(BaseException):
        pass

    from lovekey.alerts import dispatch

    original = dispatch._record_results

    def killed(*args: Any, **kwargs: Any) -> None:
        raise Crash

    dispatch._record_results = killed  # the crash point: acceptance recorded, outbox not
    try:
        with pytest.raises(Crash):
            dispatch_once(
                p.rig.conn, p.rig.log_conn, p.sender, p.rig.dispatch, lambda: T0 + timedelta(minutes=10)
            )
    finally:
        dispatch._record_results = original
    assert len(p.aliyun.sent_to("13800000002")) == 1
    assert p.rows("SELECT state FROM alert_outbox WHERE phone = '+8613800000002'") == [("pending",)]
    p.run(T0 + timedelta(minutes=11))
    assert len(p.aliyun.sent_to("13800000002")) == 1  # not sent twice
    assert p.rows("SELECT state, sent_channel FROM alert_outbox WHERE phone = '+8613800000002'") == [
        ("sent", "sms@aliyun")
    ]
    assert p.rows(
        "SELECT result FROM delivery_attempt d JOIN alert_outbox o ON o.id = d.outbox_id"
        " WHERE o.phone = '+8613800000002'"
    ) == [("interrupted",)]


def test_send_test_prints_the_provider_answer(tmp_path: Any, capsys: Any) -> None:
    import json

    from lovekey.cli import main as lovekey_main

    with (
        FakeAliyun(
            key_id=ALI_KEY, key_secret=ALI_SECRET, sign_name="爱心钥匙", templates=ALIYUN_TEMPLATES
        ) as aliyun,
        FakeTencent(
            key_id=TC_KEY, key_secret=TC_SECRET, sign_name="爱心钥匙", templates=TENCENT_TEMPLATES
        ) as tencent,
    ):
        providers = provider_settings(aliyun, tencent)
        lines = []
        for name in ("aliyun", "tencent_voice"):
            lines.append(f"[alerts.providers.{name}]")
            for key, value in providers[name].items():
                if isinstance(value, dict):
                    continue
                lines.append(f"{key} = {json.dumps(value)}")
            lines.append(f"[alerts.providers.{name}.templates]")
            lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in providers[name]["templates"].items()]
        config = tmp_path / "lovekey.toml"
        config.write_text("\n".join(lines), encoding="utf-8")

        assert (
            lovekey_main(
                [
                    "--config",
                    str(config),
                    "alerts",
                    "send-test",
                    "--provider",
                    "aliyun",
                    "--to",
                    "+8613800000002",
                ]
            )
            == 0
        )
        answer = json.loads(capsys.readouterr().out)
        (sms,) = aliyun.sent
        assert answer["accepted"] is True
        assert answer["message_id"] == sms.message_id
        assert answer["answer"]["RequestId"].startswith("REQ-")
        assert sms.rendered.startswith("【爱心钥匙】测试用水异常偏少")

        aliyun.codes["13800000009"] = "isv.MOBILE_NUMBER_ILLEGAL"
        assert (
            lovekey_main(
                [
                    "--config",
                    str(config),
                    "alerts",
                    "send-test",
                    "--provider",
                    "aliyun",
                    "--to",
                    "+8613800000009",
                ]
            )
            == 1
        )
        refused = json.loads(capsys.readouterr().out)
        assert (refused["accepted"], refused["code"], refused["action"]) == (
            False,
            "isv.MOBILE_NUMBER_ILLEGAL",
            "give_up",
        )

        assert (
            lovekey_main(
                [
                    "--config",
                    str(config),
                    "alerts",
                    "send-test",
                    "--provider",
                    "tencent_voice",
                    "--to",
                    "+8613800000002",
                    "--voice",
                ]
            )
            == 0
        )
        (call,) = tencent.sent
        assert (
            call.rendered == "(call, read 2x) 爱心钥匙提醒：测试用水异常偏少。我去看看请按1，需要帮助请按2。"
        )


def test_feishu_bot_with_a_signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from lovekey.alerts.channels import AppriseSender, Outgoing
    from lovekey.alerts.feishu import NotifyFeishuSigned
    from lovekey.alerts.providers.standins import FakeFeishu
    from lovekey.errors import DeliveryError

    with FakeFeishu(token="hook-token-1", secret="feishu-signing-secret") as bot:
        monkeypatch.setattr(
            NotifyFeishuSigned, "notify_url", bot.notify_url
        )  # the stand-in, not open.feishu.cn
        sender = AppriseSender()
        sender(
            Outgoing(
                "push:0",
                "feishu://hook-token-1/?secret=feishu-signing-secret",
                "爱心钥匙",
                "王老人用水异常偏少",
            )
        )
        assert bot.texts == ["爱心钥匙\r\n王老人用水异常偏少"]
        with pytest.raises(DeliveryError, match="19021"):
            sender(Outgoing("push:0", "feishu://hook-token-1/?secret=wrong-secret", "t", "b"))
        with pytest.raises(DeliveryError, match="19021"):
            sender(Outgoing("push:0", "feishu://hook-token-1/", "t", "b"))  # unsigned: refused by the bot
        assert bot.refused == ["19021", "19021"]


def test_the_documented_provider_settings_load_and_keep_their_secrets() -> None:
    """docs/alerts.md's example is valid settings, and no secret of it reaches a log line."""
    from pathlib import Path

    from lovekey.config import load_settings

    text = (Path(__file__).parents[1] / "docs" / "alerts.md").read_text(encoding="utf-8")
    start = text.index("### Settings\n\n```toml\n") + len("### Settings\n\n```toml\n")
    import tomllib

    data = tomllib.loads(text[start : text.index("```", start)])
    settings = load_settings(environ={}, alerts=data["alerts"])
    a = settings.alerts
    assert a.sms_providers == ["aliyun", "tencent"]
    assert a.providers["aliyun"].templates["alert.zh"] == "SMS_123456789"
    assert a.role_channels["family/life_safety"] == ["voice", "sms"]
    described = str(settings.describe())
    for provider in a.providers.values():
        assert provider.callback_secret
        assert provider.callback_secret not in described
        assert provider.callback_secret not in repr(provider)


def test_sigkill_of_the_worker_while_the_provider_holds_its_answer(database_url: str) -> None:
    """A real `lovekey alerts worker` is SIGKILLed while the stand-in has accepted messages
    and not yet answered; a new worker finishes the job. Every notification reaches the
    provider; only messages whose request was in flight at the kill can arrive twice (neither
    provider offers an idempotency key) - and for Alibaba Cloud SMS not even those, because the
    new worker asks the provider before resending what a crash cut short."""
    import json
    import time
    from datetime import UTC

    from lovekey.alerts.store import AlertCandidate, raise_alerts
    from lovekey.bench.support.seeding import ContactSpec, seed_resident
    from lovekey.bench.support.worker_process import WorkerProcess

    n = 20
    with (
        FakeAliyun(
            key_id=ALI_KEY, key_secret=ALI_SECRET, sign_name="爱心钥匙", templates=ALIYUN_TEMPLATES
        ) as aliyun,
        FakeTencent(
            key_id=TC_KEY, key_secret=TC_SECRET, sign_name="爱心钥匙", templates=TENCENT_TEMPLATES
        ) as tencent,
        FakeProvider() as unused,
        psycopg_connect(database_url) as conn,
    ):
        conn.execute(
            "TRUNCATE provider_message, provider_callback, delivery_attempt, alert_outbox, alert_history, alert,"
            " contact, community_contact, device, gateway, resident, household, grid, community"
            " RESTART IDENTITY CASCADE"
        )
        for i in range(n):
            seed_resident(
                conn,
                f"K{i}",
                name=f"住户{i}",
                contacts=[ContactSpec("love_key_holder", f"邻居{i}", phone=f"+86139{i:08d}")],
            )
        env = {
            "providers": json.dumps({"aliyun": provider_settings(aliyun, tencent)["aliyun"]}),
            "sms_providers": json.dumps(["aliyun"]),
            "role_channels": json.dumps({"default": ["sms"]}),
            "processes": 1,
            "dispatchers": 2,
            "batch_size": 5,
            "send_threads": 10,
        }
        aliyun.hold_s = 2.0  # accepted, then the answer waits: the kill lands in that window
        first = WorkerProcess(database_url, unused, **env)
        try:
            now = datetime.now(UTC)
            with conn.transaction():
                raise_alerts(
                    conn,
                    [AlertCandidate("low_usage", f"K{i}", f"K{i}", None, None, now, {}) for i in range(n)],
                    now,
                )
            deadline = time.monotonic() + 60
            while len(aliyun.sent) < 5:
                assert time.monotonic() < deadline, "".join(first.lines[-20:])
                time.sleep(0.05)
            first.kill()
        finally:
            first.close()
        # by number (one per resident): several messages may share one batch request
        in_flight = {m.phone for m in aliyun.sent}
        recorded = {r[0][3:] for r in conn.execute("SELECT phone FROM provider_message")}

        aliyun.hold_s = 0.0
        second = WorkerProcess(database_url, unused, **env)
        try:
            deadline = time.monotonic() + 90
            while conn.execute("SELECT count(*) FROM alert_outbox WHERE state = 'sent'").fetchone()[0] < n:
                assert time.monotonic() < deadline, "".join(second.lines[-20:])
                time.sleep(0.1)
            assert second.stop() == 0
        finally:
            second.close()

    counts: dict[str, int] = {}
    for m in aliyun.sent:
        counts[m.phone] = counts.get(m.phone, 0) + 1
    assert len(counts) == n  # every notification reached the provider
    # the kill cut requests the provider had accepted, unrecorded by LoveKey ...
    assert in_flight - recorded
    # ... and none of them went twice: the new worker asked Alibaba Cloud (QuerySendDetails,
    # by OutId) before resending, found them, and recorded them as sent
    assert counts == {ref: 1 for ref in counts}
    found = {
        r[0][3:]
        for r in conn_rows(database_url, "SELECT phone FROM provider_message WHERE message_id LIKE 'out:%%'")
    }
    assert found == in_flight - recorded
    assert aliyun.refused == []


def conn_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg_connect(url) as conn:
        return list(conn.execute(sql).fetchall())


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_a_providers_per_number_limit_sends_the_next_message_through_the_other(
    phones_factory: Callable[..., Phones],
) -> None:
    p = phones_factory(tweak=lambda providers: providers["aliyun"].update(per_number_per_hour=1))
    p.rig.raise_("smoke", "R-1", T0)
    p.run(T0)
    p.rig.raise_("gas", "R-1", T0 + timedelta(minutes=1))
    p.run(T0 + timedelta(minutes=1))
    # the family's first message went through Alibaba Cloud, the second (within the hour) through
    # Tencent Cloud instead of being throttled by Alibaba
    assert len(p.aliyun.sent_to("13800000002")) == 1
    assert len(p.tencent.sent_to("13800000002")) == 1
    assert p.tencent.sent_to("13800000002")[0].rendered.startswith("【爱心钥匙】紧急！王老人燃气泄漏报警")


def test_an_apprise_gateway_as_one_of_the_sms_providers(phones_factory: Callable[..., Phones]) -> None:
    """kind = "apprise": a plain SMS gateway URL template as a provider, here the fallback."""
    p = phones_factory(
        tweak=lambda providers: providers.update(gateway={"kind": "apprise", "url": "PLACEHOLDER"}),
    )
    fake = p.rig.fake
    gateway = p.rig.settings.alerts.providers["gateway"].model_copy(update={"url": fake.sms_template()})
    providers = {**p.rig.settings.alerts.providers, "gateway": gateway}
    settings = p.rig.settings.with_overrides(
        alerts={
            "providers": {k: v.model_dump() for k, v in providers.items()},
            "sms_providers": ["aliyun", "gateway"],
        }
    )
    from lovekey.alerts.dispatch import DispatchContext
    from lovekey.alerts.escalation_pass import EscalationContext

    p.rig.escalation = EscalationContext(p.rig.escalation.chains, settings.alerts, settings.zone)
    p.rig.dispatch = DispatchContext(settings.alerts, settings.zone, TEST_SECRET, "test")
    p.aliyun.down = True
    p.rig.raise_("low_usage", "R-1", T0)
    p.run(T0)
    p.run(T0 + timedelta(minutes=10))
    (sms,) = fake.received("sms/8613800000002")
    assert "王老人" not in sms.message  # the gateway gets LoveKey's own free text, full name
    assert "王秀英" in sms.message
    assert p.rows("SELECT sent_channel FROM alert_outbox WHERE phone = '+8613800000002'") == [
        ("sms@gateway",)
    ]


def test_one_template_due_together_goes_as_one_batch_and_a_bad_number_fails_alone(
    phones_factory: Callable[..., Phones],
) -> None:
    p = phones_factory()
    p.rig.raise_("sos", "R-1", T0)  # everyone at once; family and emergency by SMS in Chinese
    p.run(T0)
    zh = [m for m in p.aliyun.sent if m.template == "SMS_400002"]
    assert len(zh) >= 2
    assert len({m.message_id for m in zh}) == 1  # one SendBatchSms, one BizId
    assert {m.reference for m in zh} == {zh[0].reference}
    assert zh[0].reference.startswith("lkb")
    refs = p.rows("SELECT DISTINCT reference FROM delivery_attempt WHERE channel = 'sms@aliyun'")
    assert (zh[0].reference,) in refs

    # a receipt for one number of the batch lands on that number's notification only
    status, _ = p.aliyun.sms_report(p.callback("aliyun", "sms_report"), zh[0])
    assert status == 200
    assert p.rows("SELECT count(*) FROM provider_message WHERE status = 'delivered'") == [(1,)]

    q = phones_factory()
    q.aliyun.codes["13800000120"] = "isv.MOBILE_NUMBER_ILLEGAL"  # the emergency number
    alert_id = q.rig.raise_("sos", "R-1", T0)
    q.run(T0)
    assert q.aliyun.sent_to("13800000120") == []
    assert len(q.aliyun.sent_to("13800000002")) == 1  # the batch's other number still got it
    failed = [e for e in events(q, alert_id, "delivery_failed") if e["role"] == "emergency"]
    assert [(e["reason"], e["code"]) for e in failed] == [("invalid_number", "isv.MOBILE_NUMBER_ILLEGAL")]


def test_alibaba_sms_one_request_a_message_when_the_operator_says_so(
    phones_factory: Callable[..., Phones],
) -> None:
    """`batch_max = 1`: one SendSms a message, as Alibaba advises for time-sensitive ones."""
    p = phones_factory(lambda providers: providers["aliyun"].update(batch_max=1))
    p.rig.raise_("sos", "R-1", T0)
    p.run(T0)
    zh = [m for m in p.aliyun.sent if m.template == "SMS_400002"]
    assert len(zh) >= 2
    assert len({m.message_id for m in zh}) == len(zh)  # a BizId each: one request each
    assert not any(m.reference.startswith("lkb") for m in zh)
