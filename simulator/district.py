"""The day model: what happens in the district, with no message in it.

A `DistrictModel` holds everything drawn once (population, habits, meters, sensors,
incidents) and answers, for one local day at a time and residents in chunks, what the
world is like: the litres each resident uses each minute (`usage`), what each meter's
register reads (`advance`), a meter's battery and counter (`meter_state`), what the smoke
and gas detectors sense (`sensor_levels`) and which device events happen (`device_events`).

Everything here is a pure function of (scenario, residents, seed, start, days), drawn from
`simulator.rand` by index, so a resident's day does not depend on the chunking. How the
devices report it and how the network delivers it (clocks, batching, latency, outages)
is `simulator.reporting` and `simulator.delivery`.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from types import MappingProxyType
from typing import Self

import numpy as np
import numpy.typing as npt

from lovekey.simulator import rand
from lovekey.simulator.columns import Columns
from lovekey.simulator.door import DOWN_KINDS, OUTING_KINDS, DoorModel
from lovekey.simulator.incidents import LOCAL_OFFSET_S, NO_USE_KINDS, Planned, plan_incidents
from lovekey.simulator.meters import (
    NEW_METER_BATTERY_V,
    MeterBehaviour,
    SensorBehaviour,
    draw_meters,
    draw_sensors,
)
from lovekey.simulator.population import DOOR_SENSOR, WATER_METER, Population, build_population
from lovekey.simulator.routine import MINUTES_PER_DAY, Traits, day_events, draw_traits, minute_usage
from lovekey.simulator.scenario import Scenario
from lovekey.vocabulary import EventType

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

CHUNK_RESIDENTS = 2048
DAY_S = 86400

# Event types as `EventRows.type` indexes them: this order is part of the seeded output.
EVENT_TYPES: tuple[EventType, ...] = (
    EventType.SMOKE,
    EventType.GAS,
    EventType.SOS,
    EventType.AWAY,
    EventType.HOME,
    EventType.TAMPER,
    EventType.BATTERY_LOW,
    EventType.PASSAGE,
    EventType.LEFT,
    EventType.RETURNED,
)
EV_SMOKE, EV_GAS, EV_SOS, EV_AWAY, EV_HOME, EV_TAMPER, EV_BATTERY_LOW, EV_PASSAGE, EV_LEFT, EV_RETURNED = (
    range(10)
)

# The door reminders, beyond what `simulator.door.DoorModel` draws (when each one triggers,
# which triggers it misses, which are dead). Assumptions, as the model's own figures are:
# no published rate exists for these devices.
# - DOOR_DIRECTION_SHARE of the reminders tell the direction: they report a trigger at the
#   start of a day out or an absence as `left` and one at its end as `returned`; visitors
#   and false triggers, and every trigger of the others, are a `passage`.
# - DOOR_TAMPER_PER_MONTH: a reminder taken off the wall (a cleaner, a curious grandchild)
#   reports `tamper` once, at a random time, with this chance per month.
DOOR_DIRECTION_SHARE = 0.5
DOOR_TAMPER_PER_MONTH = 0.02


def tells_direction(seed: int, resident: int) -> bool:
    """Whether resident `resident`'s door reminder (if they have one) tells the direction."""
    return bool(rand.uniform(seed, "door.direction", [resident])[0] < DOOR_DIRECTION_SHARE)


@dataclass(frozen=True)
class EventRows(Columns):
    """Device events as they happen, sorted by (device, ts)."""

    dev: I32
    ts: I64
    type: I32  # index into EVENT_TYPES
    active: BOOL
    value: F64  # NaN when there is none


@dataclass
class Registers:
    """What a walk over the days carries from one day to the next, per meter."""

    true_l: F64  # litres used since the start of the simulation
    offset_l: F64  # register = true + offset (initial value; a swap resets it)
    last_minute_l: F32  # use in the last minute of the previous day (for flow_lpm)


