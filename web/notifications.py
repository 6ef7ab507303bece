"""What the alert page says about each notification, and what the alert's history means.

Pure shaping, no database and no clock: `queries.alert_detail` reads the outbox rows of an
alert with their delivery attempts and the messages the SMS/voice providers accepted
(`provider_message`: their id for it, its receipt, a key pressed in a call); `shape` turns each
row into what staff read:

- who: the contact role, the name, and the number masked as `lovekey.redact.redact_phone`
  masks it in logs (the resident page, not the alert page, is where a number is dialled);
- how: the channel (`sms`, `voice`, `push`) and the provider (`aliyun`, `tencent_voice`, ...),
  and the provider's own id for the message (BizId, SerialNo, CallId);
- where it stands (`Status`): queued, accepted, delivered, failed, unanswered, answered or
  cancelled, with the provider's reason code and text when it failed (a refusal such as
  `isv.MOBILE_NUMBER_ILLEGAL`, or a receipt's error code), and when the receipt came;
- for a call, the key pressed and what it meant (`KEY_MEANINGS`).

A refusal the operator must fix (an unapproved template or signature, a missing template id:
`ProviderError.operator`, written to the history as `provider_error` by `alerts.dispatch`) is
pulled out of the history by `operator_errors`, so the page can put it first.

Every text here that a provider wrote (a reason, a message id) is untrusted input: it is kept
as text, clipped, and escaped by the templates like everything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from lovekey.redact import redact_phone
from lovekey.vocabulary import ContactRole

# a provider's text is shown this long at most (the dispatcher keeps 1,000 characters of an
# error and 300 of a receipt's reason)
MAX_REASON_CHARS = 300


class Status(StrEnum):
    """Where one notification stands, as the console shows it."""

    QUEUED = "queued"  # waiting for its turn (quiet hours, a retry, a rate limit)
    ACCEPTED = "accepted"  # a channel took it; no receipt (yet, or ever: push, a gateway)
    DELIVERED = "delivered"  # the provider's receipt: on the phone
    FAILED = "failed"  # refused by every channel, or the receipt says it never arrived
    UNANSWERED = "unanswered"  # a call that nobody picked up
    ANSWERED = "answered"  # a call picked up (a key may have been pressed)
    CANCELLED = "cancelled"  # no longer needed (the alert was resolved first)


class KeyMeaning(StrEnum):
    """What a key pressed in a call said (`alerts.inbound`, `alerts.check_in`)."""

    FINE = "fine"  # the resident, to their own check-in
    GOING = "going"  # a contact: "I'm going"
    NEED_HELP = "need_help"
    NOT_A_CHOICE = "not_a_choice"  # a key the call did not offer


# key -> meaning, for the resident's check-in call and for everyone else's call
KEY_MEANINGS: dict[bool, dict[str, KeyMeaning]] = {
    True: {"1": KeyMeaning.FINE, "2": KeyMeaning.NEED_HELP},
    False: {"1": KeyMeaning.GOING, "2": KeyMeaning.NEED_HELP},
}


def key_meaning(role: str, key: str) -> KeyMeaning:
    return KEY_MEANINGS[role == ContactRole.RESIDENT].get(key, KeyMeaning.NOT_A_CHOICE)


@dataclass(frozen=True, slots=True)
class Reason:
    """A provider's reason split into its code and its text (either may be empty)."""

    code: str
    text: str


# A provider's code: `isv.MOBILE_NUMBER_ILLEGAL`, `InvalidParameterValue.IncorrectPhoneNumber`,
# `DELIVRD`, `200005`. It must hold a capital, a digit, a dot or an underscore, so that a plain
# word ("result 1", "connection refused") is read as text, not as a code.
_CODE = re.compile(r"[A-Za-z0-9][\w.:\-]{0,79}")
_CODE_MARK = re.compile(r"[A-Z0-9._]")


def _is_code(token: str) -> bool:
    return bool(_CODE.fullmatch(token)) and bool(_CODE_MARK.search(token))


