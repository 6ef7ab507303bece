"""Message texts in Chinese and English, and fitting an SMS into one segment.

Pure: facts in, `Message` out. An SMS is one segment when it holds at most 160 GSM-7
characters, or 70 UCS-2 code units as soon as it has one character outside GSM-7 (any Chinese
text). Each message has variants from the most to the least detailed; for SMS the first
variant that fits one segment is used, and the shortest when none does (it is then sent in
several segments: the link is never dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

SMS_GSM7_MAX = 160  # characters in one GSM-7 segment
SMS_UCS2_MAX = 70  # UTF-16 code units in one UCS-2 segment

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

WHAT = {
    "zh": {
        "low_usage": "用水异常偏少",
        "routine_break": "用水规律异常",
        "running_tap": "长时间持续用水",
        "leak": "疑似漏水",
        "smoke": "烟雾报警",
        "gas": "燃气泄漏报警",
        "sos": "紧急呼叫",
        "meter_silent": "水表无数据",
        "gateway_offline": "网关离线",
    },
    "en": {
        "low_usage": "low water use",
        "routine_break": "unusual water routine",
        "running_tap": "water running for a long time",
        "leak": "possible leak",
        "smoke": "SMOKE alarm",
        "gas": "GAS alarm",
        "sos": "SOS button pressed",
        "meter_silent": "meter not reporting",
        "gateway_offline": "gateway offline",
    },
}
OUTCOME_TEXT = {
    "zh": {
        "resident_ok": "老人平安",
        "needed_help": "已协助",
        "hospital": "已送医",
        "away": "老人外出",
        "false_data": "数据误报",
        "other": "已处理",
        "auto_cleared": "已恢复正常",
    },
    "en": {
        "resident_ok": "resident is fine",
        "needed_help": "resident was helped",
        "hospital": "taken to hospital",
        "away": "resident is away",
        "false_data": "false reading",
        "other": "handled",
        "auto_cleared": "back to normal",
    },
}


@dataclass(frozen=True, slots=True)
class AlertFacts:
    alert_id: int
    kind: str
    name: str  # the resident's name, or the device/gateway id for device faults
    address: str
    since: datetime
    urgent: bool = False
    outcome: str | None = None
    help_by: str | None = None  # someone on site pressed "needs help"


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str


def sms_segment_limit(text: str) -> tuple[str, int, int]:
    """(encoding, length in that encoding's units, one-segment limit)."""
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in text):
        return "gsm7", sum(2 if c in _GSM7_EXTENDED else 1 for c in text), SMS_GSM7_MAX
    return "ucs2", len(text.encode("utf-16-le")) // 2, SMS_UCS2_MAX


def fits_one_sms(text: str) -> bool:
    _, length, limit = sms_segment_limit(text)
    return length <= limit


def pick_sms(variants: Sequence[str]) -> str:
    for text in variants:
        if fits_one_sms(text):
            return text
    return min(variants, key=lambda t: sms_segment_limit(t)[1])


def _lang(language: str) -> str:
    return "en" if language == "en" else "zh"


def _what(kind: str, lang: str) -> str:
    return WHAT[lang].get(kind, kind.replace("_", " "))


def _when(at: datetime, now: datetime, zone: ZoneInfo, lang: str) -> str:
    local, today = at.astimezone(zone), now.astimezone(zone)
    if local.date() == today.date():
        return local.strftime("%H:%M")
    if lang == "zh":
        return f"{local.month}月{local.day}日{local:%H:%M}"
    return local.strftime("%d %b %H:%M")


def alert_message(
    facts: Sequence[AlertFacts],
    *,
    language: str,
    link: str,
    sms: bool,
    zone: ZoneInfo,
    now: datetime,
) -> Message:
    """The notification for one alert, or a bundle of several for the same recipient."""
    lang = _lang(language)
    if len(facts) > 1:
        return _bundle(facts, lang, link, sms, zone, now)
    f = facts[0]
    if f.help_by is not None:
        return _help(f, lang, link, sms)
    what, since = _what(f.kind, lang), _when(f.since, now, zone, lang)
    urgent = ("紧急！" if lang == "zh" else "URGENT ") if f.urgent else ""
    if lang == "zh":
        addr = f"（{f.address}）" if f.address else ""
        title = f"{urgent}【爱心钥匙】{what}：{f.name}"
        variants = [
            f"{urgent}【爱心钥匙】{f.name}{addr}自{since}起{what}，请尽快查看。确认：{link} 或回复1",
            f"{urgent}【爱心钥匙】{f.name}{addr}{since}起{what}。{link} 回复1确认",
            f"{urgent}【爱心钥匙】{f.name}{since}起{what} {link} 回1确认",
            f"{urgent}{f.name}{what} {link}",
        ]
        long_body = (
            f"{f.name}{addr}\n{what}，自{since}起。\n编号 {f.alert_id}。请尽快查看，并在此确认：{link}"
        )
    else:
        addr = f", {f.address}" if f.address else ""
        title = f"{urgent}LoveKey: {what} - {f.name}"
        variants = [
            f"{urgent}LoveKey: {f.name}{addr}: {what} since {since}. Please check."
            f" Confirm: {link} or reply 1",
            f"{urgent}LoveKey: {f.name}{addr}: {what} since {since}. {link} Reply 1 to confirm",
            f"{urgent}LoveKey: {f.name} {what} since {since} {link} reply 1",
            f"{urgent}{f.name}: {what} since {since} {link}",
            f"{urgent}{f.name}: {what} {link}",
        ]
        long_body = (
            f"{f.name}{addr}\n{what} since {since}.\nAlert {f.alert_id}."
            f" Please check and confirm here: {link}"
        )
    if sms:
        return Message("", pick_sms(variants))
    return Message(title, long_body)


