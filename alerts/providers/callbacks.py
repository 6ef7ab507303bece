"""What providers post back: delivery receipts, SMS replies, call results and key presses,
parsed from the documented bodies into a few small records (pure: bytes in, records out).

Neither provider signs these callbacks (their documentation describes none); the callback
URL configured in the provider's console is the shared secret, and every record must also
match a message LoveKey sent: a receipt or key press names the provider's message id *and*
the number it went to (see `alerts.provider_webhooks`).

Documented bodies:
- Alibaba SMS SmsReport https://help.aliyun.com/document_detail/101867.html (JSON array)
- Alibaba SMS SmsUp https://help.aliyun.com/zh/sms/developer-reference/smsup-http
- Alibaba voice VoiceReport https://help.aliyun.com/zh/vms/voicereport-6 (`dtmf`: the keys)
- Alibaba voice VoiceCallReport https://help.aliyun.com/zh/vms/voicecallreport-6
- Alibaba voice call result codes (VoiceReport `status_code`)
  https://help.aliyun.com/document_detail/55085.html
- Tencent SMS status https://cloud.tencent.com/document/api/382/5807 (JSON array)
- Tencent SMS reply https://cloud.tencent.com/document/api/382/5809 (one object)
- Tencent voice status / key press https://cloud.tencent.com/document/api/382/5816 and
  https://cloud.tencent.com/document/product/1128/51535 (`voiceprompt_callback`,
  `voicekey_callback`) and https://cloud.tencent.com/document/product/1128/51536
  (`voice_failure_callback`)

A call's report says whether the resident picked up: Alibaba's `status_code` (200000 the
whole message heard, 200001 hung up before its end, 200008 picked up but no key before the
timeout: all three reached the resident; 200002 busy, 200003 rang but not answered, 200004
bad number, 200005 could not be connected or rejected, 200007 out of coverage, 200010
switched off, 200011 suspended, and any other code: not reached), Tencent's
`voiceprompt_callback.result` (0 answered; 1 not answered; 2 call failed) and every
`voice_failure_callback`. The check-in counts a call reported `unanswered` as not having
reached the phone (`alerts.check_in.close_unanswered`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# what each provider's callback endpoint must answer for the push to count as received
ALIYUN_OK: dict[str, Any] = {"code": 0, "msg": "接收成功"}
TENCENT_OK: dict[str, Any] = {"result": 0, "errmsg": "OK"}

TOPICS: dict[str, tuple[str, ...]] = {
    "aliyun": ("sms_report", "sms_up", "voice_report", "voice_call_report"),
    "tencent": ("sms_status", "sms_reply", "voice"),
}


# Alibaba's call result codes for a call the resident picked up (the module docstring lists
# the others); every other code is a call that did not reach them
ALIYUN_PICKED_UP = frozenset({"200000", "200001", "200008"})
# Tencent's voiceprompt_callback.result for a call the resident picked up
TENCENT_PICKED_UP = "0"


class CallbackFormatError(ValueError):
    """The body is not the documented shape."""


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: str
    phone: str  # as the provider wrote it (digits, maybe without the country code)
    status: str  # delivered | failed (SMS); answered | unanswered (a call: picked up or not)
    reason: str
    reference: str = ""  # our id echoed back (Alibaba's out_id), when the provider sends it


@dataclass(frozen=True, slots=True)
class Reply:
    phone: str
    text: str


@dataclass(frozen=True, slots=True)
class KeyPress:
    message_id: str  # the call's id
    phone: str
    key: str


Record = Receipt | Reply | KeyPress


def family(kind: str) -> str:
    """'aliyun_sms' -> 'aliyun'."""
    return kind.partition("_")[0]


def parse(provider_family: str, topic: str, body: bytes) -> list[Record]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise CallbackFormatError("not JSON") from exc
    try:
        if provider_family == "aliyun":
            return _aliyun(topic, data)
        if provider_family == "tencent":
            return _tencent(topic, data)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CallbackFormatError(f"{topic}: missing or wrong field {exc}") from exc
    raise CallbackFormatError(f"unknown provider {provider_family!r}")


def _items(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise CallbackFormatError("expected a JSON array of objects")
    return data


def _aliyun(topic: str, data: Any) -> list[Record]:
    out: list[Record] = []
    if topic == "sms_report":
        for i in _items(data):
            status = "delivered" if i["success"] in (True, "true") else "failed"
            out.append(
                Receipt(
                    str(i["biz_id"]),
                    str(i["phone_number"]),
                    status,
                    f"{i['err_code']} {i.get('err_msg', '')}".strip(),
                )
            )
    elif topic == "sms_up":
        out += [Reply(str(i["phone_number"]), str(i["content"])) for i in _items(data)]
    elif topic == "voice_report":
        for i in _items(data):
            answered = str(i["status_code"]) in ALIYUN_PICKED_UP
            out.append(
                Receipt(
                    str(i["call_id"]),
                    str(i["callee"]),
                    "answered" if answered else "unanswered",
                    f"{i['status_code']} {i.get('status_msg', '')}".strip(),
                )
            )
            if i.get("dtmf"):
                out.append(KeyPress(str(i["call_id"]), str(i["callee"]), str(i["dtmf"])[:1]))
    elif topic == "voice_call_report":
        # intermediate states; the callee's number is not in it, so no key is taken from here
        # (the VoiceReport at the call's end carries both the number and the key)
        _items(data)
    else:
        raise CallbackFormatError(f"unknown topic {topic!r}")
    return out


def _tencent_phone(i: dict[str, Any]) -> str:
    return f"+{i['nationcode']}{i['mobile']}"


def _tencent(topic: str, data: Any) -> list[Record]:
    out: list[Record] = []
    if topic == "sms_status":
        for i in _items(data):
            status = "delivered" if i["report_status"] == "SUCCESS" else "failed"
            out.append(
                Receipt(
                    str(i["sid"]),
                    _tencent_phone(i),
                    status,
                    f"{i['errmsg']} {i.get('description', '')}".strip(),
                )
            )
    elif topic == "sms_reply":
        if not isinstance(data, dict):
            raise CallbackFormatError("expected a JSON object")
        out.append(Reply(_tencent_phone(data), str(data["text"])))
    elif topic == "voice":
        if not isinstance(data, dict):
            raise CallbackFormatError("expected a JSON object")
        if "voicekey_callback" in data:
            i = data["voicekey_callback"]
            out.append(KeyPress(str(i["callid"]), _tencent_phone(i), str(i["keypress"])[:1]))
        elif "voiceprompt_callback" in data:
            i = data["voiceprompt_callback"]
            status = "answered" if str(i["result"]) == TENCENT_PICKED_UP else "unanswered"
            out.append(Receipt(str(i["callid"]), _tencent_phone(i), status, f"result {i['result']}"))
        elif "voice_failure_callback" in data:
            i = data["voice_failure_callback"]
            reason = f"{i.get('failure_code', '')} {i.get('failure_reason', '')}".strip()
            out.append(Receipt(str(i["callid"]), _tencent_phone(i), "unanswered", reason))
        else:
            raise CallbackFormatError("no voice*_callback object")
    else:
        raise CallbackFormatError(f"unknown topic {topic!r}")
    return out


def same_number(stored_e164: str, reported: str, default_country_code: str = "86") -> bool:
    """Whether a number a provider reported (with or without country code) is the one stored."""
    digits = "".join(c for c in reported if c.isdigit())
    stored = stored_e164.lstrip("+")
    return bool(digits) and (digits == stored or f"{default_country_code}{digits.lstrip('0')}" == stored)
