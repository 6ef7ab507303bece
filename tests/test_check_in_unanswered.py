"""A check-in call nobody picks up did not reach the resident (issue 14): the providers' call
reports (Alibaba Cloud's VoiceReport `status_code`, Tencent Cloud's `voiceprompt_callback`
result and `voice_failure_callback`) say so, and a stage in which no call was picked up and no
text reached the phone ends `unreachable`, not `none`; a delivered text with no reply still
reached the phone. The detectors read who can be asked again when a check-in is settled, so a
resident found unreachable takes the neighbour tier's timing from the next sweep on, and is
asked again once `UNREACHABLE_RETRY` has passed."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from lovekey.alerts.providers.callbacks import Receipt, parse
from lovekey.detectors.service import DetectorService
from lovekey.detectors.store import UNREACHABLE_RETRY
from tests.test_alert_check_in_phones import (  # noqa: F401 - the fixture, with its rig
    RESIDENT_MOBILE,
    T0,
    Rig,
    rig_factory,
)
from tests.test_detect_db import T, add_resident, conn, make_settings_for  # noqa: F401

# a resident's own chain with calls only (no text), as an operator can set per resident
CALLS_ONLY = {
    "escalation": {
        "low_usage": {
            "check_in": [
                {"notify": ["resident"], "wait_min": 10, "channels": ["voice"]},
                {"notify": ["resident"], "wait_min": 10, "channels": ["voice"]},
            ]
        }
    }
}


def _stage(r: Rig, alert_id: int, minutes: tuple[int, ...]) -> None:
    for m in minutes:
        r.run(T0 + timedelta(minutes=m))


def test_alibaba_calls_not_picked_up_and_a_failed_text_end_the_check_in_unreachable(
    rig_factory: Callable[..., Rig],  # noqa: F811
) -> None:
    r = rig_factory(sms_providers=["aliyun"], voice_providers=["aliyun_voice"])
    alert_id = r.check_in(T0)
    for minutes in (0, 10, 20):
        r.run(T0 + timedelta(minutes=minutes))
        for message in r.aliyun.sent[-1:]:
            if message.kind == "voice":  # nobody picks up: 200005
                status, _ = r.aliyun.voice_report(
                    r.callback("aliyun_voice", "voice_report"), message, answered=False
                )
            else:  # the phone is off for good: the text is never delivered
                status, _ = r.aliyun.sms_report(
                    r.callback("aliyun", "sms_report"), message, success=False, code="MK:0001"
                )
            assert status == 200
    assert [m.kind for m in r.aliyun.sent] == ["voice", "voice", "sms"]
    statuses = [s for (s,) in r.rig.conn.execute("SELECT status FROM provider_message ORDER BY id")]
    assert statuses == ["unanswered", "unanswered", "failed"]
    r.run(T0 + timedelta(minutes=30))
    assert r.answer(alert_id) == ("unreachable", None)
    assert [m.path for m in r.rig.fake.received()] == ["/push/lkh"]  # the neighbour, as before


def test_a_delivered_text_with_no_reply_reached_the_phone(rig_factory: Callable[..., Rig]) -> None:  # noqa: F811
    r = rig_factory(sms_providers=["aliyun"], voice_providers=["aliyun_voice"])
    alert_id = r.check_in(T0)
    for minutes in (0, 10, 20):
        r.run(T0 + timedelta(minutes=minutes))
        message = r.aliyun.sent[-1]
        if message.kind == "voice":
            r.aliyun.voice_report(r.callback("aliyun_voice", "voice_report"), message, answered=False)
        else:
            r.aliyun.sms_report(r.callback("aliyun", "sms_report"), message)
    r.run(T0 + timedelta(minutes=30))
    assert r.answer(alert_id) == ("none", None)


def test_tencent_calls_not_picked_up_end_a_calls_only_check_in_unreachable(
    rig_factory: Callable[..., Rig],  # noqa: F811
) -> None:
    r = rig_factory(sms_providers=["tencent"], voice_providers=["tencent_voice"])
    r.rig.conn.execute("UPDATE resident SET rules = %s WHERE id = 'R-1'", (json.dumps(CALLS_ONLY),))
    r.rig.conn.commit()
    alert_id = r.check_in(T0)
    for minutes in (0, 10):
        r.run(T0 + timedelta(minutes=minutes))
        assert (
            r.tencent.call_status(r.callback("tencent_voice", "voice"), r.tencent.sent[-1], answered=False)[0]
            == 200
        )
    assert [m.kind for m in r.tencent.sent] == ["voice", "voice"]
    r.run(T0 + timedelta(minutes=20))
    assert r.answer(alert_id) == ("unreachable", None)
    assert [m.path for m in r.rig.fake.received()] == ["/push/lkh"]


def test_a_tencent_call_picked_up_without_a_key_reached_the_phone(
    rig_factory: Callable[..., Rig],  # noqa: F811
) -> None:
    r = rig_factory(sms_providers=["tencent"], voice_providers=["tencent_voice"])
    r.rig.conn.execute("UPDATE resident SET rules = %s WHERE id = 'R-1'", (json.dumps(CALLS_ONLY),))
    r.rig.conn.commit()
    alert_id = r.check_in(T0)
    r.run(T0)
    r.tencent.call_status(r.callback("tencent_voice", "voice"), r.tencent.sent[-1], answered=True)
    r.run(T0 + timedelta(minutes=10))
    r.tencent.call_status(r.callback("tencent_voice", "voice"), r.tencent.sent[-1], answered=False)
    r.run(T0 + timedelta(minutes=20))
    assert r.answer(alert_id) == ("none", None)


def _aliyun_report(code: str, *, start_time: str = "", b_start_time: str = "") -> list[dict[str, Any]]:
    """A VoiceReport body as documented (https://help.aliyun.com/zh/vms/developer-reference/voicereport-1)."""
    return [
        {
            "call_id": "116012354^1000000",
            "start_time": start_time,
            "end_time": "",
            "duration": "0",
            "status_code": code,
            "status_msg": "",
            "out_id": "",
            "caller": "057100000000",
            "callee": RESIDENT_MOBILE,
            "b_start_time": b_start_time,
            "dtmf": "",
        }
    ]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("200000", "answered"),  # heard the whole message
        ("200001", "answered"),  # hung up before its end
        ("200008", "answered"),  # picked up, pressed no key before the timeout
        ("200002", "unanswered"),  # busy
        ("200003", "unanswered"),  # rang, nobody picked up
        ("200005", "unanswered"),  # could not be connected, or rejected
        ("200010", "unanswered"),  # switched off
    ],
)
def test_alibaba_voice_report_status_codes_say_whether_the_call_was_picked_up(code: str, status: str) -> None:
    # b_start_time is the second leg's start (two-party calls): it says nothing of a single call
    body = json.dumps(_aliyun_report(code, b_start_time="2025-03-01 09:00:05")).encode()
    [receipt] = parse("aliyun", "voice_report", body)
    assert isinstance(receipt, Receipt)
    assert receipt.status == status
    assert receipt.reason.startswith(code)


