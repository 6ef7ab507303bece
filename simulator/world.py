"""The simulated world: a district over a span of time, and the views the rest of LoveKey uses.

`World.build` draws the population, habits, devices and incidents; nothing is generated
until a view asks for it. Views walk the span one local day at a time (residents in chunks),
carrying each meter's register from day to day:

- `water_usage`   litres actually used per meter and bucket (after incidents),
- `water_readings` the meter values the platform receives (columnar),
- `events`        the device events the platform receives,
- `messages`      the MQTT messages in the order they are sent.

All of them are pure functions of (scenario, residents, seed, start, days): the same
arguments give the same bytes, and a resident's day does not depend on the chunking.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np
import numpy.typing as npt

from lovekey.simulator import rand
from lovekey.simulator.incidents import (
    LOCAL_OFFSET_S,
    NO_USE_KINDS,
    Incident,
    Planned,
    local_datetime,
    plan_incidents,
    to_incident,
)
from lovekey.simulator.meters import (
    MODE_LIST,
    NEW_METER_BATTERY_V,
    MeterParams,
    Mode,
    SensorParams,
    draw_meters,
    draw_sensors,
)
from lovekey.simulator.population import (
    GAS,
    SMOKE,
    WATER_METER,
    Population,
    build_population,
    registry_rows,
)
from lovekey.simulator.routine import MINUTES_PER_DAY, Traits, day_events, draw_traits, minute_usage
from lovekey.simulator.scenario import Scenario
from lovekey.simulator.traffic import (
    EV_AWAY,
    EV_BATTERY_LOW,
    EV_GAS,
    EV_HOME,
    EV_SMOKE,
    EV_SOS,
    EVENT,
    EVENT_TYPES,
    NEVER_MS,
    NONE,
    SENSOR,
    STATUS,
    WATER,
    WATER_BATCH,
    DayTraffic,
    Encoder,
    EventRows,
    Message,
    MessageTable,
    SensorRows,
    WaterRows,
    empty_messages,
    tie_breaker,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

CHUNK_RESIDENTS = 2048
ENCODE_SLICE = 8192
SORT_WINDOWS = 4  # a day's messages are sorted a quarter at a time
DAY_S = 86400


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


@dataclass(frozen=True)
class Shard:
    """A contiguous block of gateways with their residents and devices: `k` of `n`.

    Shards split the traffic between publishing processes; each gateway's messages stay
    in one shard, in order.
    """

    gateways: range
    residents: range
    devices: range

    @classmethod
    def of(cls, population: Population, k: int, n: int) -> Shard:
        if not 0 <= k < n:
            raise ValueError(f"shard {k} of {n} does not exist")
        g = population.gateway_count
        g0, g1 = g * k // n, g * (k + 1) // n
        r0, r1 = np.searchsorted(population.resident_building, [g0, g1]).tolist()
        bounds = np.append(population.meter_device, len(population.device_kind))
        return cls(range(g0, g1), range(r0, r1), range(int(bounds[r0]), int(bounds[r1])))


@dataclass
class _Registers:
    """What a walk carries from one day to the next, per meter."""

    true_l: F64  # litres used since the start of the simulation
    offset_l: F64  # register = true + offset (initial value; a swap resets it)
    last_minute_l: F32  # use in the last minute of the previous day (for flow_lpm)


def _day_of(epoch_s: int) -> int:
    return (epoch_s + LOCAL_OFFSET_S) // DAY_S


def _day_start(day: int) -> int:
    return day * DAY_S - LOCAL_OFFSET_S


def _epoch_s(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("times given to the simulator must be aware (carry a UTC offset)")
    return math.floor(value.timestamp())


class World:
    """A district of `residents` over [start, start + days); see the module docstring."""

    def __init__(
        self,
        *,
        scenario: Scenario,
        seed: int,
        start_s: int,
        end_s: int,
        population: Population,
        traits: Traits,
        meters: MeterParams,
        sensors: SensorParams,
        plans: list[Planned],
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.start_s = start_s
        self.end_s = end_s
        self.population = population
        self.traits = traits
        self.meters = meters
        self.sensors = sensors
        self.plans = plans
        self._by_resident: dict[int, list[Planned]] = defaultdict(list)
        self._by_kind: dict[str, list[Planned]] = defaultdict(list)
        for plan in plans:
            self._by_kind[plan.kind].append(plan)
            if plan.resident >= 0:
                self._by_resident[plan.resident].append(plan)
        self._residents_with_plans = sorted(self._by_resident)
        self._swaps: dict[int, list[Planned]] = defaultdict(list)
        for plan in self._by_kind["meter_swap"]:
            self._swaps[plan.resident].append(plan)

    @classmethod
    def build(cls, scenario: Scenario, *, residents: int, seed: int, start: datetime, days: float) -> World:
        """Everything that is drawn once; the start is taken to the whole minute."""
        if days <= 0:
            raise ValueError("days must be positive")
        start_s = _epoch_s(start) // 60 * 60
        end_s = start_s + max(1, int(days * DAY_S) // 60) * 60
        population = build_population(scenario, residents=residents, seed=seed)
        traits = draw_traits(scenario, seed, population.profile)
        meters = draw_meters(scenario, population, seed=seed, start_s=start_s)
        sensors = draw_sensors(scenario, population, seed=seed)
        plans = plan_incidents(scenario, population, seed=seed, start_s=start_s, end_s=end_s)
        plans = sorted(
            plans + _battery_plans(scenario, population, meters, sensors, plans, start_s, end_s),
            key=lambda p: (p.start_s, p.kind, p.resident, p.gateway),
        )
        return cls(
            scenario=scenario,
            seed=seed,
            start_s=start_s,
            end_s=end_s,
            population=population,
            traits=traits,
            meters=meters,
            sensors=sensors,
            plans=plans,
        )

    # -- the simple views -----------------------------------------------------------------

    @property
    def start(self) -> datetime:
        return local_datetime(self.start_s)

    @property
    def end(self) -> datetime:
        return local_datetime(self.end_s)

    def registry_rows(self) -> list[dict[str, str]]:
        """Full-form rows of docs/registry.md, contacts included, for `lovekey devices import`."""
        return registry_rows(self.population, self.scenario)

    def truth(self) -> list[Incident]:
        """The ground truth: every incident, sorted by start."""
        return [to_incident(plan, self.population) for plan in self.plans]

    @cached_property
    def meter_ids(self) -> list[str]:
        ids = self.population.device_ids
        return [ids[d] for d in self.population.meter_device.tolist()]

    @cached_property
    def meter_report_interval_s(self) -> I32:
        every = np.array([mode.message_every_s for mode in MODE_LIST], dtype=np.int32)
        return every[self.meters.mode]

    # -- water use --------------------------------------------------------------------------

    def water_usage(self, start: datetime, end: datetime, *, bucket_s: int) -> tuple[list[str], F32]:
        """Litres used per meter and bucket over [start, end), buckets from `start`.

        `bucket_s` is a whole number of minutes; the start is taken to the minute.
        """
        if bucket_s <= 0 or bucket_s % 60:
            raise ValueError("bucket_s must be a positive whole number of minutes")
        a = _epoch_s(start) // 60 * 60
        b = _epoch_s(end)
        buckets = max(0, math.ceil((b - a) / bucket_s))
        n = self.population.residents
        out = np.zeros((n, buckets), dtype=np.float32)
        if buckets == 0:
            return self.meter_ids, out
        minutes_per_bucket = bucket_s // 60
        for day in range(_day_of(max(a, self.start_s)), _day_of(min(b, self.end_s) - 1) + 1):
            day_start = _day_start(day)
            # minutes of this day that fall in [a, b)
            m0 = max(0, (a - day_start) // 60)
            m1 = min(MINUTES_PER_DAY, -(-(b - day_start) // 60))
            if m0 >= m1:
                continue
            bucket_of = ((day_start - a) // 60 + np.arange(m0, m1)) // minutes_per_bucket
            for r0 in range(0, n, CHUNK_RESIDENTS):
                r1 = min(n, r0 + CHUNK_RESIDENTS)
                usage = self._usage(day, r0, r1)[:, m0:m1]
                # sum consecutive minutes of the same bucket
                edges = np.nonzero(np.diff(bucket_of, prepend=-1))[0]
                sums = np.add.reduceat(usage, edges, axis=1, dtype=np.float64)
                out[r0:r1, bucket_of[edges]] += sums.astype(np.float32)
        return self.meter_ids, out

    def _usage(self, day: int, r0: int, r1: int) -> F32:
        """Litres per minute of residents r0..r1-1 on local day `day`, incidents applied."""
        rows = np.arange(r0, r1)
        events = day_events(self.traits.take(rows), rows, day, seed=self.seed, routine=self.scenario.routine)
        usage = minute_usage(events, r1 - r0)
        day_start = _day_start(day)
        first = (self.start_s - day_start) // 60
        if first > 0:
            usage[:, : min(first, MINUTES_PER_DAY)] = 0.0
        last = (self.end_s - day_start) // 60
        if last < MINUTES_PER_DAY:
            usage[:, max(last, 0) :] = 0.0
        lo = bisect.bisect_left(self._residents_with_plans, r0)
        hi = bisect.bisect_left(self._residents_with_plans, r1)
        day_end = day_start + DAY_S
        for resident in self._residents_with_plans[lo:hi]:
            plans = [p for p in self._by_resident[resident] if p.overlaps(day_start, day_end)]
            row = usage[resident - r0]
            for plan in plans:  # first take water use away ...
                if plan.kind in NO_USE_KINDS:
                    a, b = _minutes(plan, day_start, self.end_s)
                    row[a:b] = 0.0
            for plan in plans:  # ... then add what runs regardless of who is home
                if plan.kind in ("running_tap", "slow_leak"):
                    a, b = _minutes(plan, day_start, self.end_s)
                    row[a:b] += np.float32(plan.params["flow_lpm"])
                elif plan.kind == "cleaning_day":
                    _add_cleaning(row, plan, day_start)
        return usage

    # -- traffic ----------------------------------------------------------------------------

    @cached_property
    def encoder(self) -> Encoder:
        pop = self.population
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
            meter_epoch=self.meters.epoch_ts,
            meter_m3=self.meters.m3,
            meter_fine=self.meters.fine,
            device_epoch=self.sensors.epoch_ts,
            device_is_gas=kind == GAS,
        )

    def _fresh_registers(self) -> _Registers:
        n = self.population.residents
        return _Registers(
            true_l=np.zeros(n),
            offset_l=self.meters.initial_total_l.copy(),
            last_minute_l=np.zeros(n, dtype=np.float32),
        )

    def _days(self) -> range:
        return range(_day_of(self.start_s), _day_of(self.end_s - 1) + 1)

    def _day_traffic(self, day: int, registers: _Registers, shard: Shard) -> DayTraffic:
        """All traffic of local day `day`, transport effects applied, unsorted.

        The meters' values and messages (most of a day) are written in place into tables
        sized in advance, chunk by chunk, so a day never exists twice in memory.
        """
        chunks = [
            (r0, min(shard.residents.stop, r0 + CHUNK_RESIDENTS))
            for r0 in range(shard.residents.start, shard.residents.stop, CHUNK_RESIDENTS)
        ]
        slots = [self._mode_slots(day, mode) for mode in MODE_LIST]
        per_mode_rows = np.array([len(s) for s, _ in slots])
        per_mode_msgs = np.array(
            [
                len(s) if not mode.batch else len(np.unique(s // mode.per_message))
                for (s, _), mode in zip(slots, MODE_LIST, strict=True)
            ]
        )
        counts = [np.bincount(self.meters.mode[r0:r1], minlength=len(MODE_LIST)) for r0, r1 in chunks]
        water: WaterRows | None = None
        messages: MessageTable | None = None
        total_rows = int(sum(c @ per_mode_rows for c in counts))
        total_msgs = int(sum(c @ per_mode_msgs for c in counts))
        extra: list[MessageTable] = []
        row_at = msg_at = 0
        for r0, r1 in chunks:
            usage = self._usage(day, r0, r1)
            rows, msgs = self._water(day, r0, r1, usage, registers)
            del usage
            msgs, copies = self._transport(_shift(msgs, row_at), day)
            extra.append(copies)
            if water is None or messages is None:
                water = WaterRows.allocate(rows, total_rows)
                messages = MessageTable.allocate(msgs, total_msgs)
            water.put(row_at, rows)
            messages.put(msg_at, msgs)
            row_at += len(rows)
            msg_at += len(msgs)
        if water is None or messages is None:
            water, messages = _empty_water(), empty_messages()
        assert (row_at, msg_at) == (len(water), len(messages)), "table sizes were mis-counted"
        sensors, sensor_msgs = self._sensors(day, shard.devices)
        events, event_msgs = self._events(day, shard.devices)
        for part in (sensor_msgs, event_msgs):
            part, copies = self._transport(part, day)
            extra += [part, copies]
        extra.append(self._statuses(day, shard.gateways))
        return DayTraffic(
            water=water,
            sensors=sensors,
            events=events,
            messages=messages,
            extra=MessageTable.concat(extra),
            origin_s=self.start_s,
        )

    def _mode_slots(self, day: int, mode: Mode) -> tuple[I64, I64]:
        """Slot numbers and sampling times of `mode` on `day` that fall in the simulation."""
        slots = np.arange(DAY_S // mode.interval_s)
        t_slot = _day_start(day) + slots * mode.interval_s
        keep = (t_slot >= self.start_s) & (t_slot < self.end_s)
        return slots[keep], t_slot[keep]

    def _water(
        self, day: int, r0: int, r1: int, usage: F32, registers: _Registers
    ) -> tuple[WaterRows, MessageTable]:
        """Frozen values and messages of meters r0..r1-1 on `day`; advances `registers`."""
        meters = self.meters
        day_start = _day_start(day)
        true = np.empty((r1 - r0, MINUTES_PER_DAY + 1))
        true[:, 0] = registers.true_l[r0:r1]
        np.cumsum(usage, axis=1, dtype=np.float64, out=true[:, 1:])
        true[:, 1:] += true[:, :1]
        registers.true_l[r0:r1] = true[:, -1]
        register = true + registers.offset_l[r0:r1, None]
        for resident, swaps in self._swaps.items():
            if not r0 <= resident < r1:
                continue
            for plan in swaps:
                minute = (plan.start_s - day_start) // 60
                if 0 <= minute <= MINUTES_PER_DAY and plan.start_s < day_start + DAY_S:
                    pos = resident - r0
                    offset = float(plan.params.get("initial_l", 0.0)) - true[pos, minute]
                    register[pos, minute:] = true[pos, minute:] + offset
                    registers.offset_l[resident] = offset
        previous_minute = registers.last_minute_l[r0:r1].copy()
        registers.last_minute_l[r0:r1] = usage[:, -1]

        water_parts, message_parts = [], []
        offset_rows = 0
        local_mode = meters.mode[r0:r1]
        for mode_index, mode in enumerate(MODE_LIST):
            sel = np.nonzero(local_mode == mode_index)[0]
            if len(sel) == 0:
                continue
            slots, t_slot = self._mode_slots(day, mode)
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
            t_since = (t_rows - self.start_s).astype(np.int32)
            key = (res_rows.astype(np.int64) << 12) | np.tile(minutes, len(sel))
            jitter = np.floor(
                rand.uniform(self.seed, "meter.jitter", key, day=day) * (self.scenario.meters.jitter_s + 1)
            ).astype(np.int64)
            ts_rows = t_rows + meters.clock_offset_s[res_rows] + jitter
            days_in = (t_rows - self.start_s) / DAY_S
            battery = meters.battery_v0[res_rows] - meters.drain_v_per_day[res_rows] * days_in
            seq = (t_rows - meters.install_s[res_rows]) // mode.interval_s
            battery, seq = self._after_swaps(res_rows, t_rows, battery, seq, mode.interval_s)
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
                batch = slots // mode.per_message
                first = np.nonzero(np.diff(batch, prepend=-1))[0]
                count = np.diff(np.append(first, k))
                closes = day_start + (batch[first] + 1) * mode.per_message * mode.interval_s
                lo = (np.arange(len(sel))[:, None] * k + first[None, :]).ravel()
                hi = lo + np.tile(count, len(sel))
                msg_res = np.repeat(res, len(first))
                base_s = np.tile(closes, len(sel)) + meters.upload_offset_s[msg_res]
                msg_key = (msg_res.astype(np.int64) << 12) | np.tile(batch[first], len(sel))
                only_last = np.full(len(res_rows), NONE, dtype=np.int16)
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
                1000
                * rand.between(self.seed, "meter.latency", msg_key, *self.scenario.meters.latency_s, day=day)
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
            device = self.population.meter_device[msg_res]
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
            return _empty_water(), empty_messages()
        return WaterRows.concat(water_parts), MessageTable.concat(message_parts)

    def _after_swaps(self, res: I32, t: I64, battery: F64, seq: I64, interval_s: int) -> tuple[F64, I64]:
        """A new meter has a fresh battery and counts its messages from zero."""
        if not self._swaps:
            return battery, seq
        swapped = np.isin(res, np.fromiter(self._swaps, dtype=np.int32))
        for i in np.nonzero(swapped)[0].tolist():
            times = [p.start_s for p in self._swaps[int(res[i])] if p.start_s <= t[i]]
            if times:
                since = int(t[i]) - max(times)
                battery[i] = NEW_METER_BATTERY_V - self.meters.drain_v_per_day[res[i]] * since / DAY_S
                seq[i] = since // interval_s
        return battery, seq

    def _sensors(self, day: int, devices_in: range) -> tuple[SensorRows, MessageTable]:
        """Periodic smoke and gas readings (with alarm levels during incidents)."""
        pop, sp = self.population, self.sensors
        day_start = _day_start(day)
        parts = []
        for kind in (SMOKE, GAS):
            devices = (
                devices_in.start + np.nonzero(pop.device_kind[devices_in.start : devices_in.stop] == kind)[0]
            )
            if len(devices) == 0:
                continue
            interval = int(sp.interval_s[devices[0]])
            slots = np.arange(DAY_S // interval)
            t = (day_start + sp.phase_s[devices][:, None] + slots[None, :] * interval).ravel()
            dev = np.repeat(devices.astype(np.int32), len(slots))
            parts.append((dev, t))
        # alarms: an extra reading when the alarm starts
        alarm_level: list[tuple[int, int, int, float]] = []
        for alarm in ("smoke", "gas"):
            for plan in self._by_kind[alarm]:
                if plan.device not in devices_in:
                    continue
                end = plan.end_or(self.end_s)
                alarm_level.append((plan.device, plan.start_s, end, float(plan.params["level"])))
                if day_start <= plan.start_s < day_start + DAY_S:
                    parts.append((np.array([plan.device], np.int32), np.array([plan.start_s], np.int64)))
        if not parts:
            return _empty_sensors(), empty_messages()
        dev = np.concatenate([p[0] for p in parts])
        t = np.concatenate([p[1] for p in parts]).astype(np.int64)
        keep = (t >= self.start_s) & (t < self.end_s)
        dev, t = dev[keep], t[keep]
        value = sp.baseline[dev].copy()
        for device, a, b, level in alarm_level:
            value[(dev == device) & (t >= a) & (t < b)] = level
        key = (dev.astype(np.int64) << 20) | ((t - day_start) // 60)
        hour = ((t + LOCAL_OFFSET_S) % DAY_S) / 3600
        temp_c = (
            21.0
            + 2.0 * np.sin(2 * np.pi * (hour - 9) / 24)
            + rand.between(self.seed, "sensor.temperature", key, -0.5, 0.5, day=day)
        )
        temp_dc = np.where(pop.device_kind[dev] == SMOKE, np.round(temp_c * 10), NONE).astype(np.int32)
        battery = sp.battery_v0[dev] - sp.drain_v_per_day[dev] * (t - self.start_s) / DAY_S
        latency_ms = np.floor(
            1000 * rand.between(self.seed, "sensor.latency", key, *self.scenario.sensors.latency_s, day=day)
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
            t=(t - self.start_s).astype(np.int32),
            lo=index,
            hi=index + 1,
        )
        return rows, msgs

    def _events(self, day: int, devices_in: range) -> tuple[EventRows, MessageTable]:
        """Button presses, alarms going on and off, batteries running low."""
        day_start, day_end = _day_start(day), _day_start(day) + DAY_S
        found: list[tuple[int, int, int, bool, float]] = []  # dev, ts, type, active, value
        for plan in self.plans:
            if plan.device not in devices_in:
                continue
            if plan.kind in ("smoke", "gas"):
                kind = EV_SMOKE if plan.kind == "smoke" else EV_GAS
                found.append((plan.device, plan.start_s, kind, True, float(plan.params["level"])))
                if plan.end_s is not None:
                    found.append(
                        (plan.device, plan.end_s, kind, False, float(self.sensors.baseline[plan.device]))
                    )
            elif plan.kind == "sos":
                found.append((plan.device, plan.start_s, EV_SOS, True, math.nan))
            elif plan.kind == "planned_absence":
                found.append((plan.device, plan.start_s, EV_AWAY, True, math.nan))
                if plan.end_s is not None:
                    found.append((plan.device, plan.end_s, EV_HOME, True, math.nan))
            elif plan.kind == "battery_low":
                found.append(
                    (plan.device, plan.start_s, EV_BATTERY_LOW, True, float(plan.params["battery_v"]))
                )
        found = [f for f in found if day_start <= f[1] < day_end and self.start_s <= f[1] < self.end_s]
        if not found:
            return _empty_events(), empty_messages()
        found.sort()
        dev = np.array([f[0] for f in found], dtype=np.int32)
        ts = np.array([f[1] for f in found], dtype=np.int64)
        key = (dev.astype(np.int64) << 20) | ((ts - day_start) // 60)
        latency_ms = np.floor(
            1000 * rand.between(self.seed, "event.latency", key, *self.scenario.sensors.latency_s, day=day)
        ).astype(np.int64)
        rows = EventRows(
            dev=dev,
            ts=ts,
            type=np.array([f[2] for f in found], dtype=np.int32),
            active=np.array([f[3] for f in found], dtype=np.bool_),
            value=np.array([f[4] for f in found], dtype=np.float64),
        )
        index = np.arange(len(found), dtype=np.int32)
        msgs = MessageTable(
            publish_ms=ts * 1000 + latency_ms,
            mtype=np.full(len(found), EVENT, np.int8),
            dev=dev,
            t=(ts - self.start_s).astype(np.int32),
            lo=index,
            hi=index + 1,
        )
        return rows, msgs

    def _statuses(self, day: int, gateways_in: range) -> MessageTable:
        """Every gateway says `online` at the start; outages say `offline`, then `online`."""
        day_start, day_end = _day_start(day), _day_start(day) + DAY_S
        gw: list[int] = []
        at_ms: list[int] = []
        up: list[int] = []
        if day_start <= self.start_s < day_end:
            gateways = np.arange(gateways_in.start, gateways_in.stop)
            spread = np.floor(5000 * rand.uniform(self.seed, "gateway.hello", gateways))
            gw += gateways.tolist()
            at_ms += (self.start_s * 1000 + spread.astype(np.int64)).tolist()
            up += [1] * len(gateways)
        for plan in self._by_kind["gateway_outage"]:
            if plan.gateway not in gateways_in:
                continue
            if day_start <= plan.start_s < day_end:
                gw.append(plan.gateway)
                at_ms.append(plan.start_s * 1000)
                up.append(0)
            if plan.end_s is not None and day_start <= plan.end_s < day_end:
                gw.append(plan.gateway)
                at_ms.append(plan.end_s * 1000)
                up.append(1)
        publish = np.array(at_ms, dtype=np.int64)
        keep = (publish >= self.start_s * 1000) & (publish < self.end_s * 1000)
        n = int(keep.sum())
        return MessageTable(
            publish_ms=publish[keep],
            mtype=np.full(n, STATUS, np.int8),
            dev=np.array(gw, dtype=np.int32)[keep],
            t=(publish[keep] // 1000 - self.start_s).astype(np.int32),
            lo=np.array(up, dtype=np.int32)[keep],
            hi=np.zeros(n, np.int32),
        )

    def _transport(self, messages: MessageTable, day: int) -> tuple[MessageTable, MessageTable]:
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
        gateway = self.population.device_gateway[messages.dev]

        def window(plan: Planned) -> tuple[int, int]:
            return plan.start_s * 1000, plan.end_or(self.end_s + 10 * DAY_S) * 1000

        def touched(plans: list[Planned], column: I32, subject: str) -> list[tuple[Planned, I64]]:
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

        silenced = [rows for _, rows in touched(self._by_kind["meter_silent"], messages.dev, "device")]
        for plan, rows in touched(self._by_kind["gateway_outage"], gateway, "gateway"):
            if plan.params.get("buffered") and plan.end_s is not None:
                spread = np.floor(60_000 * rand.uniform(self.seed, "outage.flush", rows, day=day))
                publish[rows] = plan.end_s * 1000 + 1000 + spread.astype(np.int64)
            else:
                silenced.append(rows)
        for rows in silenced:
            publish[rows] = NEVER_MS
        for plan, rows in touched(self._by_kind["late_messages"], messages.dev, "device"):
            rows = rows[publish[rows] != NEVER_MS]
            publish[rows] += int(plan.params["delay_s"] * 1000)
        copies = [empty_messages()]
        for plan, rows in touched(self._by_kind["duplicate_messages"], messages.dev, "device"):
            part = messages.take(rows[publish[rows] != NEVER_MS])
            part.publish_ms[:] += int(plan.params["delay_s"] * 1000)
            copies.append(part)
        return messages, MessageTable.concat(copies)

    # -- the public traffic views -------------------------------------------------------------

    def water_readings(self, start: datetime | None = None, end: datetime | None = None) -> WaterReadings:
        """Meter values whose `ts` is in [start, end), as the platform receives them.

        Without `start`/`end`: every value sent during the simulation (a meter clock a few
        seconds fast or slow can stamp one just outside the span).
        """
        a = -(1 << 62) if start is None else _epoch_s(start)
        b = 1 << 62 if end is None else _epoch_s(end)
        registers = self._fresh_registers()
        parts: list[tuple[WaterRows, I64]] = []
        everything = Shard.of(self.population, 0, 1)
        for day in self._days():
            if _day_start(day) >= b + DAY_S:
                break
            traffic = self._day_traffic(day, registers, everything)
            if _day_start(day) + 2 * DAY_S < a:
                continue  # the registers carry on; nothing of this day is asked for
            msgs = traffic.everything()
            sent = msgs.publish_ms < self.end_s * 1000
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
                self.meter_ids,
                self.meter_report_interval_s,
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
            device_ids=self.meter_ids,
            report_interval_s=self.meter_report_interval_s,
            device_index=values.res.astype(np.int32),
            ts=values.ts,
            total_l=values.total_dl / 10.0,
            battery_v=np.where(values.battery_cv >= 0, values.battery_cv / 100.0, np.nan),
            publish_ts=arrive / 1000.0,
        )

    def events(self, start: datetime | None = None, end: datetime | None = None) -> list[DeviceEvent]:
        """Device events (buttons, alarms, batteries) as the platform receives them, by arrival.

        A gateway outage delays its devices' events to its end (buffered) or loses them;
        `start`/`end` select by the event's own `ts`. Much cheaper than decoding `messages()`.
        """
        a = -(1 << 62) if start is None else _epoch_s(start)
        b = 1 << 62 if end is None else _epoch_s(end)
        everything = range(len(self.population.device_kind))
        device_ids = self.population.device_ids
        out: list[DeviceEvent] = []
        for day in self._days():
            rows, msgs = self._events(day, everything)
            if len(rows.ts) == 0:
                continue
            msgs, copies = self._transport(msgs, day)
            table = MessageTable.concat([msgs, copies])
            for i in np.nonzero(table.publish_ms < self.end_s * 1000)[0].tolist():
                r = int(table.lo[i])
                ts = int(rows.ts[r])
                if a <= ts < b:
                    value = float(rows.value[r])
                    out.append(
                        DeviceEvent(
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

    def messages(self, start: datetime | None = None, end: datetime | None = None) -> Iterator[Message]:
        """The MQTT messages sent in [start, end) (default: the whole span), in send order."""
        for batch in self.message_batches(start, end):
            yield from map(Message, batch.topics, batch.payloads, batch.publish_ts, batch.retain)

    def message_batches(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[MessageBatch]:
        """`messages()` as columns, a few thousand at a time: what a publisher wants.

        `shard=(k, n)` keeps the traffic of the k-th of n blocks of gateways only.
        """
        part = Shard.of(self.population, *shard)
        a_ms = (self.start_s if start is None else _epoch_s(start)) * 1000
        b_ms = (self.end_s if end is None else _epoch_s(end)) * 1000
        end_ms = self.end_s * 1000
        registers = self._fresh_registers()
        encoder = self.encoder
        # Messages sent after the day that made them (daily batches, late, buffered ones)
        # wait here, encoded, with their sort keys.
        pending: list[Message] = []
        pending_publish = np.zeros(0, np.int64)
        pending_tie = np.zeros(0, np.int64)
        for day in self._days():
            day_ms = _day_start(day) * 1000
            cutoff_ms = min(day_ms + DAY_S * 1000, end_ms)
            traffic = self._day_traffic(day, registers, part)
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
                    yield self._encode_mixed(
                        traffic, encoder, positions[i : i + ENCODE_SLICE], fresh, pending
                    )
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
        self, traffic: DayTraffic, encoder: Encoder, part: I64, fresh: int, pending: list[Message]
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


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One device event as received: what the event message says, and when it arrives."""

    device_id: str
    type: str  # smoke, gas, sos, away, home, battery_low
    active: bool
    ts_s: int  # the event's own time, epoch seconds
    arrival_s: float  # when it reaches the broker
    value: float | None


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """Consecutive messages as parallel columns (`messages()` builds `Message`s from these)."""

    topics: list[str]
    payloads: list[bytes]
    publish_ts: list[float]
    retain: list[bool]

    def __len__(self) -> int:
        return len(self.topics)


