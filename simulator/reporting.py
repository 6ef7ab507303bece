"""How the devices report the model: the values they send and when they send them.

The model (`simulator.district`) says what a meter's register reads each minute and what the
detectors sense; here a device samples it on its own schedule and clock. A meter reports in
its mode (every minute, every 15 minutes, or frozen values batched hourly, four times a day
or daily), stamps each value with its own clock (a fixed offset per meter plus a little
jitter), sends a battery voltage and a message counter, and its message reaches the broker
after a latency. Detectors send heartbeat readings (and one more when an alarm starts);
buttons and alarms send events; each gateway says `online`, and `offline` during an outage.

Each function returns columnar rows and a `MessageTable` that points into them; what the
network then does to the messages is `simulator.delivery`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lovekey.simulator import rand
from lovekey.simulator.district import DAY_S, DistrictModel, EventRows, Registers, day_start
from lovekey.simulator.incidents import LOCAL_OFFSET_S
from lovekey.simulator.meters import MODE_LIST, Mode
from lovekey.simulator.population import GAS, SMOKE
from lovekey.simulator.traffic import (
    EVENT,
    NONE,
    SENSOR,
    STATUS,
    WATER,
    WATER_BATCH,
    MessageTable,
    SensorRows,
    WaterRows,
    empty_messages,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def mode_slots(model: DistrictModel, day: int, mode: Mode) -> tuple[I64, I64]:
    """Slot numbers and sampling times of `mode` on `day` that fall in the simulation."""
    slots = np.arange(DAY_S // mode.interval_s)
    t_slot = day_start(day) + slots * mode.interval_s
    keep = (t_slot >= model.start_s) & (t_slot < model.end_s)
    return slots[keep], t_slot[keep]


def meter_reports(
    model: DistrictModel, day: int, r0: int, r1: int, usage: F32, registers: Registers
) -> tuple[WaterRows, MessageTable]:
    """Frozen values and messages of meters r0..r1-1 on `day`; advances `registers`."""
    meters, seed, scenario = model.meters, model.seed, model.scenario
    start = day_start(day)
    register, previous_minute = model.advance(day, r0, r1, usage, registers)

    water_parts, message_parts = [], []
    offset_rows = 0
    local_mode = meters.mode[r0:r1]
    for mode_index, mode in enumerate(MODE_LIST):
        sel = np.nonzero(local_mode == mode_index)[0]
        if len(sel) == 0:
            continue
        slots, t_slot = mode_slots(model, day, mode)
        if len(slots) == 0:
            continue
        minutes = slots * (mode.interval_s // 60)
        values = register[np.ix_(sel, minutes)]
        res = (r0 + sel).astype(np.int32)
        fine = meters.fine[res][:, None]
        total_dl = np.where(fine, np.floor(values * 10.0), np.floor(values) * 10.0).astype(np.int64)
        k = len(slots)
        res_rows = np.repeat(res, k)
        t_rows = np.tile(t_slot, len(sel))
        t_since = (t_rows - model.start_s).astype(np.int32)
        # the meter's clock: its own offset, and a little jitter on each reading
        key = (res_rows.astype(np.int64) << 12) | np.tile(minutes, len(sel))
        jitter = np.floor(
            rand.uniform(seed, "meter.jitter", key, day=day) * (scenario.meters.jitter_s + 1)
        ).astype(np.int64)
        ts_rows = t_rows + meters.clock_offset_s[res_rows] + jitter
        battery, seq = model.meter_state(res_rows, t_rows, mode.interval_s)
        battery_cv = np.round(np.maximum(battery, 0.0) * 100).astype(np.int16)
        if mode.flow:
            before = np.where(
                minutes[None, :] > 0,
                usage[np.ix_(sel, np.maximum(minutes - 1, 0))],
                previous_minute[sel][:, None],
            )
            flow_cl = np.round(before.ravel() * 100).astype(np.int32)
        else:
            flow_cl = np.full(len(res_rows), NONE, dtype=np.int32)

        rows_index = offset_rows + np.arange(len(res_rows), dtype=np.int64)
        if mode.batch:
            # one message per batch of frozen values, uploaded after the batch closes
            batch = slots // mode.per_message
            first = np.nonzero(np.diff(batch, prepend=-1))[0]
            count = np.diff(np.append(first, k))
            closes = start + (batch[first] + 1) * mode.per_message * mode.interval_s
            lo = (np.arange(len(sel))[:, None] * k + first[None, :]).ravel()
            hi = lo + np.tile(count, len(sel))
            msg_res = np.repeat(res, len(first))
            base_s = np.tile(closes, len(sel)) + meters.upload_offset_s[msg_res]
            msg_key = (msg_res.astype(np.int64) << 12) | np.tile(batch[first], len(sel))
            only_last = np.full(len(res_rows), NONE, dtype=np.int16)  # the battery, once a batch
            only_last[hi - 1] = battery_cv[hi - 1]
            battery_cv = only_last
            msg_t = t_since[lo]
            mtype = WATER_BATCH
        else:
            lo = np.arange(len(res_rows), dtype=np.int64)
            hi = lo + 1
            msg_res = res_rows
            base_s = t_rows
            msg_key = key
            msg_t = t_since
            mtype = WATER
        latency_ms = np.floor(
            1000 * rand.between(seed, "meter.latency", msg_key, *scenario.meters.latency_s, day=day)
        ).astype(np.int64)
        water_parts.append(
            WaterRows(
                res=res_rows,
                ts=ts_rows,
                total_dl=total_dl.ravel(),
                battery_cv=battery_cv,
                seq=seq.astype(np.int32),
                flow_cl=flow_cl,
            )
        )
        device = model.population.meter_device[msg_res]
        message_parts.append(
            MessageTable(
                publish_ms=base_s * 1000 + latency_ms,
                mtype=np.full(len(lo), mtype, dtype=np.int8),
                dev=device.astype(np.int32),
                t=msg_t,
                lo=(rows_index[lo]).astype(np.int32),
                hi=(rows_index[lo] + (hi - lo)).astype(np.int32),
            )
        )
        offset_rows += len(res_rows)
    if not water_parts:
        return empty_water(), empty_messages()
    return WaterRows.concat(water_parts), MessageTable.concat(message_parts)


def sensor_reports(model: DistrictModel, day: int, devices_in: range) -> tuple[SensorRows, MessageTable]:
    """Periodic smoke and gas readings (with alarm levels during incidents)."""
    pop, sp = model.population, model.sensors
    start = day_start(day)
    parts = []
    for kind in (SMOKE, GAS):
        devices = (
            devices_in.start + np.nonzero(pop.device_kind[devices_in.start : devices_in.stop] == kind)[0]
        )
        if len(devices) == 0:
            continue
        interval = int(sp.interval_s[devices[0]])
        slots = np.arange(DAY_S // interval)
        t = (start + sp.phase_s[devices][:, None] + slots[None, :] * interval).ravel()
        dev = np.repeat(devices.astype(np.int32), len(slots))
        parts.append((dev, t))
    # alarms: an extra reading when the alarm starts
    alarms = model.sensor_alarms(devices_in)
    for device, alarm_start, _, _ in alarms:
        if start <= alarm_start < start + DAY_S:
            parts.append((np.array([device], np.int32), np.array([alarm_start], np.int64)))
    if not parts:
        return empty_sensors(), empty_messages()
    dev = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts]).astype(np.int64)
    keep = (t >= model.start_s) & (t < model.end_s)
    dev, t = dev[keep], t[keep]
    value = model.sensor_levels(dev, t, alarms)
    key = (dev.astype(np.int64) << 20) | ((t - start) // 60)
    hour = ((t + LOCAL_OFFSET_S) % DAY_S) / 3600
    temp_c = (
        21.0
        + 2.0 * np.sin(2 * np.pi * (hour - 9) / 24)
        + rand.between(model.seed, "sensor.temperature", key, -0.5, 0.5, day=day)
    )
    temp_dc = np.where(pop.device_kind[dev] == SMOKE, np.round(temp_c * 10), NONE).astype(np.int32)
    battery = sp.battery_v0[dev] - sp.drain_v_per_day[dev] * (t - model.start_s) / DAY_S
    latency_ms = np.floor(
        1000 * rand.between(model.seed, "sensor.latency", key, *model.scenario.sensors.latency_s, day=day)
    ).astype(np.int64)
    rows = SensorRows(
        dev=dev,
        t=t,
        ts=t,
        value=value,
        temp_dc=temp_dc,
        battery_cv=np.round(battery * 100).astype(np.int16),
    )
    index = np.arange(len(dev), dtype=np.int32)
    msgs = MessageTable(
        publish_ms=t * 1000 + latency_ms,
        mtype=np.full(len(dev), SENSOR, np.int8),
        dev=dev,
        t=(t - model.start_s).astype(np.int32),
        lo=index,
        hi=index + 1,
    )
    return rows, msgs


def event_reports(model: DistrictModel, day: int, devices_in: range) -> tuple[EventRows, MessageTable]:
    """The model's device events of `day` and their messages, each after a latency."""
    rows = model.device_events(day, devices_in)
    if len(rows) == 0:
        return rows, empty_messages()
    dev, ts = rows.dev, rows.ts
    key = (dev.astype(np.int64) << 20) | ((ts - day_start(day)) // 60)
    latency_ms = np.floor(
        1000 * rand.between(model.seed, "event.latency", key, *model.scenario.sensors.latency_s, day=day)
    ).astype(np.int64)
    index = np.arange(len(rows), dtype=np.int32)
    msgs = MessageTable(
        publish_ms=ts * 1000 + latency_ms,
        mtype=np.full(len(rows), EVENT, np.int8),
        dev=dev,
        t=(ts - model.start_s).astype(np.int32),
        lo=index,
        hi=index + 1,
    )
    return rows, msgs


def gateway_statuses(model: DistrictModel, day: int, gateways_in: range) -> MessageTable:
    """Every gateway says `online` at the start; outages say `offline`, then `online`."""
    start, end = day_start(day), day_start(day) + DAY_S
    gw: list[int] = []
    at_ms: list[int] = []
    up: list[int] = []
    if start <= model.start_s < end:
        gateways = np.arange(gateways_in.start, gateways_in.stop)
        spread = np.floor(5000 * rand.uniform(model.seed, "gateway.hello", gateways))
        gw += gateways.tolist()
        at_ms += (model.start_s * 1000 + spread.astype(np.int64)).tolist()
        up += [1] * len(gateways)
    for plan in model.of_kind("gateway_outage"):
        if plan.gateway not in gateways_in:
            continue
        if start <= plan.start_s < end:
            gw.append(plan.gateway)
            at_ms.append(plan.start_s * 1000)
            up.append(0)
        if plan.end_s is not None and start <= plan.end_s < end:
            gw.append(plan.gateway)
            at_ms.append(plan.end_s * 1000)
            up.append(1)
    publish = np.array(at_ms, dtype=np.int64)
    keep = (publish >= model.start_s * 1000) & (publish < model.end_s * 1000)
    n = int(keep.sum())
    return MessageTable(
        publish_ms=publish[keep],
        mtype=np.full(n, STATUS, np.int8),
        dev=np.array(gw, dtype=np.int32)[keep],
        t=(publish[keep] // 1000 - model.start_s).astype(np.int32),
        lo=np.array(up, dtype=np.int32)[keep],
        hi=np.zeros(n, np.int32),
    )


def empty_water() -> WaterRows:
    z64, z32 = np.zeros(0, np.int64), np.zeros(0, np.int32)
    return WaterRows(res=z32, ts=z64, total_dl=z64, battery_cv=np.zeros(0, np.int16), seq=z32, flow_cl=z32)


def empty_sensors() -> SensorRows:
    z64, z32 = np.zeros(0, np.int64), np.zeros(0, np.int32)
    return SensorRows(
        dev=z32, t=z64, ts=z64, value=np.zeros(0), temp_dc=z32, battery_cv=np.zeros(0, np.int16)
    )
