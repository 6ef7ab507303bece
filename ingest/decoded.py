"""What a decoded MQTT message is: frozen, slotted values at the boundary of the ingester."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from lovekey.errors import PayloadError
from lovekey.vocabulary import EventType

MessageKind = Literal["reading", "event", "status"]
GatewayStatus = Literal["online", "offline"]


@dataclass(frozen=True, slots=True)
class WaterReading:
    """One cumulative meter value; `total_l` may go backwards (swap, rollover)."""

    ts: datetime
    total_l: float
    flow_lpm: float | None = None
    battery_v: float | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class SensorReading:
    """A smoke/gas detector value, or a battery-only heartbeat of any non-meter device."""

    ts: datetime
    gas_lel_pct: float | None = None
    smoke: float | None = None
    temperature_c: float | None = None
    battery_v: float | None = None


Reading = WaterReading | SensorReading


@dataclass(frozen=True, slots=True)
class EventMessage:
    """What one message on `.../{device}/event` says: an alarm, a button, a device fault."""

    ts: datetime
    type: EventType
    active: bool
    value: float | None = None


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """One MQTT message after decoding, before the registry is consulted.

    `row_errors` holds `(index, error)` for rows of a batch that were rejected while the
    others are in `readings`; `device_id` is None for gateway status, and a status of None
    says only that the gateway was heard from (a source's bookkeeping message).

    A message of a configured source (`ingest.sources`) says `external=True`: its
    `device_id` is the device's id at the source (DevEUI, IMEI, ...), looked up in the
    registry's `external_id` column among the devices of `gateway_id`. Sources that report
    state rather than events (Zigbee2MQTT) give `levels`: each is stored as an event only
    when it differs from the device's previous level of that type (false -> true raises
    once; a repeated snapshot is nothing new).
    """

    kind: MessageKind
    gateway_id: str
    device_id: str | None
    readings: tuple[Reading, ...] = ()
    events: tuple[EventMessage, ...] = ()
    status: GatewayStatus | None = None
    row_errors: tuple[tuple[int, PayloadError], ...] = ()
    batch: bool = False  # the payload was {"readings": [...]}
    external: bool = False  # device_id is the source's id for the device
    levels: tuple[EventMessage, ...] = ()  # states: stored as events when they change
