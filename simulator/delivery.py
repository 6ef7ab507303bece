"""What the network does to the devices' messages, and a day's traffic put together.

`deliver` applies the incidents of the transport to a table of messages: a silent meter's
messages are never sent, a gateway outage loses its devices' messages or holds them until
it is back (buffered), late messages arrive after a delay and duplicated ones twice.
`day_traffic` runs the model and the devices' reporting for one local day and delivers it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lovekey.simulator import rand
from lovekey.simulator.district import CHUNK_RESIDENTS, DAY_S, DistrictModel, Registers
from lovekey.simulator.incidents import Planned
from lovekey.simulator.meters import MODE_LIST
from lovekey.simulator.population import Population
from lovekey.simulator.reporting import (
    empty_water,
    event_reports,
    gateway_statuses,
    meter_reports,
    mode_slots,
    sensor_reports,
)
from lovekey.simulator.traffic import NEVER_MS, STATUS, DayTraffic, MessageTable, WaterRows, empty_messages

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class WorldShard:
    """A contiguous block of gateways with their residents and devices: `k` of `n`.

    Shards split the traffic between publishing processes; each gateway's messages stay
    in one shard, in order.
    """

    gateways: range
    residents: range
    devices: range

    @classmethod
    def of(cls, population: Population, k: int, n: int) -> WorldShard:
        if not 0 <= k < n:
            raise ValueError(f"shard {k} of {n} does not exist")
        g = population.gateway_count
        g0, g1 = g * k // n, g * (k + 1) // n
        r0, r1 = np.searchsorted(population.resident_building, [g0, g1]).tolist()
        bounds = np.append(population.meter_device, len(population.device_kind))
        return cls(range(g0, g1), range(r0, r1), range(int(bounds[r0]), int(bounds[r1])))


def day_traffic(model: DistrictModel, day: int, registers: Registers, shard: WorldShard) -> DayTraffic:
    """All traffic of local day `day`, transport effects applied, unsorted.

    The meters' values and messages (most of a day) are written in place into tables
    sized in advance, chunk by chunk, so a day never exists twice in memory.
    """
    chunks = [
        (r0, min(shard.residents.stop, r0 + CHUNK_RESIDENTS))
        for r0 in range(shard.residents.start, shard.residents.stop, CHUNK_RESIDENTS)
    ]
    slots = [mode_slots(model, day, mode) for mode in MODE_LIST]
    per_mode_rows = np.array([len(s) for s, _ in slots])
    per_mode_msgs = np.array(
        [
            len(s) if not mode.batch else len(np.unique(s // mode.per_message))
            for (s, _), mode in zip(slots, MODE_LIST, strict=True)
        ]
    )
    counts = [np.bincount(model.meters.mode[r0:r1], minlength=len(MODE_LIST)) for r0, r1 in chunks]
    water: WaterRows | None = None
    messages: MessageTable | None = None
    total_rows = int(sum(c @ per_mode_rows for c in counts))
    total_msgs = int(sum(c @ per_mode_msgs for c in counts))
    extra: list[MessageTable] = []
    row_at = msg_at = 0
    for r0, r1 in chunks:
        usage = model.usage(day, r0, r1)
        rows, msgs = meter_reports(model, day, r0, r1, usage, registers)
        del usage
        msgs, copies = deliver(model, _shift(msgs, row_at), day)
        extra.append(copies)
        if water is None or messages is None:
            water = WaterRows.allocate(rows, total_rows)
            messages = MessageTable.allocate(msgs, total_msgs)
        water.put(row_at, rows)
        messages.put(msg_at, msgs)
        row_at += len(rows)
        msg_at += len(msgs)
    if water is None or messages is None:
        water, messages = empty_water(), empty_messages()
    assert (row_at, msg_at) == (len(water), len(messages)), "table sizes were mis-counted"
    sensors, sensor_msgs = sensor_reports(model, day, shard.devices)
    events, event_msgs = event_reports(model, day, shard.devices)
    for part in (sensor_msgs, event_msgs):
        part, copies = deliver(model, part, day)
        extra += [part, copies]
    extra.append(gateway_statuses(model, day, shard.gateways))
    return DayTraffic(
        water=water,
        sensors=sensors,
        events=events,
        messages=messages,
        extra=MessageTable.concat(extra),
        origin_s=model.start_s,
    )


def deliver(model: DistrictModel, messages: MessageTable, day: int) -> tuple[MessageTable, MessageTable]:
    """Silent meters, gateway outages, late and duplicated messages.

    Works in place: a message that is never sent gets `NEVER_MS` as its send time, so
    the table keeps its size. Returns the table and the duplicates (a new table).
    """
    if len(messages) == 0:
        return messages, messages
    lo_ms = int(messages.publish_ms.min())
    hi_ms = int(messages.publish_ms.max())
    publish = messages.publish_ms
    is_device = messages.mtype != STATUS
    gateway = model.population.device_gateway[messages.dev]

    def window(plan: Planned) -> tuple[int, int]:
        return plan.start_s * 1000, plan.end_or(model.end_s + 10 * DAY_S) * 1000

    def touched(plans: list[Planned], column: I32, subject: str) -> list[tuple[Planned, I64]]:
        """The device messages each of `plans` acts on (by device or by gateway)."""
        live = [p for p in plans if window(p)[0] <= hi_ms and window(p)[1] > lo_ms]
        if not live:
            return []
        ids = np.array([getattr(p, subject) for p in live])
        candidates = np.nonzero(np.isin(column, ids) & is_device)[0]
        out = []
        for plan in live:
            a, b = window(plan)
            rows = candidates[column[candidates] == getattr(plan, subject)]
            rows = rows[(publish[rows] >= a) & (publish[rows] < b)]
            out.append((plan, rows))
        return out

    silenced = [rows for _, rows in touched(model.of_kind("meter_silent"), messages.dev, "device")]
    for plan, rows in touched(model.of_kind("gateway_outage"), gateway, "gateway"):
        if plan.params.get("buffered") and plan.end_s is not None:
            # held by the gateway, and flushed within a minute of its coming back
            spread = np.floor(60_000 * rand.uniform(model.seed, "outage.flush", rows, day=day))
            publish[rows] = plan.end_s * 1000 + 1000 + spread.astype(np.int64)
        else:
            silenced.append(rows)
    for rows in silenced:
        publish[rows] = NEVER_MS
    for plan, rows in touched(model.of_kind("late_messages"), messages.dev, "device"):
        rows = rows[publish[rows] != NEVER_MS]
        publish[rows] += int(plan.params["delay_s"] * 1000)
    copies = [empty_messages()]
    for plan, rows in touched(model.of_kind("duplicate_messages"), messages.dev, "device"):
        part = messages.take(rows[publish[rows] != NEVER_MS])
        part.publish_ms[:] += int(plan.params["delay_s"] * 1000)
        copies.append(part)
    return messages, MessageTable.concat(copies)


def _shift(messages: MessageTable, rows: int) -> MessageTable:
    """`messages` pointing `rows` further into their table (a chunk's place in the day)."""
    if rows == 0:
        return messages
    return MessageTable(
        publish_ms=messages.publish_ms,
        mtype=messages.mtype,
        dev=messages.dev,
        t=messages.t,
        lo=messages.lo + rows,
        hi=messages.hi + rows,
    )