def _help(f: AlertFacts, lang: str, link: str, sms: bool) -> Message:
    helper = f.help_by or ""
    if lang == "zh":
        addr = f"（{f.address}）" if f.address else ""
        title = f"紧急！【爱心钥匙】{f.name}需要帮助"
        variants = [
            f"紧急！【爱心钥匙】{helper}在{f.name}{addr}处，老人需要帮助，请立即前往或联系。{link}",
            f"紧急！【爱心钥匙】{helper}在{f.name}处，老人需要帮助。{link}",
            f"紧急！{f.name}需要帮助 {link}",
        ]
        long_body = f"{helper}已在{f.name}{addr}处，老人需要帮助，请立即前往或联系。\n{link}"
    else:
        addr = f", {f.address}" if f.address else ""
        title = f"URGENT LoveKey: {f.name} needs help"
        variants = [
            f"URGENT LoveKey: {helper} is with {f.name}{addr}, who needs help. Please go or call now. {link}",
            f"URGENT LoveKey: {helper} is with {f.name}, who needs help. {link}",
            f"URGENT: {f.name} needs help {link}",
        ]
        long_body = f"{helper} is with {f.name}{addr}, who needs help. Please go or call now.\n{link}"
    if sms:
        return Message("", pick_sms(variants))
    return Message(title, long_body)


def _bundle(
    facts: Sequence[AlertFacts], lang: str, link: str, sms: bool, zone: ZoneInfo, now: datetime
) -> Message:
    ordered = sorted(facts, key=lambda f: (not f.urgent, f.since, f.alert_id))
    n = len(ordered)
    items = [
        f"#{f.alert_id} {f.name}{'' if lang == 'zh' else ': '}{_what(f.kind, lang)}"
        f"{'' if lang == 'zh' else ' since '}{_when(f.since, now, zone, lang)}"
        + ("起" if lang == "zh" else "")
        for f in ordered
    ]
    sep = "；" if lang == "zh" else "; "
    if lang == "zh":
        title = f"【爱心钥匙】{n}条提醒"
        variants = [
            f"【爱心钥匙】{n}条提醒：{sep.join(items)}。查看：{link} 回复编号确认",
            f"【爱心钥匙】{n}条提醒：{sep.join(items[:2])}等。{link}",
            f"【爱心钥匙】{n}条提醒 {link}",
        ]
        long_body = f"{n}条提醒：\n" + "\n".join(items) + f"\n查看与确认：{link}"
    else:
        title = f"LoveKey: {n} alerts"
        variants = [
            f"LoveKey: {n} alerts: {sep.join(items)}. See {link} Reply a number to confirm",
            f"LoveKey: {n} alerts: {sep.join(items[:2])}... {link}",
            f"LoveKey: {n} alerts {link}",
        ]
        long_body = f"{n} alerts:\n" + "\n".join(items) + f"\nSee and confirm: {link}"
    if sms:
        return Message("", pick_sms(variants))
    return Message(title, long_body)


def stand_down_message(facts: Sequence[AlertFacts], *, language: str, sms: bool) -> Message:
    """All clear for one or more alerts the recipient was told about."""
    lang = _lang(language)
    parts = []
    for f in facts:
        outcome = OUTCOME_TEXT[lang].get(f.outcome or "auto_cleared", "")
        if lang == "zh":
            parts.append(f"{f.name}{_what(f.kind, lang)}：{outcome}")
        else:
            parts.append(f"{f.name} - {_what(f.kind, lang)}: {outcome}")
    if lang == "zh":
        title = "【爱心钥匙】解除提醒"
        variants = [
            f"【爱心钥匙】解除：{'；'.join(parts)}，无需前往。谢谢！",
            f"【爱心钥匙】解除：{len(parts)}条提醒已处理，无需前往。",
        ]
    else:
        title = "LoveKey: all clear"
        variants = [
            f"LoveKey all clear: {'; '.join(parts)}. No need to go. Thank you!",
            f"LoveKey all clear: {len(parts)} alerts handled. No need to go.",
        ]
    if sms:
        return Message("", pick_sms(variants))
    return Message(title, variants[0])


def digest_message(name: str, first_use_at: datetime, *, language: str, sms: bool, zone: ZoneInfo) -> Message:
    """The daily all-is-well note: the resident's first water use of the day."""
    at = first_use_at.astimezone(zone).strftime("%H:%M")
    if _lang(language) == "zh":
        title, body = "【爱心钥匙】平安", f"【爱心钥匙】{name}今天{at}已开始用水，一切安好。"
    else:
        title, body = "LoveKey: all is well", f"LoveKey: {name} used water today at {at}. All is well."
    return Message("" if sms else title, body)
