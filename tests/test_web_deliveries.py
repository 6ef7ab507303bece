"""The console's alert page and overview say what the SMS and voice providers said: each
notification's provider, message id, receipt (delivered, failed with the provider's reason),
a key pressed in a call and what it meant, the check-in's attempts and the resident's answer,
and the operator's errors - on real PostgreSQL, with the console served by uvicorn, messages
sent by the real escalation and dispatcher through the official SDKs to the local stand-ins
(lovekey.alerts.providers.standins), and the receipts and key presses posted back by the
stand-ins to the console's own provider callback URL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from markupsafe import escape

from lovekey.alerts.channels import ChannelSender
from lovekey.alerts.dispatch import dispatch_once
from lovekey.alerts.escalation_pass import escalate_once
from lovekey.alerts.providers.standins import FakeAliyun, FakeTencent, SentMessage
from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.bench.support.served_console import FakeClock, served_console
from lovekey.config import Settings
from lovekey.web.notifications import Reason, history_entry, key_meaning, shape, split_reason
from lovekey.web.users import add_user
from tests.fix_alerts import TEST_SECRET, DeliveryRig, at_local, delivery_rig
from tests.fix_web import PASSWORD, sign_in

T0 = at_local("2025-03-01 09:00")  # daytime: the check-in stage runs
SECRET = "callback-secret-0123456789"
ALI_KEY, ALI_SECRET = "LTAI5tExampleKeyId", "alibaba-access-key-secret"
TC_KEY, TC_SECRET = "AKIDexampleSecretId", "tencent-secret-key"
RESIDENT_PHONE = "+8613700000001"
HOSTILE = "<script>alert('receipt')</script>"
EN = {"Accept-Language": "en"}

# the wording an operator registers (docs/alerts.md): ${var} for Alibaba, {n} for Tencent
ALIYUN_TEMPLATES = {
    "SMS_400002": "紧急！${name}${what}（${since}起），请立即前往：https://lk.example/a/${link}",
    "SMS_600001": "${name}您好，社区问候您：一切都好吗？平安请回复1，需要帮助请回复2。https://lk.example/a/${link}",
}
TENCENT_TEMPLATES = {
    "2002": "紧急！{1}{2}（{3}起），请立即前往：https://lk.example/a/{4}",
    "2008": "URGENT LoveKey: {1} {2} since {3}: https://lk.example/a/{4}",
    "3001": "爱心钥匙提醒：{1}{2}。我去看看请按1，需要帮助请按2。",
    "4002": "{1}您好，这里是社区爱心钥匙。您一切都好吗？平安请按1，需要帮助请按2。",
}


def _providers(aliyun: FakeAliyun, tencent: FakeTencent) -> dict[str, Any]:
    ali = {"access_key_id": ALI_KEY, "access_key_secret": ALI_SECRET, "endpoint": aliyun.endpoint}
    tc = {"access_key_id": TC_KEY, "access_key_secret": TC_SECRET, "endpoint": tencent.endpoint}
    return {
        # no English urgent template at Alibaba: an operator error for the English speaker
        "aliyun": {
            "kind": "aliyun_sms",
            **ali,
            "sign_name": "爱心钥匙",
            "callback_secret": SECRET,
            "templates": {"urgent.zh": "SMS_400002", "check_in.zh": "SMS_600001"},
        },
        "tencent": {
            "kind": "tencent_sms",
            **tc,
            "sign_name": "爱心钥匙",
            "app_id": "1400000001",
            "callback_secret": SECRET,
            "templates": {"urgent.zh": "2002", "urgent.en": "2008"},
        },
        "tencent_voice": {
            "kind": "tencent_voice",
            **tc,
            "app_id": "1400000002",
            "callback_secret": SECRET,
            "templates": {"call.zh": "3001", "check_in_call.zh": "4002"},
        },
    }


@dataclass
class Rig:
    rig: DeliveryRig
    aliyun: FakeAliyun
    tencent: FakeTencent
    sender: ChannelSender
    console: httpx.Client  # signed in as staff of community C-1
    stranger: httpx.Client  # signed in as staff of community C-2
    admin: httpx.Client
    clock: FakeClock
    base_url: str

    def run(self, now: Any) -> None:
        """One escalation pass, then dispatch until nothing more is due at `now`."""
        self.clock.set(now)
        escalate_once(self.rig.conn, self.rig.escalation, now)
        while dispatch_once(
            self.rig.conn, self.rig.log_conn, self.sender, self.rig.dispatch, lambda: now
        ).claimed:
            pass

    def callback(self, provider: str, topic: str) -> str:
        return f"{self.base_url}/alerts/providers/{provider}/{SECRET}/{topic}"

    def raise_(self, kind: str, tier: str = "neighbour") -> int:
        with self.rig.conn.transaction():
            result = raise_alerts(
                self.rig.conn,
                [AlertCandidate(kind, "R-1", "R-1", None, None, T0 - timedelta(hours=5), tier=tier)],
                T0,
            )
        return result.opened[0]


def _staff(rig: DeliveryRig) -> None:
    """Staff of each community and an admin (kept across the module's tests)."""
    for name, role, communities in (
        ("cs_1", "community_staff", ["C-1"]),
        ("cs_2", "community_staff", ["C-2"]),
        ("root", "admin", []),
    ):
        if rig.conn.execute("SELECT 1 FROM staff_user WHERE username = %s", (name,)).fetchone() is None:
            with rig.conn.transaction():
                add_user(rig.conn, name, role=role, password=PASSWORD, community_ids=communities, now=T0)


@pytest.fixture
def rig_factory(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[[], Rig]]:
    with ExitStack() as stack:

        def build() -> Rig:
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
            settings = make_settings(
                database_url=database_url,
                web={"insecure_cookies": True},
                alerts={
                    "public_base_url": "https://lk.example",
                    "ack_secret": TEST_SECRET.decode(),
                    "providers": _providers(aliyun, tencent),
                    "sms_providers": ["aliyun", "tencent"],
                    "voice_providers": ["tencent_voice"],
                    # the family is called; the grid worker gets a text before the app
                    "role_channels": {
                        "default": ["push", "sms"],
                        "family": ["voice", "sms"],
                        "grid_worker": ["sms", "push"],
                    },
                },
            )
            rig = stack.enter_context(delivery_rig(database_url, settings, fake))
            rig.conn.execute("UPDATE resident SET phone = %s WHERE id = 'R-1'", (RESIDENT_PHONE,))
            # a resident of another community, with an alert of their own
            seed_resident(
                rig.conn,
                "R-2",
                name="赵大爷",
                community_id="C-2",
                contacts=[ContactSpec("family", "赵小", phone="+8613900000010")],
            )
            _staff(rig)
            clock = FakeClock(T0)
            served = stack.enter_context(served_console(settings, rig.conn.info.dsn, clock))
            clients = []
            for name in ("cs_1", "cs_2", "root"):
                client = stack.enter_context(httpx.Client(base_url=served.base_url, timeout=30))
                sign_in(client, name, PASSWORD)
                clients.append(client)
            sender = ChannelSender(providers=dict(settings.alerts.providers))
            stack.callback(sender.close)
            return Rig(rig, aliyun, tencent, sender, *clients, clock, served.base_url)

        yield build


def _only(messages: list[SentMessage]) -> SentMessage:
    assert len(messages) == 1, messages
    return messages[0]


def _row(page: str, outbox_id: int) -> str:
    """The table row of one notification on the alert page."""
    start = page.index(f'data-outbox-id="{outbox_id}"')
    return page[start : page.index("</tr>", start)]


def test_the_alert_page_shows_receipts_keys_refusals_and_operator_errors(
    rig_factory: Callable[[], Rig],
) -> None:
    r = rig_factory()
    r.aliyun.codes["13800000120"] = "isv.MOBILE_NUMBER_ILLEGAL"  # the emergency number
    alert_id = r.raise_("smoke")  # life safety: everyone at once
    r.run(T0)
    outbox = dict(
        r.rig.conn.execute("SELECT role, id FROM alert_outbox WHERE alert_id = %s", (alert_id,)).fetchall()
    )
    call = _only(r.tencent.sent_to("13800000002"))  # the family, called
    grid_sms = _only(r.aliyun.sent_to("13800000003"))
    staff_sms = _only(r.tencent.sent_to("13800000004"))  # English: no template at Alibaba
    assert (call.kind, grid_sms.kind, staff_sms.kind) == ("voice", "sms", "sms")
    assert r.aliyun.sent_to("13800000120") == []  # the emergency number comes next

    # the receipts and the key come back through the console's own callback URL
    r.clock.set(T0 + timedelta(minutes=2))
    assert r.tencent.sms_status(r.callback("tencent", "sms_status"), staff_sms)[0] == 200
    assert (
        r.aliyun.sms_report(r.callback("aliyun", "sms_report"), grid_sms, success=False, code=HOSTILE)[0]
        == 200
    )
    r.run(T0 + timedelta(minutes=3))  # nobody acknowledged: the emergency number, refused
    assert r.aliyun.sent_to("13800000120") == []
    outbox = dict(
        r.rig.conn.execute("SELECT role, id FROM alert_outbox WHERE alert_id = %s", (alert_id,)).fetchall()
    )
    r.clock.set(T0 + timedelta(minutes=4))
    assert r.tencent.call_status(r.callback("tencent_voice", "voice"), call)[0] == 200
    assert r.tencent.key_press(r.callback("tencent_voice", "voice"), call, "1")[0] == 200

    page_response = r.console.get(f"/queue/{alert_id}", headers=EN)
    assert page_response.status_code == 200
    page = page_response.text
    # the provider's hostile text is shown as text, never as markup
    assert HOSTILE not in page
    assert str(escape(HOSTILE)) in page
    assert "<script" not in page.lower().replace('<script src="/static/console.js" defer></script>', "")
    assert "'unsafe-inline'" not in page_response.headers["content-security-policy"]

    # the operator's error stands out at the top, and on the attempt that met it
    banner = page[
        page.index('id="operator-errors"') : page.index("</section>", page.index('id="operator-errors"'))
    ]
    assert "Provider settings need fixing" in banner
    assert "sms@aliyun" in banner
    assert "lovekey.NO_TEMPLATE" in banner
    assert "urgent.en" in banner

    family = _row(page, outbox["family"])
    assert "Voice call" in family
    assert "tencent_voice" in family
    assert call.message_id in family
    assert "call answered" in family
    assert "pressed 1: I&#39;m going" in family
    assert "+861********02" in family  # masked as in the logs
    assert "13800000002" not in page

    staff = _row(page, outbox["community_staff"])
    assert "delivered" in staff
    assert "receipt" in staff
    assert "2025-03-01 09:02" in staff
    assert "tencent" in staff
    assert staff_sms.message_id in staff
    assert 'class="attempt failed operator"' in staff  # Alibaba's refusal, then Tencent sent it

    grid = _row(page, outbox["grid_worker"])
    assert "failed" in grid
    assert grid_sms.message_id in grid
    assert str(escape(HOSTILE)) in grid

    emergency = _row(page, outbox["emergency"])
    assert ">failed<" in emergency
    assert '<code class="reason-code">isv.MOBILE_NUMBER_ILLEGAL</code>' in emergency

    # the history says what each entry means, with no number in it
    assert "delivery_receipt" in page
    assert "key_pressed" in page
    assert "meaning: I&#39;m going" in page
    assert "code: </span>" not in page  # a receipt without a code says no empty one

    # the same through the API
    detail = r.console.get(f"/api/alerts/{alert_id}").json()
    by_role = {n["role"]: n for n in detail["deliveries"]}
    assert (by_role["family"]["status"], by_role["family"]["key"], by_role["family"]["key_meaning"]) == (
        "answered",
        "1",
        "going",
    )
    assert (by_role["emergency"]["status"], by_role["emergency"]["reason_code"]) == (
        "failed",
        "isv.MOBILE_NUMBER_ILLEGAL",
    )
    assert (by_role["community_staff"]["status"], by_role["community_staff"]["provider"]) == (
        "delivered",
        "tencent",
    )
    assert by_role["grid_worker"]["reason_text"].startswith(HOSTILE)
    assert all("+86138" not in str(n["phone"]) for n in detail["deliveries"])
    assert [e["code"] for e in detail["operator_errors"]] == ["lovekey.NO_TEMPLATE"]

    # the overview, without opening the alert: the error, and the alert marked
    queue = r.console.get("/queue", headers=EN).text
    assert "Provider settings need fixing (last 24 hours)" in queue
    assert "lovekey.NO_TEMPLATE" in queue
    assert f'href="/queue/{alert_id}"' in queue
    assert "provider settings error" in queue
    assert "2 message(s) not delivered" in queue  # the refused number, the failed receipt
    (error,) = r.admin.get("/api/provider-errors").json()["provider_errors"]
    assert (error["channel"], error["code"], error["alerts"], error["alert_ids"]) == (
        "sms@aliyun",
        "lovekey.NO_TEMPLATE",
        1,
        [alert_id],
    )

    # staff of another community see none of it
    assert r.stranger.get(f"/queue/{alert_id}", headers=EN).status_code == 404
    assert r.stranger.get(f"/api/alerts/{alert_id}").status_code == 404
    other_queue = r.stranger.get("/queue", headers=EN).text
    assert "Provider settings need fixing" not in other_queue
    assert "NO_TEMPLATE" not in other_queue
    assert r.stranger.get("/api/provider-errors").json()["provider_errors"] == []


def test_the_alert_page_shows_each_check_in_attempt_and_the_answer(rig_factory: Callable[[], Rig]) -> None:
    r = rig_factory()
    alert_id = r.raise_("low_usage", tier="check_in")
    r.run(T0)
    first = _only(r.tencent.sent_to("13700000001"))
    assert first.kind == "voice"
    r.clock.set(T0 + timedelta(minutes=1))
    assert r.tencent.call_status(r.callback("tencent_voice", "voice"), first, answered=False)[0] == 200
    r.run(T0 + timedelta(minutes=10))  # nobody answered: the resident is called again
    second = r.tencent.sent_to("13700000001")[-1]
    assert second.message_id != first.message_id

    page = r.console.get(f"/queue/{alert_id}", headers=EN).text
    section = page[
        page.index('id="check-in-stage"') : page.index("</section>", page.index('id="check-in-stage"'))
    ]
    assert "no answer yet" in section
    assert first.message_id in section
    assert second.message_id in section
    assert "call not answered" in section
    chinese = r.console.get(f"/queue/{alert_id}", headers={"Accept-Language": "zh-CN"}).text
    assert "电话未接听" in chinese
    assert "问询：先询问老人本人" in chinese
    assert "Resident (check-in)" in section
    assert "+861********01" in section
    assert "13700000001" not in page

    r.clock.set(T0 + timedelta(minutes=11))
    assert r.tencent.key_press(r.callback("tencent_voice", "voice"), second, "1")[0] == 200
    page = r.console.get(f"/queue/{alert_id}", headers=EN).text
    section = page[
        page.index('id="check-in-stage"') : page.index("</section>", page.index('id="check-in-stage"'))
    ]
    assert "answered: fine" in section
    assert "voice@tencent_voice" in section
    assert "pressed 1: I&#39;m fine" in section
    assert "Resident is fine" in page  # the alert closed as resident_ok
    assert "check_in_answered" in page
    assert "answer: fine" in page

    assert r.stranger.get(f"/queue/{alert_id}").status_code == 404


# --- the shaping alone (web/notifications.py), no server ---------------------------------


@pytest.mark.parametrize(
    ("reason", "code", "text"),
    [
        ("isv.MOBILE_NUMBER_ILLEGAL: 非法手机号", "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"),
        (
            "InvalidParameterValue.IncorrectPhoneNumber: the phone number is incorrect",
            "InvalidParameterValue.IncorrectPhoneNumber",
            "the phone number is incorrect",
        ),
        ("DELIVERED 用户接收成功", "DELIVERED", "用户接收成功"),
        ("isv.MOBILE_NUMBER_ILLEGAL: isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_NUMBER_ILLEGAL", ""),
        ("MK:0001 失败", "MK:0001", "失败"),
        ("200005 执行完成", "200005", "执行完成"),
        ("result 1", "", "result 1"),  # a word is text, not a code
        (f"{HOSTILE} 失败", "", f"{HOSTILE} 失败"),
        (None, "", ""),
    ],
)
def test_a_providers_reason_is_split_into_code_and_text(reason: str | None, code: str, text: str) -> None:
    assert split_reason(reason) == Reason(code, text)


def test_a_reason_is_clipped() -> None:
    assert len(split_reason("x" * 5000).text) == 300


@pytest.mark.parametrize(
    ("role", "key", "meaning"),
    [
        ("resident", "1", "fine"),
        ("resident", "2", "need_help"),
        ("family", "1", "going"),
        ("love_key_holder", "2", "need_help"),
        ("family", "9", "not_a_choice"),
    ],
)
def test_what_a_key_means_depends_on_who_pressed_it(role: str, key: str, meaning: str) -> None:
    assert key_meaning(role, key) == meaning


def test_the_history_shows_no_recipient_number() -> None:
    entry = history_entry(
        {
            "at": T0,
            "event": "delivery_failed",
            "actor": "worker",
            "detail": {
                "recipient": "tel:+8613800000120",
                "role": "emergency",
                "reason": "invalid_number",
                "code": "isv.MOBILE_NUMBER_ILLEGAL",
            },
        }
    )
    assert entry["facts"] == {
        "role": "emergency",
        "reason": "invalid_number",
        "code": "isv.MOBILE_NUMBER_ILLEGAL",
    }
    assert "13800000120" not in str(entry)


def test_a_notification_waiting_for_a_retry_is_queued_with_the_last_refusal() -> None:
    row = {
        "id": 7,
        "role": "family",
        "phone": "+8613800000002",
        "state": "pending",
        "channels": ["sms"],
        "attempts": [
            {"channel": "sms@aliyun", "result": "failed", "error": "isv.BUSINESS_LIMIT_CONTROL: 触发流控"}
        ],
        "messages": [],
    }
    shaped = shape(row)
    assert (shaped["status"], shaped["reason_code"], shaped["provider"]) == (
        "queued",
        "isv.BUSINESS_LIMIT_CONTROL",
        "aliyun",
    )
    assert shaped["phone"] == "+861********02"
    assert "+8613800000002" not in str(shaped)
