"""What a source's decoded object or raw payload says about a meter or an alarm.

Network servers decode a device's bytes with the maker's codec, so the field that holds a
meter's register differs by maker (`CurrentVolume` in m3 for Axioma's codec, `total_m3` for
wmbusmeters, ...). A source says where to look in its `options`:

- `total_field` (default: `total_l`, else `total_m3`) and `total_unit` (`m3` or `l`;
  default `m3`, or `l` for a field named `total_l`);
- `battery_field` and `battery_unit` (`v` or `mv`), optional;
- `time_field`: the meter's own clock in the object (epoch seconds/ms or RFC 3339), used for
  the reading's time instead of the server's receipt time when present.

Where the payload is raw bytes the network server did not decode, `decoders` names the
decoder per meter model (`cjt188`: the bytes are a CJ/T 188 frame); `object` (the default)
uses the server's decoded object. Alarm fields (`smoke`, `gas`, `tamper`, `battery_low`)
become levels: stored as events where they change.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from lovekey.errors import PayloadError, SettingsError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs.reading import MAX_BATTERY_V, MAX_TOTAL_L
from lovekey.ingest.decoded import EventMessage, WaterReading
from lovekey.ingest.sources._fields import any_time, within
from lovekey.ingest.sources.cjt188 import StatusBits, decode_frame
from lovekey.vocabulary import EventType

# The state fields of an alarm (Zigbee2MQTT's names, which LoRaWAN codecs of alarms share)
LEVEL_FIELDS: tuple[tuple[str, EventType], ...] = (
    ("smoke", EventType.SMOKE),
    ("gas", EventType.GAS),
    ("tamper", EventType.TAMPER),
    ("battery_low", EventType.BATTERY_LOW),
)
DECODERS = ("object", "cjt188")


@dataclass(frozen=True, slots=True)
class MeterFields:
    """Where a decoded object keeps a meter's values; decided once per source."""

    total: tuple[tuple[str, float], ...]  # (field, litres per unit), tried in order
    battery: tuple[str, float] | None  # (field, volts per unit)
    status_bits: StatusBits
    time_field: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> MeterFields:
        field = options.get("total_field")
        if field is None:
            total: tuple[tuple[str, float], ...] = (("total_l", 1.0), ("total_m3", 1000.0))
        else:
            unit = str(options.get("total_unit", "l" if field == "total_l" else "m3")).lower()
            if unit not in ("l", "m3"):
                raise SettingsError(f"total_unit {unit!r}: use m3 or l")
            total = ((str(field), 1000.0 if unit == "m3" else 1.0),)
        battery = None
        if options.get("battery_field") is not None:
            volts_per = 0.001 if str(options.get("battery_unit", "v")).lower() == "mv" else 1.0
            battery = (str(options["battery_field"]), volts_per)
        try:
            status_bits = StatusBits(options.get("cjt188_status_bits", "standard"))
        except ValueError as exc:
            raise SettingsError("cjt188_status_bits: standard or msb") from exc
        time_field = options.get("time_field")
        return cls(total, battery, status_bits, None if time_field is None else str(time_field))


def check_decoders(decoders: dict[str, str]) -> None:
    """Refuse, at start, a decoder name no adapter knows."""
    for model, name in decoders.items():
        if name not in DECODERS:
            raise SettingsError(f"decoder {name!r} for model {model!r}: one of {', '.join(DECODERS)}")


def decoder_for(decoders: dict[str, str], model: str | None) -> str:
    """The decoder of a meter model: its own entry, else `default`, else the server's object."""
    return decoders.get(model or "", decoders.get("default", "object"))


def object_time(
    body: dict[str, Any], fields: MeterFields, zone: ZoneInfo, context: DecodeContext, received: datetime
) -> datetime:
    """The meter's clock from the object's `time_field` when configured and present, else `received`."""
    if fields.time_field is None or body.get(fields.time_field) is None:
        return received
    return within(any_time(body[fields.time_field], zone, fields.time_field), context, fields.time_field)


def levels(body: dict[str, Any], ts: datetime) -> tuple[EventMessage, ...]:
    """The alarm states a snapshot or decoded object holds, as levels at `ts`."""
    found: list[EventMessage] = []
    for field, event_type in LEVEL_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        if type(value) is not bool:
            raise PayloadError(reasons.BAD_VALUE, f"{field} must be true or false, got {value!r:.40}")
        found.append(EventMessage(ts, event_type, value))
    return tuple(found)


def meter_reading(
    body: dict[str, Any], ts: datetime, fields: MeterFields, seq: int | None = None
) -> WaterReading | None:
    """The meter reading a decoded object holds at `ts`; None when it has no total."""
    for field, litres_per in fields.total:
        value = body.get(field)
        if value is None:
            continue
        if type(value) is not int and type(value) is not float:
            raise PayloadError(reasons.BAD_VALUE, f"{field} must be a number, got {value!r:.40}")
        total_l = value * litres_per
        if not 0.0 <= total_l <= MAX_TOTAL_L:
            raise PayloadError(reasons.BAD_VALUE, f"{field}={value!r} is not a meter total")
        return WaterReading(ts, float(total_l), battery_v=_battery(body, fields), seq=seq)
    return None


def _battery(body: dict[str, Any], fields: MeterFields) -> float | None:
    if fields.battery is None:
        return None
    field, volts_per = fields.battery
    value = body.get(field)
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        raise PayloadError(reasons.BAD_VALUE, f"{field} must be a number, got {value!r:.40}")
    volts = value * volts_per
    if not 0.0 <= volts <= MAX_BATTERY_V:
        raise PayloadError(reasons.BAD_VALUE, f"{field}={value!r} is not a battery voltage")
    return float(volts)


def from_frame(
    raw: bytes, ts: datetime, fields: MeterFields, seq: int | None = None
) -> tuple[WaterReading, tuple[EventMessage, ...]]:
    """A CJ/T 188 frame carried in a LoRaWAN or NB-IoT payload: its total and battery level."""
    frame = decode_frame(raw, status_bits=fields.status_bits)
    return (
        WaterReading(ts, frame.total_l, seq=seq),
        (EventMessage(ts, EventType.BATTERY_LOW, frame.battery_low),),
    )


def base64_bytes(value: Any, what: str) -> bytes:
    if type(value) is not str:
        raise PayloadError(reasons.MISSING_FIELD if value is None else reasons.BAD_VALUE, f"{what} (base64)")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(reasons.BAD_VALUE, f"{what} is not base64: {exc}") from exc
