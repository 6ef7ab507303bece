"""From decoded messages and the registry to the rows of one batch: the pure core of ingest.

`plan_batch` decides, message by message, what is stored and what is rejected and why; it
does no I/O and reads no clock. The writer (`ingest.writer`) turns the plan into one
transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import parse_topic
from lovekey.ingest.decoded import DecodedMessage, SensorReading, WaterReading
from lovekey.vocabulary import DeviceKind

# Row layouts, in the column order of the staging tables (see ingest.writer).
WaterRow = tuple[datetime, float, int, float | None, float | None]
SensorRow = tuple[datetime, int, float | None, float | None, float | None, float | None]
EventRow = tuple[datetime, int, str, bool, float | None]
# topic, gateway_id, device_id, reason, detail, payload (cut), payload size in bytes
RejectRow = tuple[str, str | None, str | None, str, str, bytes, int]

# The bad rows of one batch message make one rejected_input row, whose detail lists the
# first few of them (each cut to a line): what one message can write there is bounded.
MAX_LISTED_ROW_ERRORS = 5
MAX_ROW_ERROR_CHARS = 200


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One registered device as the ingester checks messages against it."""

    key: int
    gateway_id: str
    kind: str  # a DeviceKind value as the registry stores it
    resident_id: str | None
    household_id: str


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message as the planner sees it: where it came from, its bytes, what they decoded to."""

    topic: str
    payload: bytes
    decoded: DecodedMessage | PayloadError


@dataclass(slots=True)
class BatchPlan:
    seen_at: datetime
    water: list[WaterRow] = field(default_factory=list)
    sensor: list[SensorRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    rejected: list[RejectRow] = field(default_factory=list)
    # device key -> battery of its newest reading in the batch that had one (else None)
    devices_seen: dict[int, float | None] = field(default_factory=dict)
    # gateway id -> online/offline from its last status message in the batch (else None)
    gateways_seen: dict[str, bool | None] = field(default_factory=dict)
    # epoch seconds of every accepted reading and event, for the lag metric
    accepted_ts: list[float] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.water) + len(self.sensor) + len(self.events)


def plan_batch(
    messages: Sequence[ReceivedMessage],
    devices: Mapping[str, DeviceEntry],
    gateways: Set[str],
    *,
    topic_prefix: str,
    now: datetime,
    keep_bytes: int,
) -> BatchPlan:
    """Rows to store, rows to reject, and what was seen, for `messages` in arrival order.

    A message from an unknown device, or through a gateway the device is not registered
    to, is rejected whole; in a batch, rows that do not fit the device are rejected one
    by one. Device and gateway `last_seen` become `now` for every accepted message.
    """
    plan = BatchPlan(seen_at=now)
    battery_ts: dict[int, datetime] = {}
    for message in messages:
        decoded = message.decoded
        if isinstance(decoded, PayloadError):
            _reject(plan, message, decoded, keep_bytes, topic_prefix)
            continue
        gateway_id = decoded.gateway_id
        # gateway status names no device: only the gateway must be registered
        if decoded.kind == "status":
            if gateway_id in gateways:
                plan.gateways_seen[gateway_id] = decoded.status == "online"
            else:
                error = PayloadError(reasons.UNKNOWN_GATEWAY, gateway_id)
                _reject(plan, message, error, keep_bytes, topic_prefix)
            continue
        device_id = decoded.device_id
        assert device_id is not None  # readings and events always name their device
        entry = devices.get(device_id)
        if entry is None:
            error = PayloadError(reasons.UNKNOWN_DEVICE, device_id)
            _reject(plan, message, error, keep_bytes, topic_prefix)
            continue
        if entry.gateway_id != gateway_id:
            error = PayloadError(
                reasons.WRONG_GATEWAY,
                f"{device_id} is registered to {entry.gateway_id}, not {gateway_id}",
            )
            _reject(plan, message, error, keep_bytes, topic_prefix)
            continue
        # heard from, with no status change (None), unless a status message says otherwise
        plan.gateways_seen.setdefault(gateway_id, None)
        if _add_rows(plan, message, decoded, entry, battery_ts, keep_bytes, topic_prefix):
            plan.devices_seen.setdefault(entry.key, None)
    return plan


def _add_rows(
    plan: BatchPlan,
    message: ReceivedMessage,
    decoded: DecodedMessage,
    entry: DeviceEntry,
    battery_ts: dict[int, datetime],
    keep_bytes: int,
    topic_prefix: str,
) -> int:
    """Add the rows of one registered device's message; returns how many were accepted."""
    key = entry.key
    is_meter = entry.kind == DeviceKind.WATER_METER
    misfits: list[tuple[int, PayloadError]] = []
    for position, reading in enumerate(decoded.readings):
        misfit = _misfit(reading, entry.kind, is_meter)
        if misfit is not None:
            misfits.append((position, misfit))
    # a single reading that does not fit its device rejects the message whole (its bytes
    # are the evidence); in a batch only the misfit rows go, in one row for the message
    if misfits and not decoded.batch:
        _reject(plan, message, misfits[0][1], keep_bytes, topic_prefix)
        return 0
    accepted = 0
    for event in decoded.events:
        plan.events.append((event.ts, key, event.type, event.active, event.value))
        plan.accepted_ts.append(event.ts.timestamp())
        accepted += 1
    skip = {position for position, _ in misfits}
    for position, reading in enumerate(decoded.readings):
        if position in skip:
            continue
        if isinstance(reading, WaterReading):
            plan.water.append((reading.ts, reading.total_l, key, reading.flow_lpm, reading.battery_v))
        else:
            plan.sensor.append(
                (
                    reading.ts,
                    key,
                    reading.gas_lel_pct,
                    reading.smoke,
                    reading.temperature_c,
                    reading.battery_v,
                )
            )
        plan.accepted_ts.append(reading.ts.timestamp())
        accepted += 1
        # readings arrive out of order: the battery kept is that of the newest reading
        if reading.battery_v is not None:
            newest = battery_ts.get(key)
            if newest is None or reading.ts >= newest:
                battery_ts[key] = reading.ts
                plan.devices_seen[key] = reading.battery_v
    row_errors = list(decoded.row_errors)
    if misfits:
        row_errors += _original_indices(decoded, misfits)
    if row_errors:
        _reject_rows(plan, message, decoded, sorted(row_errors, key=lambda e: e[0]), keep_bytes)
    return accepted


