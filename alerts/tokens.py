"""Acknowledgement tokens: short, unguessable, expiring, bound to one alert and one recipient.

A token names one outbox row (one alert, one recipient) and an expiry, and carries an HMAC of
both together with the alert id and the recipient key:

    <outbox id, base 36>.<expiry in minutes since the epoch, base 36>.<HMAC-SHA256, 72 bits>

About 22 characters, so the link fits in an SMS. Changing any part breaks the MAC; a token
for one alert cannot act on another (the alert id is inside the MAC and comes from the row
the token names); it stops working at its expiry. Pure functions: the caller supplies the
secret, the row's facts and `now`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from lovekey.errors import AckTokenError

_MAC_BYTES = 9  # 72 bits: guessing online is hopeless; 12 characters in base64url
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class TokenParts:
    outbox_id: int
    expires_at: datetime
    mac: str


def make_token(
    secret: bytes, *, outbox_id: int, alert_id: int, recipient_key: str, expires_at: datetime
) -> str:
    minutes = -(-int(expires_at.timestamp()) // 60)  # round up: never expire early
    return f"{_b36(outbox_id)}.{_b36(minutes)}.{_mac(secret, outbox_id, alert_id, recipient_key, minutes)}"


def parse_token(token: str) -> TokenParts:
    """Split a token without trusting it; raises AckTokenError('malformed')."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts) or len(token) > 64:
        raise AckTokenError("malformed")
    try:
        outbox_id = int(parts[0], 36)
        minutes = int(parts[1], 36)
        expires_at = datetime.fromtimestamp(minutes * 60, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise AckTokenError("malformed") from exc
    return TokenParts(outbox_id, expires_at, parts[2])


def verify_token(
    secret: bytes, parts: TokenParts, *, alert_id: int, recipient_key: str, now: datetime
) -> None:
    """Raise AckTokenError('forged') or ('expired') unless the token is good for this
    alert and recipient at `now`."""
    minutes = int(parts.expires_at.timestamp()) // 60
    expected = _mac(secret, parts.outbox_id, alert_id, recipient_key, minutes)
    if not hmac.compare_digest(expected, parts.mac):
        raise AckTokenError("forged")
    if now >= parts.expires_at:
        raise AckTokenError("expired")


def _mac(secret: bytes, outbox_id: int, alert_id: int, recipient_key: str, minutes: int) -> str:
    message = f"lovekey-ack|{outbox_id}|{alert_id}|{recipient_key}|{minutes}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _b36(value: int) -> str:
    if value < 0:
        raise ValueError("negative")
    out = ""
    while True:
        value, digit = divmod(value, 36)
        out = _DIGITS[digit] + out
        if value == 0:
            return out