def test_tencent_voice_failure_callback_by_its_documented_name_is_a_call_not_picked_up() -> None:
    body = {
        "voice_failure_callback": {
            "call_from": "075583763333",
            "callid": "xxxxxx",
            "failure_code": 5,
            "failure_reason": "无人接听",
            "mobile": "13700000001",
            "nationcode": "86",
        }
    }
    [receipt] = parse("tencent", "voice", json.dumps(body).encode())
    assert isinstance(receipt, Receipt)
    assert (receipt.message_id, receipt.phone, receipt.status) == ("xxxxxx", "+8613700000001", "unanswered")
    assert receipt.reason == "5 无人接听"


def _settle(db: psycopg.Connection[Any], rid: str, at: Any, answer: str) -> None:
    alert_id = db.execute(
        "INSERT INTO alert (kind, subject, resident_id, since, opened_at, last_triggered_at,"
        " escalation_due_at, tier) VALUES ('low_usage', %s, %s, %s, %s, %s, %s, 'check_in') RETURNING id",
        (f"{rid}-{at.isoformat()}", rid, at, at, at, at),
    ).fetchone()
    assert alert_id is not None
    db.execute(
        "INSERT INTO check_in_answer (alert_id, resident_id, kind, asked_at, answered_at, answer,"
        " dry_minutes, part_of_day) VALUES (%s, %s, 'low_usage', %s, %s, %s, 300, 'morning')",
        (alert_id[0], rid, at, at + timedelta(minutes=30), answer),
    )
    db.commit()


def test_the_detectors_read_who_can_be_asked_again_when_a_check_in_ends_unreachable(
    conn: psycopg.Connection[Any],  # noqa: F811
) -> None:
    add_resident(conn, "R-1", phone="+8613800000001")
    add_resident(conn, "R-2", phone="+8613800000002")
    service = DetectorService(make_settings_for(conn))
    service.start(conn, T)
    det = service.detector
    assert det is not None
    assert det.registry.askable is not None

    def askable() -> dict[str, bool]:
        assert det.registry.askable is not None
        return dict(zip(det.registry.resident_ids, det.registry.askable.tolist(), strict=True))

    assert askable() == {"R-1": True, "R-2": True}
    # R-2's check-in ends unreachable while the detector runs: the very next sweep knows
    _settle(conn, "R-2", T, "unreachable")
    service.sweep(conn, T + timedelta(minutes=35))
    conn.commit()
    assert askable() == {"R-1": True, "R-2": False}
    # an answer 'none' (the text reached the phone) does not count against R-1
    _settle(conn, "R-1", T + timedelta(hours=1), "none")
    service.sweep(conn, T + timedelta(hours=1, minutes=35))
    conn.commit()
    assert askable() == {"R-1": True, "R-2": False}
    # after the retry period, R-2 is asked again at their next alert
    later = T + UNREACHABLE_RETRY + timedelta(hours=1)
    service.sweep(conn, later)
    conn.commit()
    assert askable() == {"R-1": True, "R-2": True}
    # and found unreachable again, goes back to the neighbour tier's timing
    _settle(conn, "R-2", later, "unreachable")
    service.sweep(conn, later + timedelta(minutes=35))
    conn.commit()
    assert askable() == {"R-1": True, "R-2": False}