def day_of(epoch_s: int) -> int:
    """The local day (days since 1970-01-01 in local time) that `epoch_s` falls in."""
    return (epoch_s + LOCAL_OFFSET_S) // DAY_S


def day_start(day: int) -> int:
    return day * DAY_S - LOCAL_OFFSET_S


def epoch_s(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("times given to the simulator must be aware (carry a UTC offset)")
    return math.floor(value.timestamp())


class DistrictModel:
    """A district of residents over [start_s, end_s): its people, devices and incidents."""

    def __init__(
        self,
        *,
        scenario: Scenario,
        seed: int,
        start_s: int,
        end_s: int,
        population: Population,
        traits: Traits,
        meters: MeterBehaviour,
        sensors: SensorBehaviour,
        plans: list[Planned],
        door: DoorModel | None = None,
    ) -> None:
        self.scenario = scenario
        self.door = door or DoorModel(seed=seed, share=0.0)
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
        self.swaps: dict[int, list[Planned]] = defaultdict(list)  # meter swaps per resident
        for plan in self._by_kind["meter_swap"]:
            self.swaps[plan.resident].append(plan)

    @classmethod
    def draw(
        cls,
        scenario: Scenario,
        *,
        residents: int,
        seed: int,
        start_s: int,
        end_s: int,
        door_share: float = 0.0,
    ) -> Self:
        """Everything that is drawn once: people, habits, devices and incidents.

        `door_share`: households with a door reminder (`simulator.door.DoorModel`, the same
        households and triggers as `lovekey evaluate --door-share` gives).
        """
        if not 0.0 <= door_share <= 1.0:
            raise ValueError("door_share must be between 0 and 1")
        door = DoorModel(seed=seed, share=door_share)
        population = build_population(scenario, residents=residents, seed=seed, door=door)
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
            door=door,
        )

    def of_kind(self, kind: str) -> list[Planned]:
        """The incidents of `kind`, sorted by start."""
        return self._by_kind[kind]

    def days(self) -> range:
        """The local days the span touches."""
        return range(day_of(self.start_s), day_of(self.end_s - 1) + 1)

    # -- water --------------------------------------------------------------------------------

    def usage(self, day: int, r0: int, r1: int) -> F32:
        """Litres per minute of residents r0..r1-1 on local day `day`, incidents applied."""
        rows = np.arange(r0, r1)
        events = day_events(self.traits.take(rows), rows, day, seed=self.seed, routine=self.scenario.routine)
        usage = minute_usage(events, r1 - r0)
        start = day_start(day)
        first = (self.start_s - start) // 60
        if first > 0:
            usage[:, : min(first, MINUTES_PER_DAY)] = 0.0
        last = (self.end_s - start) // 60
        if last < MINUTES_PER_DAY:
            usage[:, max(last, 0) :] = 0.0
        lo = bisect.bisect_left(self._residents_with_plans, r0)
        hi = bisect.bisect_left(self._residents_with_plans, r1)
        end = start + DAY_S
        for resident in self._residents_with_plans[lo:hi]:
            plans = [p for p in self._by_resident[resident] if p.overlaps(start, end)]
            row = usage[resident - r0]
            for plan in plans:  # first take water use away ...
                if plan.kind in NO_USE_KINDS:
                    a, b = _minutes(plan, start, self.end_s)
                    row[a:b] = 0.0
            for plan in plans:  # ... then add what runs regardless of who is home
                if plan.kind in ("running_tap", "slow_leak"):
                    a, b = _minutes(plan, start, self.end_s)
                    row[a:b] += np.float32(plan.params["flow_lpm"])
                elif plan.kind == "cleaning_day":
                    _add_cleaning(row, plan, start)
        return usage

    def fresh_registers(self) -> Registers:
        """The meters' registers at the start of the simulation."""
        n = self.population.residents
        return Registers(
            true_l=np.zeros(n),
            offset_l=self.meters.initial_total_l.copy(),
            last_minute_l=np.zeros(n, dtype=np.float32),
        )

    def advance(self, day: int, r0: int, r1: int, usage: F32, registers: Registers) -> tuple[F64, F32]:
        """The registers of meters r0..r1-1 at each minute boundary of `day` (1441 columns),
        and each meter's use in the minute before the day; advances `registers` to the
        day's end. A meter swap restarts the register at the new meter's initial value.
        """
        start = day_start(day)
        true = np.empty((r1 - r0, MINUTES_PER_DAY + 1))
        true[:, 0] = registers.true_l[r0:r1]
        np.cumsum(usage, axis=1, dtype=np.float64, out=true[:, 1:])
        true[:, 1:] += true[:, :1]
        registers.true_l[r0:r1] = true[:, -1]
        register = true + registers.offset_l[r0:r1, None]
        for resident, swaps in self.swaps.items():
            if not r0 <= resident < r1:
                continue
            for plan in swaps:
                minute = (plan.start_s - start) // 60
                if 0 <= minute <= MINUTES_PER_DAY and plan.start_s < start + DAY_S:
                    pos = resident - r0
                    offset = float(plan.params.get("initial_l", 0.0)) - true[pos, minute]
                    register[pos, minute:] = true[pos, minute:] + offset
                    registers.offset_l[resident] = offset
        previous_minute = registers.last_minute_l[r0:r1].copy()
        registers.last_minute_l[r0:r1] = usage[:, -1]
        return register, previous_minute

    def meter_state(self, res: I32, t: I64, interval_s: int) -> tuple[F64, I64]:
        """Battery volts and message counter of meters `res` at times `t`.

        The counter counts the meter's reports of `interval_s` since it was installed; a
        new meter (after a swap) has a fresh battery and counts from zero.
        """
        meters = self.meters
        days_in = (t - self.start_s) / DAY_S
        battery = meters.battery_v0[res] - meters.drain_v_per_day[res] * days_in
        seq = (t - meters.install_s[res]) // interval_s
        if not self.swaps:
            return battery, seq
        swapped = np.isin(res, np.fromiter(self.swaps, dtype=np.int32))
        for i in np.nonzero(swapped)[0].tolist():
            times = [p.start_s for p in self.swaps[int(res[i])] if p.start_s <= t[i]]
            if times:
                since = int(t[i]) - max(times)
                battery[i] = NEW_METER_BATTERY_V - meters.drain_v_per_day[res[i]] * since / DAY_S
                seq[i] = since // interval_s
        return battery, seq

    # -- smoke and gas detectors, buttons -------------------------------------------------------

    def sensor_alarms(self, devices_in: range) -> list[tuple[int, int, int, float]]:
        """(device, start_s, end_s, level) of each smoke or gas alarm among `devices_in`."""
        alarms = []
        for kind in ("smoke", "gas"):
            for plan in self._by_kind[kind]:
                if plan.device in devices_in:
                    alarms.append(
                        (plan.device, plan.start_s, plan.end_or(self.end_s), float(plan.params["level"]))
                    )
        return alarms

    def sensor_levels(self, dev: I32, t: I64, alarms: list[tuple[int, int, int, float]]) -> F64:
        """What detectors `dev` sense at times `t`: their baseline, or an alarm's level."""
        value = self.sensors.baseline[dev].copy()
        for device, a, b, level in alarms:
            value[(dev == device) & (t >= a) & (t < b)] = level
        return value

    def device_events(self, day: int, devices_in: range) -> EventRows:
        """Button presses, alarms going on and off, batteries running low on `day`."""
        start, end = day_start(day), day_start(day) + DAY_S
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
        for device, triggers in self.door_triggers.items():
            if device in devices_in:
                found += [(device, t, kind, True, math.nan) for t, kind in triggers if start <= t < end]
        found = [f for f in found if start <= f[1] < end and self.start_s <= f[1] < self.end_s]
        found.sort()
        return EventRows(
            dev=np.array([f[0] for f in found], dtype=np.int32),
            ts=np.array([f[1] for f in found], dtype=np.int64),
            type=np.array([f[2] for f in found], dtype=np.int32),
            active=np.array([f[3] for f in found], dtype=np.bool_),
            value=np.array([f[4] for f in found], dtype=np.float64),
        )

    # -- door reminders -------------------------------------------------------------------------

    @cached_property
    def door_triggers(self) -> dict[int, list[tuple[int, int]]]:
        """Per door reminder (device index): (time, EVENT_TYPES index) of what it reports over
        the span, by time: `DoorModel.passages` (drawn from the ground truth exactly as
        `lovekey evaluate` draws them), read as `left` / `returned` by the reminders that tell
        the direction, and a `tamper` now and then (see DOOR_DIRECTION_SHARE)."""
        pop = self.population
        devices = np.nonzero(pop.device_kind == DOOR_SENSOR)[0].tolist()
        if not devices:
            return {}
        # the truth lines the model reads, in the truth's order (the model draws span by span)
        spans: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        for plan in self.plans:
            if plan.resident >= 0 and plan.kind in OUTING_KINDS | DOWN_KINDS:
                spans[plan.resident].append((plan.kind, plan.start_s, plan.end_or(self.end_s)))
        residents = pop.device_resident[devices]
        tells = (
            rand.uniform(self.seed, "door.direction", residents) < DOOR_DIRECTION_SHARE
        )  # = tells_direction
        months = (self.end_s - self.start_s) / (30 * DAY_S)
        tampered = rand.uniform(self.seed, "door.tamper", residents) < DOOR_TAMPER_PER_MONTH * months
        tamper_at = self.start_s + np.floor(
            rand.uniform(self.seed, "door.tamper_at", residents) * (self.end_s - self.start_s)
        ).astype(np.int64)
        out: dict[int, list[tuple[int, int]]] = {}
        for k, (device, r) in enumerate(zip(devices, residents.tolist(), strict=True)):
            own = spans.get(r, [])
            times = self.door.passages(pop.resident_ids[r], own, self.start_s, self.end_s)
            leaving = {a for kind, a, _ in own if kind in OUTING_KINDS} if tells[k] else set()
            coming = {b for kind, _, b in own if kind in OUTING_KINDS} if tells[k] else set()
            triggers = [
                (t, EV_LEFT if t in leaving else EV_RETURNED if t in coming else EV_PASSAGE) for t in times
            ]
            if tampered[k]:
                triggers.append((int(tamper_at[k]), EV_TAMPER))
            out[device] = sorted(triggers)
        return out


def _minutes(plan: Planned, start: int, end_s: int) -> tuple[int, int]:
    """The incident's minutes within the local day starting at `start`."""
    a = max(0, (plan.start_s - start) // 60)
    b = min(MINUTES_PER_DAY, -(-(plan.end_or(end_s) - start) // 60))
    return a, max(a, b)


def _add_cleaning(row: F32, plan: Planned, start: int) -> None:
    """A bucket filled every 15 minutes through the cleaning, two minutes each."""
    end = plan.end_or(plan.start_s + 4 * 3600)
    fills = max(1, (end - plan.start_s) // 900)
    per_fill = float(plan.params["extra_l"]) / fills
    for i in range(fills):
        minute = (plan.start_s + i * 900 - start) // 60
        if 0 <= minute < MINUTES_PER_DAY - 1:
            row[minute : minute + 2] += np.float32(per_fill / 2)


def _battery_plans(
    scenario: Scenario,
    population: Population,
    meters: MeterBehaviour,
    sensors: SensorBehaviour,
    plans: list[Planned],
    start_s: int,
    end_s: int,
) -> list[Planned]:
    """A battery_low incident where a battery crosses its threshold within the span."""
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
