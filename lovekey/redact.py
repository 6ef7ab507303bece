"""Redaction of secrets and personal data for logs and reprs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_PHONE = re.compile(r"\+?\d[\d\- ]{6,}\d")


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