def split_reason(reason: str | None) -> Reason:
    """`code: text` (a refusal: `ProviderError.detail`) or `code text` (a receipt: Alibaba's
    `err_code err_msg`, Tencent's `errmsg description`) into its parts, clipped."""
    text = (reason or "").strip()[:MAX_REASON_CHARS]
    for separator in (": ", " "):
        head, found, tail = text.partition(separator)
        if found and _is_code(head):
            tail = tail.strip()
            return Reason(head, "" if tail == head else tail)  # a provider may repeat its code
    if _is_code(text):
        return Reason(text, "")
    return Reason("", text)


def channel_parts(channel: str | None) -> tuple[str, str]:
    """`sms@aliyun` -> ('sms', 'aliyun'); `push:0` -> ('push', ''); `sms` -> ('sms', '')."""
    if not channel:
        return "", ""
    kind, _, provider = channel.partition("@")
    return kind.partition(":")[0], provider


def _when(value: Any) -> datetime | None:
    """A timestamp from a JSON aggregate (ISO text) or from a row (already a datetime)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class OperatorError:
    """A refusal the operator must fix in the provider settings or the provider's console."""

    at: datetime
    channel: str
    code: str
    detail: str


def operator_errors(history: Iterable[Mapping[str, Any]]) -> list[OperatorError]:
    """The operator's errors on the alert's history, oldest first."""
    out = []
    for entry in history:
        detail = entry.get("detail") or {}
        if entry.get("event") == "provider_error" and detail.get("operator"):
            out.append(
                OperatorError(
                    entry["at"],
                    str(detail.get("channel") or ""),
                    str(detail.get("code") or "")[:80],
                    str(detail.get("detail") or "")[:MAX_REASON_CHARS],
                )
            )
    return out


def _attempt(raw: Mapping[str, Any], operator: Sequence[OperatorError]) -> dict[str, Any]:
    error = raw.get("error")
    reason = split_reason(error)
    kind, provider = channel_parts(raw.get("channel"))
    clipped = (error or "")[:MAX_REASON_CHARS]
    # the dispatcher wrote the same text (its first 300 characters) to the history
    by_operator = any(
        o.channel == raw.get("channel") and o.detail and clipped.startswith(o.detail) for o in operator
    )
    return {
        "channel": raw.get("channel"),
        "kind": kind,
        "provider": provider,
        "result": raw.get("result"),
        "started_at": _when(raw.get("started_at")),
        "finished_at": _when(raw.get("finished_at")),
        "error": clipped or None,
        "code": reason.code,
        "text": reason.text,
        "operator": bool(error) and by_operator,
    }


def _message(raw: Mapping[str, Any], role: str) -> dict[str, Any]:
    kind, provider = channel_parts(raw.get("channel"))
    key = raw.get("key_pressed")
    status = str(raw.get("status") or Status.ACCEPTED)
    if key and status == Status.ACCEPTED:
        status = Status.ANSWERED  # a key reached us before the call's own report
    reason = split_reason(raw.get("reason"))
    return {
        "provider": raw.get("provider") or provider,
        "channel": raw.get("channel"),
        "kind": kind,
        "message_id": str(raw.get("message_id") or "")[:100],
        "accepted_at": _when(raw.get("accepted_at")),
        "status": status,
        "status_at": _when(raw.get("status_at")),
        "code": reason.code,
        "text": reason.text,
        "key": key,
        "key_at": _when(raw.get("key_at")),
        "key_meaning": key_meaning(role, str(key)) if key else None,
    }


def _status(state: str, messages: Sequence[Mapping[str, Any]]) -> Status:
    if messages:
        return Status(messages[-1]["status"])
    return {
        "pending": Status.QUEUED,
        "sent": Status.ACCEPTED,
        "failed": Status.FAILED,
    }.get(state, Status.CANCELLED)


