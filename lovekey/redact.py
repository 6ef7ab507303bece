"""Redaction of secrets and personal data for logs and reprs.

`redact_log_text` is what the logging pipeline (`lovekey.logs`) applies to every line, whoever
logged it: it must be safe on any text, so its patterns are narrow (a timestamp or a row id is
not a phone number) and applying it twice changes nothing.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_PHONE = re.compile(r"\+?\d[\d\- ]{6,}\d")

# --- what `redact_log_text` masks, compiled once ----------------------------------------------
# E.164 (`+` and 7-15 digits) and Chinese mobiles (11 digits from 13-19, optionally behind 86,
# as in an SMS gateway path `/sms/8613800000002` or an encoded `%2B86...`)
_LOG_PHONE = re.compile(r"(?<!\d)(?:\+[1-9]\d{6,14}|(?:86)?1[3-9]\d{9})(?!\d)")
# the token in an ack link `/a/{token}` is the credential to act on an alert
_ACK_TOKEN = re.compile(r"(?<=/a/)[A-Za-z0-9_.~%-]{6,}")
# `scheme://user:password@host`
_URL_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@]*):[^\s@/]*@")
# `?token=...`, `&api_key=...`, `&password=...`
_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:[\w.-]*token|[\w.-]*secret|api[_-]?key|apikey|key|password|passwd|pass|pwd"
    r"|sig|signature|auth)=)[^&\s#'\"]+"
)
# `Authorization: Bearer ...`, `'Authorization': 'Basic ...'`, `X-Auth-Token: ...`, `X-Api-Key=...`
_SECRET_HEADER = re.compile(
    r"(?i)(\b(?:authorization|proxy-authorization|x-[\w-]*token|x-[\w-]*api-?key)['\"]?\s*[:=]\s*['\"]?"
    r"(?:(?:bearer|basic|token|digest)\s+)?)[^\s'\",}]+"
)


def redact_url(url: str | None) -> str:
    """`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`; query strings are dropped."""
    if not url:
        return "<none>"
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in creds else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_phone(phone: str | None) -> str:
    """Keep the first four and last two digits: `+8613812345678` -> `+861********78`."""
    if not phone:
        return ""
    digits = phone.strip()
    if len(digits) <= 6:
        return "*" * len(digits)
    return digits[:4] + "*" * (len(digits) - 6) + digits[-2:]


def redact_text(text: str) -> str:
    """Mask anything that looks like a phone number inside free text."""
    return _PHONE.sub(lambda m: redact_phone(m.group(0)), text)


def redact_log_text(text: str) -> str:
    """Mask phone numbers, ack-link tokens, passwords in URLs, secret query parameters and
    authorization headers in one log line (or traceback)."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _SECRET_HEADER.sub(r"\1***", text)
    text = _SECRET_PARAM.sub(r"\1***", text)
    text = _ACK_TOKEN.sub("***", text)
    return _LOG_PHONE.sub(lambda m: redact_phone(m.group(0)), text)