def _misfit(reading: WaterReading | SensorReading, kind: str, is_meter: bool) -> PayloadError | None:
    if isinstance(reading, WaterReading):
        if is_meter:
            return None
        return PayloadError(reasons.WRONG_KIND, f"a meter reading from a {kind} device")
    if not is_meter:
        return None
    if reading.gas_lel_pct is None and reading.smoke is None and reading.temperature_c is None:
        return PayloadError(reasons.MISSING_FIELD, "a water meter reading needs total_l")
    return PayloadError(reasons.WRONG_KIND, "a sensor reading from a water_meter device")


def _original_indices(
    decoded: DecodedMessage, misfits: list[tuple[int, PayloadError]]
) -> list[tuple[int, PayloadError]]:
    """Positions in `.readings` back to indices in the batch as sent (bad rows left out)."""
    dropped = {index for index, _ in decoded.row_errors}
    total = len(decoded.readings) + len(dropped)
    kept = [index for index in range(total) if index not in dropped]
    return [(kept[position], error) for position, error in misfits]


def _reject(
    plan: BatchPlan, message: ReceivedMessage, error: PayloadError, keep_bytes: int, topic_prefix: str
) -> None:
    gateway_id, device_id = _ids(message, topic_prefix)
    plan.rejected.append(
        (
            message.topic,
            gateway_id,
            device_id,
            error.reason,
            error.detail,
            message.payload[:keep_bytes],
            len(message.payload),
        )
    )


def _reject_rows(
    plan: BatchPlan,
    message: ReceivedMessage,
    decoded: DecodedMessage,
    errors: list[tuple[int, PayloadError]],
    keep_bytes: int,
) -> None:
    """One rejected_input row for the bad rows of a batch, however many there are.

    Its reason is the first bad row's; its detail counts them and lists the first
    `MAX_LISTED_ROW_ERRORS`; the message's bytes are kept once, cut to `keep_bytes`. So a
    message can never write more than one row here (30,000 junk rows once wrote 30,000).
    """
    total = len(decoded.readings) + len(decoded.row_errors)
    listed = "; ".join(
        f"readings[{index}]: {error.reason}: {error.detail}"[:MAX_ROW_ERROR_CHARS]
        for index, error in errors[:MAX_LISTED_ROW_ERRORS]
    )
    detail = f"{len(errors)} of {total} readings rejected: {listed}"
    if len(errors) > MAX_LISTED_ROW_ERRORS:
        detail += f"; and {len(errors) - MAX_LISTED_ROW_ERRORS} more"
    plan.rejected.append(
        (
            message.topic,
            decoded.gateway_id,
            decoded.device_id,
            errors[0][1].reason,
            detail,
            message.payload[:keep_bytes],
            len(message.payload),
        )
    )


def _ids(message: ReceivedMessage, topic_prefix: str) -> tuple[str | None, str | None]:
    decoded = message.decoded
    if isinstance(decoded, DecodedMessage):
        return decoded.gateway_id, decoded.device_id
    try:
        topic = parse_topic(topic_prefix, message.topic)
    except PayloadError:
        return None, None
    return topic.gateway_id, topic.device_id
