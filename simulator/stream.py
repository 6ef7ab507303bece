"""The traffic as the platform receives it: messages in send order, readings, events.

These walk the span one local day at a time, carrying each meter's register from day to
day, and take from each day's delivered traffic (`simulator.delivery`) what a consumer
asks for:

- `message_batches` the MQTT messages in the order they are sent, encoded a slice at a time,
- `water_readings`  the meter values the platform receives (columnar),
- `received_events` the device events the platform receives.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from lovekey.simulator.delivery import WorldShard, day_traffic, deliver
from lovekey.simulator.district import DAY_S, EVENT_TYPES, DistrictModel, day_start, epoch_s
from lovekey.simulator.meters import MODE_LIST
from lovekey.simulator.population import GAS
from lovekey.simulator.reporting import event_reports
from lovekey.simulator.traffic import (
    WATER,
    WATER_BATCH,
    DayTraffic,
    Encoder,
    MessageTable,
    WaterRows,
    WireMessage,
    tie_breaker,
)
from lovekey.vocabulary import EventType

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

ENCODE_SLICE = 8192
SORT_WINDOWS = 4  # a day's messages are sorted a quarter at a time


@dataclass(frozen=True)
class WaterReadings:
    """Meter values as the platform receives them, sorted by `ts` (then device).

    `device_index` indexes `device_ids` (the water meters, one per resident, in resident
    order); `total_l` is the register as reported: it restarts at a meter swap and has
    gaps where a meter was silent or an outage lost its values. `publish_ts` is when the
    value reaches the broker (late for batches, outages and late messages).
    """

    device_ids: list[str]
    report_interval_s: I32  # per device: expected seconds between messages
    device_index: I32
    ts: I64
    total_l: F64
    battery_v: F64  # NaN where the value was sent without a battery reading
    publish_ts: F64

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """One device event as received: what the event message says, and when it arrives."""

    device_id: str
    type: EventType  # smoke, gas, sos, away, home, battery_low
    active: bool
    ts_s: int  # the event's own time, epoch seconds
    arrival_s: float  # when it reaches the broker
    value: float | None


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """Consecutive messages as parallel columns (`messages()` builds `WireMessage`s from these)."""

    topics: list[str]
    payloads: list[bytes]
    publish_ts: list[float]
    retain: list[bool]

    def __len__(self) -> int:
        return len(self.topics)


def meter_ids(model: DistrictModel) -> list[str]:
    """The water meters' ids, one per resident, in resident order."""
    ids = model.population.device_ids
    return [ids[d] for d in model.population.meter_device.tolist()]


def meter_report_interval_s(model: DistrictModel) -> I32:
    """Expected seconds between a meter's messages, per meter."""
    every = np.array([mode.message_every_s for mode in MODE_LIST], dtype=np.int32)
    return every[model.meters.mode]


def make_encoder(model: DistrictModel) -> Encoder:
    """The topics and payload formats of every device and gateway of the district."""
    pop = model.population
    gateways = pop.gateway_ids
    devices = pop.device_ids
    gw_of = pop.device_gateway.tolist()
    kind = pop.device_kind
    topics = (
        [f"{gateways[g]}/{d}/reading" for g, d in zip(gw_of, devices, strict=True)]
        + [f"{gateways[g]}/{d}/event" for g, d in zip(gw_of, devices, strict=True)]
        + [f"{g}/status" for g in gateways]
    )
    return Encoder(
        topic_table=np.array(topics, dtype=object),
        devices=len(devices),
        meter_epoch=model.meters.epoch_ts,
        meter_m3=model.meters.m3,
        meter_fine=model.meters.fine,
        device_epoch=model.sensors.epoch_ts,
        device_is_gas=kind == GAS,
    )


