"""From decoded messages and the registry to the rows of one batch: the pure core of ingest.

`plan_batch` decides, message by message, what is stored and what is rejected and why; it
does no I/O and reads no clock. The writer (`ingest.writer`) turns the plan into one
transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import parse_topic
from lovekey.ingest.decoded import DecodedMessage, SensorReading, WaterReading
from lovekey.ingest.last_totals import LastTotals
from lovekey.vocabulary import EVENTS_BY_DEVICE_KIND, DeviceKind

# Row layouts, in the column order of the staging tables (see ingest.writer).
WaterRow = tuple[datetime, float, int, float | None, float | None]
SensorRow = tuple[datetime, int, float | None, float | None, float | None, float | None]
EventRow = tuple[datetime, int, str, bool, float | None]
# topic, gateway_id, device_id, reason, detail, payload (cut), payload size in bytes
RejectRow = tuple[str, str | None, str | None, str, str, bytes, int]
# the source a rejected row came by and the device's id there, row for row with `rejected`
RejectOrigin = tuple[str | None, str | None]
# a state snapshot's level, in the layout of an event row: stored where it changes (the writer)
LevelRow = EventRow

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
    """One message as the planner sees it: where it came from, its bytes, what they decoded to.

    `source` names the configured source (`[[sources]]`) it came by; None: not known.
    """

    topic: str
    payload: bytes
    decoded: DecodedMessage | PayloadError
    source: str | None = None


@dataclass(slots=True)
class BatchPlan:
    seen_at: datetime
    water: list[WaterRow] = field(default_factory=list)
    sensor: list[SensorRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    # state snapshots turned into event rows where they change (see `_add_levels`)
    levels: list[LevelRow] = field(default_factory=list)
    rejected: list[RejectRow] = field(default_factory=list)
    rejected_origin: list[RejectOrigin] = field(default_factory=list)
    # device key -> battery of its newest reading in the batch that had one (else None)
    devices_seen: dict[int, float | None] = field(default_factory=dict)
    # gateway id -> online/offline from its last status message in the batch (else None)
    gateways_seen: dict[str, bool | None] = field(default_factory=dict)
    # epoch seconds of every accepted reading and event, for the lag metric
    accepted_ts: list[float] = field(default_factory=list)
    # epoch seconds of each row of `water`, in its order (for the plausibility check)
    water_ts_s: list[float] = field(default_factory=list)
    # every meter reading judged for plausibility, stored or not: (device keys, epoch
    # seconds, totals), for the caller to remember once the plan is committed
    judged: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

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
    max_flow_lpm: float | None = None,
    last_totals: LastTotals | None = None,
    external: Mapping[tuple[str, str], str] | None = None,
) -> BatchPlan:
    """Rows to store, rows to reject, and what was seen, for `messages` in arrival order.

    A message from an unknown device, or through a gateway the device is not registered
    to, is rejected whole; in a batch, rows that do not fit the device are rejected
    together, in one row for the message. Device and gateway `last_seen` become `now`
    for every accepted message. With `max_flow_lpm`, a meter reading whose total rose
    faster than that since the meter's previous reading (in the batch, or the newest in
    `last_totals`) is rejected as `implausible_jump` (see `implausible_rises`).

    A source's message (`decoded.external`) names its device by its id at the source:
    `external` maps (gateway id, that id in lower case) to the registered device's id.
    """
    plan = BatchPlan(seen_at=now)
    battery_ts: dict[int, datetime] = {}
    # bad rows of batch messages, by message position: rejected after the plausibility check
    row_errors: dict[int, tuple[ReceivedMessage, DecodedMessage, list[tuple[int, PayloadError]]]] = {}
    # (message position, first row in plan.water) of each message that added meter rows
    water_starts: list[tuple[int, int]] = []
    for position, message in enumerate(messages):
        decoded = message.decoded
        if isinstance(decoded, PayloadError):
            _reject(plan, message, decoded, keep_bytes, topic_prefix)
            continue
        gateway_id = decoded.gateway_id
        # gateway status names no device: only the gateway must be registered
        if decoded.kind == "status":
            if gateway_id in gateways:
                if decoded.status is None:  # a source's sign of life: heard from, no change
                    plan.gateways_seen.setdefault(gateway_id, None)
                else:
                    plan.gateways_seen[gateway_id] = decoded.status == "online"
            else:
                error = PayloadError(reasons.UNKNOWN_GATEWAY, gateway_id)
                _reject(plan, message, error, keep_bytes, topic_prefix)
            continue
        device_id = decoded.device_id
        assert device_id is not None  # readings and events always name their device
        if decoded.external:
            registered = (external or {}).get((gateway_id, device_id.lower()))
            if registered is None:
                error = PayloadError(
                    reasons.UNKNOWN_DEVICE,
                    f"no device of gateway {gateway_id} has external_id {device_id[:64]!r}",
                )
                _reject(plan, message, error, keep_bytes, topic_prefix)
                continue
            device_id = registered
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
        misfit = _event_misfit(decoded, entry)
        if misfit is not None:
            _reject(plan, message, misfit, keep_bytes, topic_prefix)
            continue
        first_water, rows_before = len(plan.water), plan.rows
        errors = _add_rows(plan, message, decoded, entry, battery_ts, keep_bytes, topic_prefix)
        if errors is None:
            continue  # rejected whole
        if decoded.levels:
            _add_levels(plan, decoded, entry)
        if plan.rows > rows_before or decoded.levels:
            plan.devices_seen.setdefault(entry.key, None)
        if len(plan.water) > first_water:
            water_starts.append((position, first_water))
        if errors:
            row_errors[position] = (message, decoded, errors)
    if max_flow_lpm is not None and plan.water:
        _reject_implausible(plan, messages, water_starts, row_errors, max_flow_lpm, last_totals)
    for position in sorted(row_errors):
        message, decoded, errors = row_errors[position]
        if decoded.batch:
            _reject_rows(plan, message, decoded, sorted(errors, key=lambda e: e[0]), keep_bytes)
        else:
            _reject(plan, message, errors[0][1], keep_bytes, topic_prefix)
    return plan


def implausible_rises(
    keys: np.ndarray,
    ts_s: np.ndarray,
    total_l: np.ndarray,
    known_ts_s: np.ndarray,
    known_total_l: np.ndarray,
    max_flow_lpm: float,
) -> np.ndarray:
    """Which readings show a total that rose faster than `max_flow_lpm` (a boolean mask).

    Each reading of `keys`/`ts_s`/`total_l` is judged against the meter's nearest earlier
    reading: among these, or the known one (`known_*`, per reading, NaN when none), which
    counts as earlier at an equal time (a redelivery is no rise). Time spans count at least
    a minute (a meter's clock ticks in seconds, its register in litres). A total that goes
    back is a meter swap or a rollover, never a jump; a judged reading stays the meter's
    previous one for the next, so after a meter is swapped for one that reads higher, one
    reading is rejected and the next, rising slowly from it, is stored.
    """
    n = keys.size
    have = ~np.isnan(known_ts_s)
    all_keys = np.concatenate([keys, keys[have]])
    all_ts = np.concatenate([ts_s, known_ts_s[have]])
    all_total = np.concatenate([total_l, known_total_l[have]])
    is_row = np.concatenate([np.ones(n, np.bool_), np.zeros(int(have.sum()), np.bool_)])
    # by meter, then time; the known reading before a batch row of the same time
    order = np.lexsort((is_row, all_ts, all_keys))
    k, t, v, row = all_keys[order], all_ts[order], all_total[order], is_row[order]
    span_min = np.maximum((t[1:] - t[:-1]) / 60.0, 1.0)
    too_fast = (k[1:] == k[:-1]) & (v[1:] - v[:-1] > max_flow_lpm * span_min) & row[1:]
    mask = np.zeros(n, np.bool_)
    mask[order[1:][too_fast]] = True  # rows come first in the concatenation: same positions
    return mask


def _reject_implausible(
    plan: BatchPlan,
    messages: Sequence[ReceivedMessage],
    water_starts: list[tuple[int, int]],
    row_errors: dict[int, tuple[ReceivedMessage, DecodedMessage, list[tuple[int, PayloadError]]]],
    max_flow_lpm: float,
    last_totals: LastTotals | None,
) -> None:
    """Take the meter rows that rose impossibly fast out of the plan, as bad rows of their message."""
    n = len(plan.water)
    keys = np.fromiter((row[2] for row in plan.water), np.int64, n)
    ts_s = np.asarray(plan.water_ts_s)
    total_l = np.fromiter((row[1] for row in plan.water), np.float64, n)
    if last_totals is None:
        known_ts_s = known_total_l = np.full(n, np.nan)
    else:
        known_ts_s, known_total_l = last_totals.lookup(keys)
    plan.judged = (keys, ts_s, total_l)
    bad = np.flatnonzero(implausible_rises(keys, ts_s, total_l, known_ts_s, known_total_l, max_flow_lpm))
    if bad.size == 0:
        return
    # only the (rare) rejected rows are traced back to their message, in Python
    starts = np.array([start for _, start in water_starts])
    refused_before = {position: {i for i, _ in errors} for position, (_, _, errors) in row_errors.items()}
    for row_index in bad.tolist():
        which = int(np.searchsorted(starts, row_index, side="right")) - 1
        position, start = water_starts[which]
        message = messages[position]
        decoded = message.decoded
        assert isinstance(decoded, DecodedMessage)
        index = _reading_index(decoded, refused_before.get(position, set()), row_index - start)
        reading = plan.water[row_index]
        error = PayloadError(
            reasons.IMPLAUSIBLE_JUMP,
            f"total_l {reading[1]:g} at {reading[0].isoformat()} rose faster than"
            f" {max_flow_lpm:g} L/min since the meter's previous reading",
        )
        row_errors.setdefault(position, (message, decoded, []))[2].append((index, error))
    drop = set(bad.tolist())
    plan.water = [row for i, row in enumerate(plan.water) if i not in drop]
    plan.water_ts_s = [t for i, t in enumerate(plan.water_ts_s) if i not in drop]


def _reading_index(decoded: DecodedMessage, refused: set[int], nth_water: int) -> int:
    """The index, in the batch as sent, of a message's `nth_water` stored meter row.

    `refused`: the indices of the message's rows refused before the plausibility check.
    """
    total = len(decoded.readings) + len(decoded.row_errors)
    stored = (index for index in range(total) if index not in refused)
    # meter rows are stored in order; a sensor row in a meter's batch is a misfit (refused)
    for _ in range(nth_water):
        next(stored)
    return next(stored)


def _add_rows(
    plan: BatchPlan,
    message: ReceivedMessage,
    decoded: DecodedMessage,
    entry: DeviceEntry,
    battery_ts: dict[int, datetime],
    keep_bytes: int,
    topic_prefix: str,
) -> list[tuple[int, PayloadError]] | None:
    """Add the rows of one registered device's message.

    Returns its bad rows (indices in the batch as sent) for the caller to reject, or None
    when the message was rejected whole.
    """
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
        return None
    for event in decoded.events:
        plan.events.append((event.ts, key, event.type, event.active, event.value))
        plan.accepted_ts.append(event.ts.timestamp())
    skip = {position for position, _ in misfits}
    for position, reading in enumerate(decoded.readings):
        if position in skip:
            continue
        ts_s = reading.ts.timestamp()
        if isinstance(reading, WaterReading):
            plan.water.append((reading.ts, reading.total_l, key, reading.flow_lpm, reading.battery_v))
            plan.water_ts_s.append(ts_s)
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
        plan.accepted_ts.append(ts_s)
        # readings arrive out of order: the battery kept is that of the newest reading
        if reading.battery_v is not None:
            newest = battery_ts.get(key)
            if newest is None or reading.ts >= newest:
                battery_ts[key] = reading.ts
                plan.devices_seen[key] = reading.battery_v
    row_errors = list(decoded.row_errors)
    if misfits:
        row_errors += _original_indices(decoded, misfits)
    return row_errors


def _add_levels(plan: BatchPlan, decoded: DecodedMessage, entry: DeviceEntry) -> None:
    """A state snapshot's levels, for the writer to store where they change.

    Whether a level is a change is decided against every state known before it, stored or
    in this batch, whatever order they arrived in: the writer does it in one statement
    (`ingest.writer`), so a repeated snapshot, a redelivery, a late one or a restart raises
    nothing. Types the device's kind cannot raise were checked to be inactive; they are left out.
    """
    key = entry.key
    allowed = EVENTS_BY_DEVICE_KIND.get(entry.kind, frozenset())  # type: ignore[call-overload]
    for level in decoded.levels:
        if level.type in allowed:
            plan.levels.append((level.ts, key, level.type, level.active, level.value))
            plan.accepted_ts.append(level.ts.timestamp())


def _event_misfit(decoded: DecodedMessage, entry: DeviceEntry) -> PayloadError | None:
    """An event its device's kind cannot produce (a water meter's `sos`), else None.

    Checked before anything of the message is used: an `away` from a meter must not mark
    anyone away, a `smoke` from a gas detector must not raise a smoke alert.
    """
    # a StrEnum key is found by its plain string value (`entry.kind` as the registry stores it)
    allowed = EVENTS_BY_DEVICE_KIND.get(entry.kind, frozenset())  # type: ignore[call-overload]
    for event in decoded.events:
        if event.type not in allowed:
            detail = f"a {entry.kind} device cannot send {event.type.value!r} events"
            return PayloadError(reasons.WRONG_KIND, detail)
    # a snapshot may carry every field its model has: an inactive level of a type the
    # device's kind cannot raise says nothing, an active one is a misregistered device
    for level in decoded.levels:
        if level.type not in allowed and level.active:
            detail = f"a {entry.kind} device cannot raise {level.type.value!r}"
            return PayloadError(reasons.WRONG_KIND, detail)
    return None


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
    external_id = None
    decoded = message.decoded
    if isinstance(decoded, DecodedMessage) and decoded.external:
        device_id, external_id = None, decoded.device_id
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
    plan.rejected_origin.append((message.source, external_id))


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
            None if decoded.external else decoded.device_id,
            errors[0][1].reason,
            detail,
            message.payload[:keep_bytes],
            len(message.payload),
        )
    )
    plan.rejected_origin.append((message.source, decoded.device_id if decoded.external else None))


def _ids(message: ReceivedMessage, topic_prefix: str) -> tuple[str | None, str | None]:
    decoded = message.decoded
    if isinstance(decoded, DecodedMessage):
        return decoded.gateway_id, decoded.device_id
    if message.source is not None and not message.topic.startswith(topic_prefix):
        return None, None  # a source's topic: not the native contract's levels
    try:
        topic = parse_topic(topic_prefix, message.topic)
    except PayloadError:
        return None, None
    return topic.gateway_id, topic.device_id
