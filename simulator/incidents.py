"""Incidents with ground truth: what happens to whom, when, and what a detector should say.

`plan_incidents` draws incidents by rate (per resident per 30 days, per gateway for outages)
and adds the scenario's fixed ones; the world then applies them to water use and traffic.
Every incident is written to the ground truth as one `Incident`; `details["expected_alert"]`
names the alert kind a correct platform raises for it (None for the harmless ones: a day
out, a cleaning day, an announced absence, a meter swap, transport hiccups).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import numpy as np

from lovekey.errors import ScenarioError
from lovekey.simulator import rand
from lovekey.simulator.population import AWAY_BUTTON, GAS, SMOKE, SOS_BUTTON, WATER_METER, Population
from lovekey.simulator.scenario import INCIDENT_KINDS, FixedIncident, KindParams, Scenario

LOCAL = timezone(timedelta(hours=8), "Asia/Shanghai")
LOCAL_OFFSET_S = 8 * 3600

# The alert a correct platform raises for each kind (interface 4 kinds); None: no alert.
EXPECTED_ALERT: dict[str, str | None] = {
    "no_use": "low_usage",
    "running_tap": "running_tap",
    "slow_leak": "leak",
    "meter_silent": "meter_silent",
    "gateway_outage": "gateway_offline",
    "meter_swap": None,
    "planned_absence": None,
    "unannounced_absence": "low_usage",
    "smoke": "smoke",
    "gas": "gas",
    "sos": "sos",
    "day_out": None,
    "cleaning_day": None,
    "late_messages": None,
    "duplicate_messages": None,
    "battery_low": None,
}

# A resident is in at most one of these at a time (they change who is home and using water).
PRESENCE_KINDS = frozenset(
    {
        "no_use",
        "planned_absence",
        "unannounced_absence",
        "day_out",
        "cleaning_day",
        "running_tap",
    }
)
# Kinds whose water use is zero from start to end (a leak still runs through them).
NO_USE_KINDS = frozenset({"no_use", "planned_absence", "unannounced_absence", "day_out"})
# Kinds that need a device other than the meter, and which one.
DEVICE_FOR = {"smoke": SMOKE, "gas": GAS, "sos": SOS_BUTTON, "planned_absence": AWAY_BUTTON}
INSTANT_KINDS = frozenset({"meter_swap", "sos"})


@dataclass(frozen=True, slots=True)
class Incident:
    """One line of the ground truth. `end` is None when the incident has no end (open)."""

    kind: str
    start: datetime
    end: datetime | None
    resident_id: str | None
    device_id: str | None
    gateway_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resident_id": self.resident_id,
            "device_id": self.device_id,
            "gateway_id": self.gateway_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end is not None else None,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class Planned:
    """An incident as the world applies it: indices and epoch seconds."""

    kind: str
    start_s: int
    end_s: int | None  # None: open (still going when the simulation ends)
    resident: int  # -1 for gateway incidents
    device: int  # -1 when no single device is concerned
    gateway: int  # -1 unless it is a gateway incident
    params: Mapping[str, Any]
    fixed: bool = False

    def end_or(self, horizon_s: int) -> int:
        return horizon_s if self.end_s is None else self.end_s

    def overlaps(self, start_s: int, end_s: int) -> bool:
        """Whether [start, end) of this incident meets [start_s, end_s)."""
        if self.kind in INSTANT_KINDS:
            return start_s <= self.start_s < end_s
        return self.start_s < end_s and (self.end_s is None or self.end_s > start_s)


def local_datetime(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC).astimezone(LOCAL)


def to_incident(plan: Planned, population: Population) -> Incident:
    details: dict[str, Any] = {"expected_alert": EXPECTED_ALERT[plan.kind]}
    details.update(plan.params)
    details["source"] = "scenario" if plan.fixed else "rate"
    if plan.kind == "unannounced_absence":
        details["note"] = (
            "away without pressing the away button: no water use, and a low-usage alert is "
            "the right outcome (staff call and find the resident away)"
        )
    return Incident(
        kind=plan.kind,
        start=local_datetime(plan.start_s),
        end=None if plan.end_s is None else local_datetime(plan.end_s),
        resident_id=population.resident_ids[plan.resident] if plan.resident >= 0 else None,
        device_id=population.device_ids[plan.device] if plan.device >= 0 else None,
        gateway_id=population.gateway_ids[plan.gateway] if plan.gateway >= 0 else None,
        details=MappingProxyType(details),
    )


def plan_incidents(
    scenario: Scenario, population: Population, *, seed: int, start_s: int, end_s: int
) -> list[Planned]:
    """Fixed incidents, then drawn ones, sorted by start; presence kinds never overlap."""
    fixed = [_fixed(spec, scenario, population, start_s) for spec in scenario.incidents.fixed]
    drawn: list[Planned] = []
    span_days = (end_s - start_s) / 86400
    for kind in INCIDENT_KINDS:
        rate = scenario.incidents.rate.get(kind, 0.0)
        if rate <= 0 or span_days <= 0:
            continue
        drawn.extend(
            _draw(
                kind, rate * span_days / 30.0, scenario, population, seed=seed, start_s=start_s, end_s=end_s
            )
        )
    kept: list[Planned] = []
    busy: dict[int, list[tuple[int, int]]] = {}
    horizon = end_s + 10 * 365 * 86400
    for plan in fixed + sorted(drawn, key=lambda p: (p.start_s, p.kind, p.resident, p.gateway)):
        if plan.kind in PRESENCE_KINDS:
            window = (plan.start_s, plan.end_or(horizon))
            taken = busy.setdefault(plan.resident, [])
            if not plan.fixed and any(a < window[1] and window[0] < b for a, b in taken):
                continue
            taken.append(window)
        kept.append(plan)
    kept.sort(key=lambda p: (p.start_s, p.kind, p.resident, p.gateway))
    return kept


def _draw(
    kind: str,
    expected: float,
    scenario: Scenario,
    population: Population,
    *,
    seed: int,
    start_s: int,
    end_s: int,
) -> list[Planned]:
    params = scenario.incidents.params(kind)
    subjects = population.gateway_count if kind == "gateway_outage" else population.residents
    index = np.arange(subjects)
    # Up to `slots` incidents per subject, each slot happening with expected/slots:
    # binomial, as close to Poisson as we need for expected counts well under `slots`.
    slots = max(4, math.ceil(3 * expected) + 2)
    happens = rand.uniform(seed, f"incident.{kind}.happens", index, slots=slots) < expected / slots
    if kind in DEVICE_FOR:
        happens &= population.has_device(DEVICE_FOR[kind])[:, None]
    subject, slot = np.nonzero(happens)
    if len(subject) == 0:
        return []
    key = subject.astype(np.int64) * slots + slot

    def draw(name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return rand.uniform(seed, f"incident.{kind}.{name}", key)

    starts = _start_times(params, draw("start"), draw("start_hour"), start_s, end_s)
    duration_s = (
        params.duration_h[0] + (params.duration_h[1] - params.duration_h[0]) * draw("duration")
    ) * 3600
    is_open = draw("open") < params.open_share
    values = {
        name: lo + (hi - lo) * draw(name)
        for name, (lo, hi) in (
            ("flow_lpm", params.flow_lpm),
            ("delay_s", params.delay_s),
            ("initial_l", params.initial_l),
            ("level", params.level),
            ("extra_l", params.extra_l),
        )
        if hi > 0
    }
    buffered = draw("buffered") < params.buffered_share
    out = []
    for j in range(len(subject)):
        s = int(starts[j])
        if not start_s <= s < end_s:
            continue
        details = {name: round(float(v[j]), 3) for name, v in values.items()}
        if kind == "gateway_outage":
            details["buffered"] = bool(buffered[j])
        end = _end(kind, s, float(duration_s[j]), bool(is_open[j]))
        out.append(_subject_plan(kind, s, end, int(subject[j]), population, details, fixed=False))
    return out


def _start_times(
    params: KindParams,
    u_start: np.ndarray[Any, np.dtype[np.float64]],
    u_hour: np.ndarray[Any, np.dtype[np.float64]],
    start_s: int,
    end_s: int,
) -> np.ndarray[Any, np.dtype[np.int64]]:
    lo_h, hi_h = params.start_h
    if (lo_h, hi_h) == (0.0, 24.0):
        return np.asarray(start_s + np.floor(u_start * (end_s - start_s)), dtype=np.int64)
    # a local day in the span, then an hour within the kind's hours on that day
    first_day = (start_s + LOCAL_OFFSET_S) // 86400
    last_day = (end_s - 1 + LOCAL_OFFSET_S) // 86400
    day = first_day + np.floor(u_start * (last_day - first_day + 1))
    at = day * 86400 - LOCAL_OFFSET_S + (lo_h + (hi_h - lo_h) * u_hour) * 3600
    return np.asarray(np.floor(at), dtype=np.int64)


def _end(kind: str, start_s: int, duration_s: float, is_open: bool) -> int | None:
    if kind in INSTANT_KINDS:
        return start_s
    if is_open:
        return None
    return start_s + max(60, round(duration_s))


def _subject_plan(
    kind: str,
    start_s: int,
    end_s: int | None,
    subject: int,
    population: Population,
    details: dict[str, Any],
    *,
    fixed: bool,
) -> Planned:
    # incidents begin and end on whole minutes, the resolution water use is simulated at
    start_s = start_s // 60 * 60
    if end_s is not None:
        end_s = max(start_s, -(-end_s // 60) * 60)
    if kind == "gateway_outage":
        count = int(np.count_nonzero(population.device_gateway == subject))
        details = {**details, "devices": count}
        return Planned(kind, start_s, end_s, -1, -1, subject, MappingProxyType(details), fixed)
    devices = population.devices_of(subject)
    device = devices[DEVICE_FOR.get(kind, WATER_METER)]
    gateway = -1
    return Planned(kind, start_s, end_s, subject, device, gateway, MappingProxyType(details), fixed)


def _fixed(spec: FixedIncident, scenario: Scenario, population: Population, start_s: int) -> Planned:
    where = scenario.source
    if spec.start is not None:
        at = int(spec.start.timestamp())
    else:
        assert spec.start_h is not None  # the model allows exactly one
        at = start_s + round(spec.start_h * 3600)
    params = scenario.incidents.params(spec.kind)
    details: dict[str, Any] = {}
    for name in ("flow_lpm", "delay_s", "initial_l", "level", "extra_l"):
        value = getattr(spec, name)
        lo, hi = getattr(params, name)
        if value is None and hi > 0:
            value = (lo + hi) / 2
        if value is not None:
            details[name] = float(value)
    if spec.kind == "gateway_outage":
        details["buffered"] = bool(spec.buffered) if spec.buffered is not None else False
        subject = _lookup(spec.gateway, population.gateway_ids, "gateway", where)
    else:
        subject = _lookup(spec.resident, population.resident_ids, "resident", where)
        needs = DEVICE_FOR.get(spec.kind)
        if needs is not None and needs not in population.devices_of(subject):
            raise ScenarioError(
                where,
                f"fixed {spec.kind} for {population.resident_ids[subject]}: the resident "
                f"has no {('smoke sensor', 'gas sensor', 'SOS button', 'away button')[needs - 1]}",
            )
    if spec.open:
        end: int | None = None
    elif spec.duration_h is not None:
        end = at + round(spec.duration_h * 3600)
    else:
        lo, hi = params.duration_h
        end = _end(spec.kind, at, (lo + hi) / 2 * 3600, params.open_share >= 1.0)
    if spec.kind in INSTANT_KINDS:
        end = at
    return _subject_plan(spec.kind, at, end, subject, population, details, fixed=True)


def _lookup(ref: int | str | None, ids: list[str], what: str, where: str | None) -> int:
    if isinstance(ref, int):
        if not 0 <= ref < len(ids):
            raise ScenarioError(where, f"fixed incident: {what} index {ref} is not in 0..{len(ids) - 1}")
        return ref
    try:
        return ids.index(str(ref))
    except ValueError:
        raise ScenarioError(where, f"fixed incident: no {what} {ref!r} in this district") from None
