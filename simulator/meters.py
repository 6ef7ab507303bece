"""Device behaviour: how each meter reports, clocks and batteries, and the sensors' readings.

Parameters are drawn once per device from `simulator.rand`; nothing here depends on the
order devices are generated in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lovekey.simulator import rand
from lovekey.simulator.population import GAS, SMOKE, Population
from lovekey.simulator.scenario import REPORTING_MODES, Scenario

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Mode:
    """A reporting mode: frozen values every `interval_s`, `per_message` values a message."""

    name: str
    interval_s: int
    per_message: int
    batch: bool  # sent as {"readings": [...]}
    flow: bool  # carries flow_lpm

    @property
    def message_every_s(self) -> int:
        return self.interval_s * self.per_message


MODES = {
    "minute": Mode("minute", 60, 1, batch=False, flow=True),
    "quarter_hour": Mode("quarter_hour", 900, 1, batch=False, flow=False),
    "hourly_batch": Mode("hourly_batch", 900, 4, batch=True, flow=False),
    "four_daily": Mode("four_daily", 3600, 6, batch=True, flow=False),
    "daily": Mode("daily", 3600, 24, batch=True, flow=False),
}
MODE_LIST = tuple(MODES[name] for name in REPORTING_MODES)

NEW_METER_BATTERY_V = 3.65
_FAILING_DRAIN_V_PER_DAY = (0.002, 0.005)


@dataclass(frozen=True)
class MeterBehaviour:
    """How each water meter reports, keeps time and drains its battery; per resident (= per meter)."""

    mode: I32
    epoch_ts: BOOL  # sends epoch seconds instead of RFC 3339
    m3: BOOL  # sends total_m3 (whole litres) instead of total_l
    fine: BOOL  # 0.1 L register (else whole litres)
    clock_offset_s: I32
    upload_offset_s: I32  # batch meters upload this long after the batch closes
    initial_total_l: F64
    battery_v0: F64  # at the start of the simulation
    drain_v_per_day: F64
    install_s: I64  # when the meter was fitted (its seq counts from there)


def draw_meters(scenario: Scenario, population: Population, *, seed: int, start_s: int) -> MeterBehaviour:
    m = scenario.meters
    n = population.residents
    r = np.arange(n)
    mode = population.meter_mode
    m3 = rand.uniform(seed, "meter.m3", r) < m.total_m3_share
    fine = (rand.uniform(seed, "meter.fine", r) < m.fine_resolution_share) & ~m3
    offset = np.round(rand.between(seed, "meter.clock", r, -m.clock_offset_s, m.clock_offset_s + 1))
    offsets = {str(name): s for name, s in m.batch_offset_s.items()}
    spread = np.array([offsets.get(name, 0) for name in REPORTING_MODES])[mode]
    upload = np.floor(rand.uniform(seed, "meter.upload", r) * spread)
    lo, hi = m.initial_total_l
    initial = np.round(lo + (hi - lo) * rand.uniform(seed, "meter.initial", r), 1)
    v0 = rand.between(seed, "meter.battery", r, *m.battery_v)
    drain = rand.between(seed, "meter.drain", r, *m.battery_drain_v_per_day)
    failing = rand.uniform(seed, "meter.failing", r) < m.failing_battery_share
    fail_drain = rand.between(seed, "meter.fail_drain", r, *_FAILING_DRAIN_V_PER_DAY)
    fail_after_d = rand.between(seed, "meter.fail_after", r, 0.0, 30.0)
    v0 = np.where(failing, m.battery_low_v + fail_drain * fail_after_d, v0)
    drain = np.where(failing, fail_drain, drain)
    age_s = np.floor(rand.between(seed, "meter.age", r, 30 * 86400, 5 * 365 * 86400))
    return MeterBehaviour(
        mode=mode,
        epoch_ts=rand.uniform(seed, "meter.epoch", r) < m.epoch_ts_share,
        m3=m3,
        fine=fine,
        clock_offset_s=offset.astype(np.int32),
        upload_offset_s=upload.astype(np.int32),
        initial_total_l=initial,
        battery_v0=v0,
        drain_v_per_day=drain,
        install_s=(start_s - age_s).astype(np.int64),
    )


@dataclass(frozen=True)
class SensorBehaviour:
    """How each device reads and drains its battery; per device (all kinds; meaningful for
    smoke and gas sensors and buttons)."""

    interval_s: I32  # 0 for devices without periodic readings
    phase_s: I32  # readings at phase + k * interval within a local day
    epoch_ts: BOOL
    baseline: F64  # smoke obscuration %/m, or gas % LEL, when all is well
    battery_v0: F64
    drain_v_per_day: F64


def draw_sensors(scenario: Scenario, population: Population, *, seed: int) -> SensorBehaviour:
    s = scenario.sensors
    d = np.arange(len(population.device_kind))
    kind = population.device_kind
    interval = np.zeros(len(d), dtype=np.int32)
    interval[kind == SMOKE] = s.smoke_interval_s
    interval[kind == GAS] = s.gas_interval_s
    phase = np.floor(rand.uniform(seed, "sensor.phase", d) * np.maximum(interval, 1))
    baseline = np.where(
        kind == GAS,
        np.round(rand.between(seed, "sensor.gas", d, 0.0, 0.8), 1),
        np.round(rand.between(seed, "sensor.smoke", d, 0.0, 0.3), 2),
    )
    return SensorBehaviour(
        interval_s=interval,
        phase_s=phase.astype(np.int32),
        epoch_ts=rand.uniform(seed, "sensor.epoch", d) < scenario.meters.epoch_ts_share,
        baseline=baseline,
        battery_v0=rand.between(seed, "sensor.battery", d, *s.battery_v),
        drain_v_per_day=rand.between(seed, "sensor.drain", d, *s.battery_drain_v_per_day),
    )