def water_readings(model: DistrictModel, start: datetime | None, end: datetime | None) -> WaterReadings:
    """Meter values whose `ts` is in [start, end), as the platform receives them."""
    a = -(1 << 62) if start is None else epoch_s(start)
    b = 1 << 62 if end is None else epoch_s(end)
    registers = model.fresh_registers()
    parts: list[tuple[WaterRows, I64]] = []
    everything = WorldShard.of(model.population, 0, 1)
    for day in model.days():
        if day_start(day) >= b + DAY_S:
            break
        traffic = day_traffic(model, day, registers, everything)
        if day_start(day) + 2 * DAY_S < a:
            continue  # the registers carry on; nothing of this day is asked for
        msgs = traffic.everything()
        sent = msgs.publish_ms < model.end_s * 1000
        water = np.nonzero(((msgs.mtype == WATER) | (msgs.mtype == WATER_BATCH)) & sent)[0]
        # a duplicate is one value received twice: keep the first arrival
        order = np.lexsort((msgs.publish_ms[water], msgs.lo[water]))
        water = water[order]
        first = np.ones(len(water), dtype=np.bool_)
        first[1:] = msgs.lo[water][1:] != msgs.lo[water][:-1]
        water = water[first]
        counts = (msgs.hi[water] - msgs.lo[water]).astype(np.int64)
        rows = np.repeat(
            msgs.lo[water].astype(np.int64) - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts
        ) + np.arange(int(counts.sum()))
        arrive = np.repeat(msgs.publish_ms[water], counts)
        picked = traffic.water.take(rows)
        keep = (picked.ts >= a) & (picked.ts < b)
        parts.append((picked.take(keep), arrive[keep]))
    if not parts:
        return WaterReadings(
            meter_ids(model),
            meter_report_interval_s(model),
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            np.zeros(0),
            np.zeros(0),
            np.zeros(0),
        )
    values = WaterRows.concat([p[0] for p in parts])
    arrive = np.concatenate([p[1] for p in parts])
    order = np.lexsort((values.res, values.ts))
    values, arrive = values.take(order), arrive[order]
    return WaterReadings(
        device_ids=meter_ids(model),
        report_interval_s=meter_report_interval_s(model),
        device_index=values.res.astype(np.int32),
        ts=values.ts,
        total_l=values.total_dl / 10.0,
        battery_v=np.where(values.battery_cv >= 0, values.battery_cv / 100.0, np.nan),
        publish_ts=arrive / 1000.0,
    )


def received_events(
    model: DistrictModel, start: datetime | None, end: datetime | None
) -> list[SimulatedEvent]:
    """Device events whose own `ts` is in [start, end), as received, by arrival."""
    a = -(1 << 62) if start is None else epoch_s(start)
    b = 1 << 62 if end is None else epoch_s(end)
    everything = range(len(model.population.device_kind))
    device_ids = model.population.device_ids
    out: list[SimulatedEvent] = []
    for day in model.days():
        rows, msgs = event_reports(model, day, everything)
        if len(rows.ts) == 0:
            continue
        msgs, copies = deliver(model, msgs, day)
        table = MessageTable.concat([msgs, copies])
        for i in np.nonzero(table.publish_ms < model.end_s * 1000)[0].tolist():
            r = int(table.lo[i])
            ts = int(rows.ts[r])
            if a <= ts < b:
                value = float(rows.value[r])
                out.append(
                    SimulatedEvent(
                        device_id=device_ids[int(rows.dev[r])],
                        type=EVENT_TYPES[int(rows.type[r])],
                        active=bool(rows.active[r]),
                        ts_s=ts,
                        arrival_s=int(table.publish_ms[i]) / 1000.0,
                        value=None if math.isnan(value) else value,
                    )
                )
    out.sort(key=lambda e: (e.arrival_s, e.ts_s, e.device_id, e.type))
    return out


