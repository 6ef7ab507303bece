"""Field checks shared by the JSON codecs. Each raises `PayloadError` with a reason code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext


def load_json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(reasons.MALFORMED_JSON, str(exc)) from exc


def load_object(payload: bytes) -> dict[str, Any]:
    body = load_json(payload)
    if not isinstance(body, dict):
        raise PayloadError(reasons.MALFORMED_JSON, f"expected a JSON object, got {_kind(body)}")
    return body


def timestamp(row: dict[str, Any], context: DecodeContext) -> datetime:
    """`ts` as RFC 3339 with an offset, or epoch seconds; within the accepted window."""
    value = row.get("ts")
    if value is None:
        raise PayloadError(reasons.MISSING_FIELD, "ts")
    kind = type(value)
    if kind is str:
        try:
            ts = datetime.fromisoformat(value)
        except ValueError as exc:
            raise PayloadError(reasons.BAD_TIMESTAMP, f"ts {value[:40]!r}: {exc}") from exc
        if ts.tzinfo is None:
            raise PayloadError(reasons.BAD_TIMESTAMP, f"ts {value[:40]!r} has no UTC offset")
    elif kind is int or kind is float:
        try:
            ts = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError(reasons.BAD_TIMESTAMP, f"ts {value!r}: {exc}") from exc
    else:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"ts must be a string or a number, got {_kind(value)}")
    if ts > context.latest:
        raise PayloadError(reasons.FUTURE_TIMESTAMP, f"ts {ts.isoformat()} is in the future")
    if context.earliest is not None and ts < context.earliest:
        raise PayloadError(reasons.TOO_OLD, f"ts {ts.isoformat()} is past retention")
    return ts


def number(
    row: dict[str, Any], name: str, low: float, high: float, *, required: bool = False
) -> float | None:
    """A JSON number in [low, high]; None when absent (or null) and not required."""
    value = row.get(name)
    if value is None and required:
        raise PayloadError(reasons.MISSING_FIELD, name)
    return checked(value, name, low, high)


def checked(value: Any, name: str, low: float, high: float) -> float | None:
    """`value` (None, or a JSON number in [low, high]) as a float.

    orjson never yields NaN or infinity, and the bounds are finite, so the range test
    is also the finiteness test. `type() is` keeps booleans (an int subclass) out.
    """
    if value is None:
        return None
    kind = type(value)
    if kind is not float and kind is not int:
        raise PayloadError(reasons.BAD_VALUE, f"{name} must be a number, got {_kind(value)}")
    if not low <= value <= high:
        raise PayloadError(reasons.BAD_VALUE, f"{name}={value!r} outside [{low:g}, {high:g}]")
    return float(value)


def flag(row: dict[str, Any], name: str) -> bool:
    value = row.get(name)
    if value is None:
        raise PayloadError(reasons.MISSING_FIELD, name)
    if not isinstance(value, bool):
        raise PayloadError(reasons.BAD_VALUE, f"{name} must be true or false, got {_kind(value)}")
    return value


def check_device_id(row: dict[str, Any], device_id: str | None) -> None:
    """A `device_id` inside the payload, when present, must be the one in the topic."""
    inner = row.get("device_id")
    if inner is not None and inner != device_id:
        raise PayloadError(
            reasons.DEVICE_MISMATCH, f"payload device_id {str(inner)[:64]!r} != topic {device_id!r}"
        )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
