"""Times, units and ids as the sources write them, checked the way the native codecs check theirs.

Sources disagree on clocks: ChirpStack and The Things Stack write RFC 3339 in UTC with
nanoseconds, wmbusmeters writes UTC with a `Z` (or local time without a zone, depending on
its version and settings), Zigbee2MQTT's `last_seen` is epoch milliseconds or ISO 8601,
the carrier platforms send epoch milliseconds, and a CJ/T 188 meter's clock is local time
with no zone at all. Each helper raises `PayloadError` with a reason code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext

# An epoch number above this is milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973.
EPOCH_MS_ABOVE = 1e11
# The longest external id an adapter passes on (the registry's own limit is 64).
MAX_EXTERNAL_ID_CHARS = 64


def within(ts: datetime, context: DecodeContext, what: str = "time") -> datetime:
    """`ts` itself, unless it is later than the accepted future or past retention."""
    if ts > context.latest:
        raise PayloadError(reasons.FUTURE_TIMESTAMP, f"{what} {ts.isoformat()} is in the future")
    if context.earliest is not None and ts < context.earliest:
        raise PayloadError(reasons.TOO_OLD, f"{what} {ts.isoformat()} is past retention")
    return ts


def epoch(value: Any, what: str = "time") -> datetime:
    """Epoch seconds or milliseconds (told apart by size) as an aware UTC time."""
    kind = type(value)
    if kind is not int and kind is not float:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{what} must be epoch seconds or ms, got {value!r:.40}")
    seconds = value / 1000 if value > EPOCH_MS_ABOVE else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{what} {value!r}: {exc}") from exc


def rfc3339(value: Any, zone: ZoneInfo | None, what: str = "time") -> datetime:
    """RFC 3339 / ISO 8601 text; without an offset it is read in `zone` (None: refused).

    Nanoseconds (Go's format, used by ChirpStack and The Things Stack) are cut to the
    microseconds Python and PostgreSQL keep.
    """
    if type(value) is not str:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{what} must be a string, got {value!r:.40}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{what} {value[:40]!r}: {exc}") from exc
    if ts.tzinfo is None:
        if zone is None:
            raise PayloadError(reasons.BAD_TIMESTAMP, f"{what} {value[:40]!r} has no UTC offset")
        ts = ts.replace(tzinfo=zone)
    return ts


def any_time(value: Any, zone: ZoneInfo | None, what: str = "time") -> datetime:
    """Epoch seconds/milliseconds or RFC 3339 text, whichever `value` is."""
    if type(value) is str:
        return rfc3339(value, zone, what)
    return epoch(value, what)


def external_id(value: Any, what: str = "device id") -> str:
    """A device's id at its source: a non-empty string without control characters."""
    if type(value) is not str or not value or len(value) > MAX_EXTERNAL_ID_CHARS:
        raise PayloadError(reasons.MISSING_FIELD if not value else reasons.BAD_VALUE, f"{what} {value!r:.80}")
    if not value.isprintable():
        raise PayloadError(reasons.BAD_VALUE, f"{what} {value!r:.80} has control characters")
    return value


# litres in one unit of each volume unit the sources use
LITRES_PER = {"m3": 1000.0, "m³": 1000.0, "l": 1.0, "L": 1.0}