def message_batches(
    model: DistrictModel,
    encoder: Encoder,
    start: datetime | None,
    end: datetime | None,
    shard: WorldShard,
) -> Iterator[MessageBatch]:
    """The messages of `shard` sent in [start, end), in send order, a few thousand at a time."""
    a_ms = (model.start_s if start is None else epoch_s(start)) * 1000
    b_ms = (model.end_s if end is None else epoch_s(end)) * 1000
    end_ms = model.end_s * 1000
    registers = model.fresh_registers()
    # Messages sent after the day that made them (daily batches, late, buffered ones)
    # wait here, encoded, with their sort keys.
    pending: list[WireMessage] = []
    pending_publish = np.zeros(0, np.int64)
    pending_tie = np.zeros(0, np.int64)
    for day in model.days():
        day_ms = day_start(day) * 1000
        cutoff_ms = min(day_ms + DAY_S * 1000, end_ms)
        traffic = day_traffic(model, day, registers, shard)
        main, extra = traffic.messages, traffic.extra
        fresh = len(traffic)
        # sorted a quarter of a day at a time, to keep the sort's memory small
        bounds = [day_ms + k * DAY_S * 1000 // SORT_WINDOWS for k in range(1, SORT_WINDOWS)]
        low = -(1 << 62)
        for high in [*bounds, cutoff_ms]:
            lo, hi = max(low, a_ms), min(high, b_ms, cutoff_ms)
            low = high
            if lo >= hi:
                continue
            ours = np.nonzero((main.publish_ms >= lo) & (main.publish_ms < hi))[0]
            extras = np.nonzero((extra.publish_ms >= lo) & (extra.publish_ms < hi))[0]
            theirs = np.nonzero((pending_publish >= lo) & (pending_publish < hi))[0]
            order = np.lexsort(
                (
                    np.concatenate(
                        [tie_breaker(main, ours), tie_breaker(extra, extras), pending_tie[theirs]]
                    ),
                    np.concatenate(
                        [main.publish_ms[ours], extra.publish_ms[extras], pending_publish[theirs]]
                    ),
                )
            )
            positions = np.concatenate([ours, extras + len(main), theirs + fresh])[order]
            del ours, extras, theirs, order
            for i in range(0, len(positions), ENCODE_SLICE):
                yield _encode_mixed(traffic, encoder, positions[i : i + ENCODE_SLICE], fresh, pending)
        later_main = np.nonzero((main.publish_ms >= cutoff_ms) & (main.publish_ms < end_ms))[0]
        later_extra = np.nonzero((extra.publish_ms >= cutoff_ms) & (extra.publish_ms < end_ms))[0]
        later = np.concatenate([later_main, later_extra + len(main)])
        still = np.nonzero(pending_publish >= cutoff_ms)[0]
        pending = [pending[i] for i in still.tolist()] + traffic.encode(encoder, later)
        pending_publish = np.concatenate(
            [pending_publish[still], main.publish_ms[later_main], extra.publish_ms[later_extra]]
        )
        pending_tie = np.concatenate(
            [pending_tie[still], tie_breaker(main, later_main), tie_breaker(extra, later_extra)]
        )
        del traffic, main, extra, later, later_main, later_extra, still
        if cutoff_ms >= b_ms:
            break


def _encode_mixed(
    traffic: DayTraffic, encoder: Encoder, part: I64, fresh: int, pending: list[WireMessage]
) -> MessageBatch:
    """Messages for sorted positions `part`: fresh table rows or already encoded ones."""
    is_fresh = part < fresh
    if is_fresh.all():
        return MessageBatch(*traffic.encode_columns(encoder, part.astype(np.int64)))
    encoded = iter(traffic.encode(encoder, part[is_fresh].astype(np.int64)))
    messages = [
        next(encoded) if f else pending[int(j) - fresh]
        for f, j in zip(is_fresh.tolist(), part.tolist(), strict=True)
    ]
    return MessageBatch(
        topics=[m.topic for m in messages],
        payloads=[m.payload for m in messages],
        publish_ts=[m.publish_ts for m in messages],
        retain=[m.retain for m in messages],
    )
