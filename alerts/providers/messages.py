"""Template parameters for provider messages (pure).

A provider sends only templates the operator registered (docs/alerts.md lists each template's
wording and variables); LoveKey supplies the variables, in this order:

| message      | when                                   | variables                    |
| ------------ | -------------------------------------- | ---------------------------- |
| `alert`      | a welfare or maintenance alert         | name, what, since, link      |
| `urgent`     | smoke, gas, SOS                        | name, what, since, link      |
| `help`       | someone on site pressed "needs help"  | name, helper, link           |
| `bundle`     | several alerts in one message          | count, link                  |
| `stand_down` | the alert is over                      | name, outcome                |
| `digest`     | the daily all-is-well note             | name, time                   |
| `call`       | a voice call (key 1 / key 2)           | name, what                   |
| `check_in`   | the resident asked first (SMS)         | name, link                   |
| `check_in_call` | the resident asked first (a call)   | name                         |

`link` is the acknowledgement link's token only (about 22 characters): both providers review
the links in a template and Tencent Cloud refuses a URL in a variable, so the registered
template holds the fixed part ("https://lk.example/a/${link}").

The resident is named as the operator chooses (`alerts.resident_naming`): the full name,
the surname with a polite title, or the household number (a neighbour's SMS is personal data);
the check-in greets the resident on their own phone, so there "household" means the surname
with a title.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from lovekey.alerts import texts
from lovekey.vocabulary import MAINTENANCE_KINDS, Outcome

# Chinese compound surnames (复姓) that take two characters
_COMPOUND_SURNAMES = frozenset(
    ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "令狐", "慕容", "尉迟", "公孙", "长孙", "夏侯")
)


def resident_name(name: str, address: str, *, naming: str, language: str) -> str:
    """How a message names the resident."""
    if naming == "household" and address:
        return address.split()[-1]
    if naming == "surname_title" and name:
        surname = name[:2] if name[:2] in _COMPOUND_SURNAMES else name[:1]
        if not "\u4e00" <= surname[0] <= "\u9fff":  # a name in Latin letters: its last word
            surname = name.split()[-1]
        return f"{surname}老人" if language == "zh" else f"resident {surname}"
    return name


def template_params(
    purpose: str,
    facts: Sequence[texts.AlertFacts],
    *,
    voice: bool,
    language: str,
    link: str,
    naming: str,
    zone: ZoneInfo,
    now: datetime,
    digest: tuple[str, datetime] | None = None,
    check_in: bool = False,
) -> tuple[str, dict[str, str], str]:
    """(template key, variables, LoveKey's own wording of it) for one message; `check_in`: the
    question to the resident themself (1 fine, 2 need help), by text or by a call."""
    lang = "en" if language == "en" else "zh"
    token = link.rstrip("/").rpartition("/")[2]
    if check_in:
        return _check_in(facts[0], voice=voice, lang=lang, link=link, token=token, naming=naming)
    if purpose == "digest":
        assert digest is not None
        who, first_use = digest
        name = resident_name(who, "", naming=naming, language=lang)
        at = first_use.astimezone(zone).strftime("%H:%M")
        text = texts.digest_message(name, first_use, language=lang, sms=True, zone=zone).body
        return f"digest.{lang}", {"name": name, "time": at}, text
    first = facts[0]
    name = _name(first, naming, lang)
    what = texts.WHAT[lang].get(first.kind, first.kind.replace("_", " "))
    if voice:
        key_text = (
            f"{name}{what}。我去看看请按1，需要帮助请按2。"
            if lang == "zh"
            else f"{name}: {what}. Press 1 if you are going, 2 if help is needed."
        )
        return f"call.{lang}", {"name": name, "what": what}, key_text
    if purpose == "stand_down":
        outcome = texts.OUTCOME_TEXT[lang].get(first.outcome or Outcome.AUTO_CLEARED, "")
        text = texts.stand_down_message(facts, language=lang, sms=True).body
        return f"stand_down.{lang}", {"name": name, "outcome": outcome}, text
    if len(facts) > 1:
        return (
            f"bundle.{lang}",
            {"count": str(len(facts)), "link": token},
            texts.alert_message(facts, language=lang, link=link, sms=True, zone=zone, now=now).body,
        )
    text = texts.alert_message(facts, language=lang, link=link, sms=True, zone=zone, now=now).body
    if first.help_by:
        return f"help.{lang}", {"name": name, "helper": first.help_by, "link": token}, text
    since = first.since.astimezone(zone).strftime("%H:%M")
    key = "urgent" if first.urgent else "alert"
    return f"{key}.{lang}", {"name": name, "what": what, "since": since, "link": token}, text


def _name(facts: texts.AlertFacts, naming: str, lang: str) -> str:
    if facts.kind in MAINTENANCE_KINDS:
        return facts.name  # a device or gateway: not personal data
    return resident_name(facts.name, facts.address, naming=naming, language=lang)


def _check_in(
    facts: texts.AlertFacts, *, voice: bool, lang: str, link: str, token: str, naming: str
) -> tuple[str, dict[str, str], str]:
    # the resident is greeted on their own phone: by name, never by household number
    name = resident_name(
        facts.name, "", naming="surname_title" if naming == "household" else naming, language=lang
    )
    if voice:
        return f"check_in_call.{lang}", {"name": name}, texts.check_in_call_text(name, language=lang)
    text = texts.check_in_message(name, language=lang, link=link, sms=True).body
    return f"check_in.{lang}", {"name": name, "link": token}, text