def _minutes(plan: Planned, day_start: int, end_s: int) -> tuple[int, int]:
    """The incident's minutes within the local day starting at `day_start`."""
    a = max(0, (plan.start_s - day_start) // 60)
    b = min(MINUTES_PER_DAY, -(-(plan.end_or(end_s) - day_start) // 60))
    return a, max(a, b)


def _add_cleaning(row: F32, plan: Planned, day_start: int) -> None:
    """A bucket filled every 15 minutes through the cleaning, two minutes each."""
    end = plan.end_or(plan.start_s + 4 * 3600)
    fills = max(1, (end - plan.start_s) // 900)
    per_fill = float(plan.params["extra_l"]) / fills
    for i in range(fills):
        minute = (plan.start_s + i * 900 - day_start) // 60
        if 0 <= minute < MINUTES_PER_DAY - 1:
            row[minute : minute + 2] += np.float32(per_fill / 2)


def _shift(messages: MessageTable, rows: int) -> MessageTable:
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


def _battery_plans(
    scenario: Scenario,
    population: Population,
    meters: MeterParams,
    sensors: SensorParams,
    plans: list[Planned],
    start_s: int,
    end_s: int,
) -> list[Planned]:
    """A battery_low incident where a battery crosses its threshold within the span."""
    from types import MappingProxyType

    swapped = {p.resident for p in plans if p.kind == "meter_swap"}
    out = []
    low = scenario.meters.battery_low_v
    days = (meters.battery_v0 - low) / meters.drain_v_per_day
    at = start_s + np.ceil(days * DAY_S / 60) * 60
    for r in np.nonzero((meters.battery_v0 > low) & (at < end_s))[0].tolist():
        if r in swapped:
            continue
        out.append(
            Planned(
                "battery_low",
                int(at[r]),
                None,
                r,
                int(population.meter_device[r]),
                -1,
                MappingProxyType({"battery_v": round(low, 2)}),
            )
        )
    low = scenario.sensors.battery_low_v
    has_sensor = population.device_kind != WATER_METER  # detectors and buttons
    days = (sensors.battery_v0 - low) / sensors.drain_v_per_day
    at = start_s + np.ceil(days * DAY_S / 60) * 60
    for d in np.nonzero(has_sensor & (sensors.battery_v0 > low) & (at < end_s))[0].tolist():
        out.append(
            Planned(
                "battery_low",
                int(at[d]),
                None,
                int(population.device_resident[d]),
                d,
                -1,
                MappingProxyType({"battery_v": round(low, 2)}),
            )
        )
    return out


def _empty_water() -> WaterRows:
    z64, z32 = np.zeros(0, np.int64), np.zeros(0, np.int32)
    return WaterRows(res=z32, ts=z64, total_dl=z64, battery_cv=np.zeros(0, np.int16), seq=z32, flow_cl=z32)


def _empty_sensors() -> SensorRows:
    z64, z32 = np.zeros(0, np.int64), np.zeros(0, np.int32)
    return SensorRows(
        dev=z32, t=z64, ts=z64, value=np.zeros(0), temp_dc=z32, battery_cv=np.zeros(0, np.int16)
    )


def _empty_events() -> EventRows:
    z64, z32 = np.zeros(0, np.int64), np.zeros(0, np.int32)
    return EventRows(dev=z32, ts=z64, type=z32, active=np.zeros(0, np.bool_), value=np.zeros(0))


__all__ = ["DeviceEvent", "MessageBatch", "Shard", "WaterReadings", "World"]
