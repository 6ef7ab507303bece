"""Message texts in Chinese and English, and fitting an SMS into one segment.

Pure: facts in, `OutgoingMessage` out. An SMS is one segment when it holds at most 160 GSM-7
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

from lovekey.vocabulary import AlertKind, Language, Outcome

SMS_GSM7_MAX = 160  # characters in one GSM-7 segment
SMS_UCS2_MAX = 70  # UTF-16 code units in one UCS-2 segment

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

# what each alert kind is called in a message, and what each outcome says, per language
WHAT: dict[str, dict[str, str]] = {
    Language.ZH: {
        AlertKind.LOW_USAGE: "用水异常偏少",
        AlertKind.ROUTINE_BREAK: "用水规律异常",
        AlertKind.RUNNING_TAP: "长时间持续用水",
        AlertKind.LEAK: "疑似漏水",
        AlertKind.SMOKE: "烟雾报警",
        AlertKind.GAS: "燃气泄漏报警",
        AlertKind.SOS: "紧急呼叫",
        AlertKind.METER_SILENT: "水表无数据",
        AlertKind.GATEWAY_OFFLINE: "网关离线",
    },
    Language.EN: {
        AlertKind.LOW_USAGE: "low water use",
        AlertKind.ROUTINE_BREAK: "unusual water routine",
        AlertKind.RUNNING_TAP: "water running for a long time",
        AlertKind.LEAK: "possible leak",
        AlertKind.SMOKE: "SMOKE alarm",
        AlertKind.GAS: "GAS alarm",
        AlertKind.SOS: "SOS button pressed",
        AlertKind.METER_SILENT: "meter not reporting",
        AlertKind.GATEWAY_OFFLINE: "gateway offline",
    },
}
OUTCOME_TEXT: dict[str, dict[str, str]] = {
    Language.ZH: {
        Outcome.RESIDENT_OK: "老人平安",
        Outcome.NEEDED_HELP: "已协助",
        Outcome.HOSPITAL: "已送医",
        Outcome.AWAY: "老人外出",
        Outcome.FALSE_DATA: "数据误报",
        Outcome.OTHER: "已处理",
        Outcome.AUTO_CLEARED: "已恢复正常",
    },
    Language.EN: {
        Outcome.RESIDENT_OK: "resident is fine",
        Outcome.NEEDED_HELP: "resident was helped",
        Outcome.HOSPITAL: "taken to hospital",
        Outcome.AWAY: "resident is away",
        Outcome.FALSE_DATA: "false reading",
        Outcome.OTHER: "handled",
        Outcome.AUTO_CLEARED: "back to normal",
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
class OutgoingMessage:
    """What a channel sends: a title (empty for SMS) and a body."""

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
    return Language.EN if language == Language.EN else Language.ZH


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
) -> OutgoingMessage:
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
        return OutgoingMessage("", pick_sms(variants))
    return OutgoingMessage(title, long_body)


def _help(f: AlertFacts, lang: str, link: str, sms: bool) -> OutgoingMessage:
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
        return OutgoingMessage("", pick_sms(variants))
    return OutgoingMessage(title, long_body)


def _bundle(
    facts: Sequence[AlertFacts], lang: str, link: str, sms: bool, zone: ZoneInfo, now: datetime
) -> OutgoingMessage:
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
        return OutgoingMessage("", pick_sms(variants))
    return OutgoingMessage(title, long_body)


def check_in_message(name: str, *, language: str, link: str, sms: bool) -> OutgoingMessage:
    """The check-in: the resident asked on their own phone whether they are all right. Kept
    plain and short (many residents read large print slowly); a call reads the same words and
    takes the same keys."""
    if _lang(language) == "zh":
        title = "【爱心钥匙】问候"
        variants = [
            f"【爱心钥匙】{name}您好，社区问候您：一切都好吗？平安请回复1，需要帮助请回复2。{link}",
            f"【爱心钥匙】{name}您好，平安请回复1，需要帮助回复2。{link}",
            f"平安回1，求助回2 {link}",
        ]
    else:
        title = "LoveKey: are you all right?"
        variants = [
            f"LoveKey: Hello {name}, the community is checking on you. Are you all right?"
            f" Reply 1 if you are fine, 2 if you need help. {link}",
            f"LoveKey: Hello {name}, reply 1 if you are fine, 2 if you need help. {link}",
            f"Reply 1 if fine, 2 for help {link}",
        ]
    if sms:
        return OutgoingMessage("", pick_sms(variants))
    return OutgoingMessage(title, variants[0])


def check_in_call_text(name: str, *, language: str) -> str:
    """What the check-in call says (a voice provider reads it, or its registered template holds
    the same words): the keys are those of the text, 1 fine, 2 need help."""
    if _lang(language) == "zh":
        return f"{name}您好，这里是社区爱心钥匙。您一切都好吗？平安请按1，需要帮助请按2。"
    return (
        f"Hello {name}, this is your community's LoveKey. Are you all right?"
        " Press 1 if you are fine, 2 if you need help."
    )


def stand_down_message(facts: Sequence[AlertFacts], *, language: str, sms: bool) -> OutgoingMessage:
    """All clear for one or more alerts the recipient was told about."""
    lang = _lang(language)
    parts = []
    for f in facts:
        outcome = OUTCOME_TEXT[lang].get(f.outcome or Outcome.AUTO_CLEARED, "")
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
        return OutgoingMessage("", pick_sms(variants))
    return OutgoingMessage(title, variants[0])


def digest_message(
    name: str, first_use_at: datetime, *, language: str, sms: bool, zone: ZoneInfo
) -> OutgoingMessage:
    """The daily all-is-well note: the resident's first water use of the day."""
    at = first_use_at.astimezone(zone).strftime("%H:%M")
    if _lang(language) == "zh":
        title, body = "【爱心钥匙】平安", f"【爱心钥匙】{name}今天{at}已开始用水，一切安好。"
    else:
        title, body = "LoveKey: all is well", f"LoveKey: {name} used water today at {at}. All is well."
    return OutgoingMessage("" if sms else title, body)
