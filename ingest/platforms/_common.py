"""Checks the platform readers share; each raises `PayloadError` with a reason code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs._fields import load_object
from lovekey.ingest.sources._fields import MAX_EXTERNAL_ID_CHARS, within

# Ids a platform gives a device (an IMEI is 15 digits, a CTWing deviceId 32 hex digits) are
# held to the registry's limit on external ids.

__all__ = ["epoch_ms", "external_id", "load_object", "text", "within"]


def epoch_ms(value: Any, name: str, context: DecodeContext) -> datetime:
    """Epoch milliseconds (a JSON integer, or its digits as a string) within the window."""
    if type(value) is str and value.isdigit():
        value = int(value)
    if type(value) is not int:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{name} must be epoch milliseconds, got {value!r:.40}")
    try:
        ts = datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{name} {value!r}: {exc}") from exc
    return within(ts, context, name)


def text(body: dict[str, Any], name: str) -> str:
    """A required non-empty string field."""
    value = body.get(name)
    if value is None:
        raise PayloadError(reasons.MISSING_FIELD, name)
    if type(value) is not str or not value:
        raise PayloadError(reasons.BAD_VALUE, f"{name} must be a non-empty string, got {value!r:.40}")
    return value


def external_id(value: Any) -> str | None:
    """A usable device id, or None for the placeholders platforms send ("", "undefined")."""
    if type(value) is int:
        value = str(value)
    if type(value) is not str or not value or value == "undefined":
        return None
    if len(value) > MAX_EXTERNAL_ID_CHARS:
        raise PayloadError(reasons.BAD_VALUE, f"device id of {len(value)} characters")
    return value
