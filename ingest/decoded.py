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
    others are in `readings`; `device_id` is None for gateway status.
    """

    kind: MessageKind
    gateway_id: str
    device_id: str | None
    readings: tuple[Reading, ...] = ()
    events: tuple[EventMessage, ...] = ()
    status: GatewayStatus | None = None
    row_errors: tuple[tuple[int, PayloadError], ...] = ()
    batch: bool = False  # the payload was {"readings": [...]}