def shape(row: Mapping[str, Any], operator: Sequence[OperatorError] = ()) -> dict[str, Any]:
    """One outbox row (with `attempts` and `messages` as `queries.alert_detail` reads them) as
    the console shows it. The raw number is not passed on: `phone` is masked."""
    role = str(row.get("role") or "")
    attempts = [_attempt(a, operator) for a in row.get("attempts") or []]
    messages = [_message(m, role) for m in row.get("messages") or []]
    status = _status(str(row.get("state") or ""), messages)
    last = messages[-1] if messages else None
    failed_attempts = [a for a in attempts if a["result"] == "failed"]
    # the reason to show: the receipt's for a message that did not arrive, else the last
    # refusal for a notification that failed or is waiting to be tried again
    reason = Reason("", "")
    if last is not None and status in (Status.FAILED, Status.UNANSWERED):
        reason = Reason(last["code"], last["text"])
    elif last is None and status in (Status.FAILED, Status.QUEUED) and failed_attempts:
        reason = Reason(failed_attempts[-1]["code"], failed_attempts[-1]["text"])
    channel = (
        (last["channel"] if last else None)
        or row.get("sent_channel")
        or (attempts[-1]["channel"] if attempts else None)
        or next(iter(row.get("channels") or []), None)
    )
    kind, provider = channel_parts(channel)
    keyed = [m for m in messages if m["key"]]
    return {
        "id": row.get("id"),
        "purpose": row.get("purpose"),
        "round": row.get("round"),
        "step": row.get("step"),
        "role": role,
        "name": row.get("name"),
        "phone": redact_phone(row.get("phone")),
        "state": row.get("state"),
        "channels": list(row.get("channels") or []),
        "created_at": row.get("created_at"),
        "not_before": row.get("not_before"),
        "sent_at": row.get("sent_at"),
        "sent_channel": row.get("sent_channel"),
        "bundle_id": row.get("bundle_id"),
        "channel": channel,
        "kind": kind,
        "provider": provider,
        "message_id": last["message_id"] if last else None,
        "status": status,
        "status_at": last["status_at"] if last else None,
        "reason_code": reason.code,
        "reason_text": reason.text,
        "key": keyed[-1]["key"] if keyed else None,
        "key_at": keyed[-1]["key_at"] if keyed else None,
        "key_meaning": keyed[-1]["key_meaning"] if keyed else None,
        "operator_error": any(a["operator"] for a in attempts),
        "attempts": attempts,
        "messages": messages,
    }


# What the console says about each kind of history entry: only these fields of its detail,
# so nothing else an entry holds (a recipient's number in `delivery_failed`) reaches a page.
HISTORY_FIELDS: dict[str, tuple[str, ...]] = {
    "delivery_receipt": ("channel", "status", "reason"),
    "provider_error": ("channel", "code", "detail"),
    "key_pressed": ("channel", "role", "key"),
    "check_in_answered": ("answer", "channel"),
    "check_in_ended": ("answer",),
    "check_in_skipped": ("reason",),
    "delivery_failed": ("role", "reason", "code"),
    "nobody_reached": ("round",),
    "resolved": ("outcome",),
    "auto_resolved": ("reason",),
}


def history_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A history entry with only the detail the console shows (`HISTORY_FIELDS`), each value
    text clipped to `MAX_REASON_CHARS`; a key press says what it meant; a receipt's reason
    and a refusal are split into code and text."""
    event = str(entry.get("event") or "")
    detail = entry.get("detail") or {}
    facts = {
        name: str(detail[name])[:MAX_REASON_CHARS]
        for name in HISTORY_FIELDS.get(event, ())
        if detail.get(name) not in (None, "")
    }
    if event == "key_pressed" and "key" in facts:
        facts["meaning"] = key_meaning(facts.get("role", ""), facts["key"])
    if event == "delivery_receipt" and "reason" in facts:
        reason = split_reason(facts.pop("reason"))
        facts.update({k: v for k, v in (("code", reason.code), ("text", reason.text)) if v})
    return {
        "at": entry.get("at"),
        "event": event,
        "actor": entry.get("actor"),
        "facts": facts,
        "operator": event == "provider_error" and bool(detail.get("operator")),
    }


def alert_view(alert: dict[str, Any]) -> dict[str, Any]:
    """The alert from `queries.alert_detail` with its notifications shaped (`shape`), split
    into the check-in (the resident asked) and the people told, its history entries reduced
    to what is shown, and its operator errors pulled out."""
    raw_history = alert.get("history") or []
    operator = operator_errors(raw_history)
    shaped = [shape(row, operator) for row in alert.get("deliveries") or []]
    return {
        **alert,
        "deliveries": shaped,
        "check_in_attempts": [n for n in shaped if n["role"] == ContactRole.RESIDENT],
        "told": [n for n in shaped if n["role"] != ContactRole.RESIDENT],
        "history": [history_entry(h) for h in raw_history],
        "operator_errors": operator,
    }
