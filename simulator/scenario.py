"""Scenarios: the parameters of a simulated district, from TOML over documented defaults.

`Scenario.load(None)` is `scenarios/default.toml`, which documents every value. A user's
file is laid over it (tables merge, arrays replace), then validated at once so a typo is an
error with the file's name, never a silent default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from lovekey.errors import ScenarioError

DEFAULT_SCENARIO = Path(__file__).with_name("scenarios") / "default.toml"

IncidentKind = Literal[
    "no_use",
    "running_tap",
    "slow_leak",
    "meter_silent",
    "gateway_outage",
    "meter_swap",
    "planned_absence",
    "unannounced_absence",
    "smoke",
    "gas",
    "sos",
    "day_out",
    "cleaning_day",
    "late_messages",
    "duplicate_messages",
]

INCIDENT_KINDS: tuple[IncidentKind, ...] = get_args(IncidentKind)

ReportingMode = Literal["minute", "quarter_hour", "hourly_batch", "four_daily", "daily"]
REPORTING_MODES: tuple[ReportingMode, ...] = get_args(ReportingMode)


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"range {list(value)} has low > high")
    return value


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PopulationSpec(_Model):
    """The scenario's `[population]` section: how the district is drawn (`population.Population`)."""

    residents_per_building: Range
    buildings_per_grid: Range
    grids_per_community: Range
    units_per_building: Range
    floors_per_building: Range
    smoke_share: Share
    gas_share: Share
    sos_share: Share
    away_share: Share
    second_key_holder_share: Share
    family_share: Share
    second_staff_share: Share
    resident_phone_share: Share

    @model_validator(mode="after")
    def _at_least_one(self) -> PopulationSpec:
        for name in (
            "residents_per_building",
            "buildings_per_grid",
            "grids_per_community",
            "units_per_building",
            "floors_per_building",
        ):
            if getattr(self, name)[0] < 1:
                raise ValueError(f"{name} must be at least 1")
        return self


class Profile(_Model):
    name: str
    share: Share
    volume_scale: tuple[Positive, Annotated[float, Field(ge=0.0)]]
    metered_flush_share: Share
    flushes_per_day: Range
    night_flushes: Range
    shower_every_days: Range
    laundry_every_days: Range
    home_cooking: Share

    @model_validator(mode="after")
    def _intervals(self) -> Profile:
        if self.shower_every_days[0] < 1 or self.laundry_every_days[0] < 1:
            raise ValueError("shower_every_days and laundry_every_days are at least 1")
        if self.flushes_per_day[1] > 12 or self.night_flushes[1] > 4:
            raise ValueError("at most 12 flushes a day and 4 a night are modelled")
        return self


class Routine(_Model):
    wake_h: tuple[float, Annotated[float, Field(ge=0.0)]]
    sleep_h: tuple[float, Annotated[float, Field(ge=0.0)]]
    weekend_later_h: float
    flush_l: tuple[tuple[Positive, Annotated[float, Field(ge=0.0)]], ...]
    hand_wash_after_flush: Share
    hand_wash_l: Positive
    hygiene_l: Positive
    meal_prep_l: Positive
    washing_up_l: Positive
    shower_lpm: Positive
    shower_min: Range
    laundry_l: Range
    misc_draws_per_day: Annotated[float, Field(ge=0.0, le=8.0)]
    misc_l: Positive
    weekend_visit_share: Share
    morning_shower_share: Share


class Meters(_Model):
    mode_share: dict[ReportingMode, Annotated[float, Field(ge=0.0)]]
    epoch_ts_share: Share
    total_m3_share: Share
    fine_resolution_share: Share
    clock_offset_s: Annotated[int, Field(ge=0, le=300)]
    jitter_s: Annotated[int, Field(ge=0, le=10)]
    latency_s: Range
    batch_offset_s: dict[
        Literal["hourly_batch", "four_daily", "daily"], Annotated[int, Field(ge=0, le=6 * 3600)]
    ]
    initial_total_l: Range
    battery_v: Range
    battery_drain_v_per_day: Range
    battery_low_v: Positive
    failing_battery_share: Share

    @model_validator(mode="after")
    def _some_mode(self) -> Meters:
        if sum(self.mode_share.values()) <= 0:
            raise ValueError("mode_share needs at least one reporting mode with a share above 0")
        if self.initial_total_l[0] < 0:
            raise ValueError("initial_total_l cannot be negative")
        return self


class Sensors(_Model):
    smoke_interval_s: Annotated[int, Field(ge=60, le=86400)]
    gas_interval_s: Annotated[int, Field(ge=60, le=86400)]
    latency_s: Range
    battery_v: Range
    battery_drain_v_per_day: Range
    battery_low_v: Positive

    @model_validator(mode="after")
    def _whole_days(self) -> Sensors:
        for name in ("smoke_interval_s", "gas_interval_s"):
            if 86400 % getattr(self, name):
                raise ValueError(f"{name} must divide a day (86400 s) evenly")
        return self


class KindParams(_Model):
    """Parameters of one incident kind; a kind uses the ones that mean something to it."""

    duration_h: Range = (0.0, 0.0)
    open_share: Share = 0.0
    start_h: Range = (0.0, 24.0)
    flow_lpm: Range = (0.0, 0.0)
    delay_s: Range = (0.0, 0.0)
    buffered_share: Share = 0.0
    initial_l: Range = (0.0, 0.0)
    level: Range = (0.0, 0.0)
    extra_l: Range = (0.0, 0.0)

    @model_validator(mode="after")
    def _hours(self) -> KindParams:
        if not 0.0 <= self.start_h[0] <= self.start_h[1] <= 24.0:
            raise ValueError("start_h must lie within [0, 24]")
        if self.duration_h[0] < 0:
            raise ValueError("duration_h cannot be negative")
        return self


class FixedIncident(_Model):
    """An incident at a fixed time, written in the scenario."""

    kind: IncidentKind
    resident: int | str | None = None
    gateway: int | str | None = None
    start_h: float | None = None
    start: datetime | None = None
    duration_h: Annotated[float, Field(ge=0.0)] | None = None
    open: bool = False
    flow_lpm: Annotated[float, Field(ge=0.0)] | None = None
    delay_s: Annotated[float, Field(ge=0.0)] | None = None
    buffered: bool | None = None
    initial_l: Annotated[float, Field(ge=0.0)] | None = None
    level: Annotated[float, Field(ge=0.0)] | None = None
    extra_l: Annotated[float, Field(ge=0.0)] | None = None

    @model_validator(mode="after")
    def _subject_and_time(self) -> FixedIncident:
        if (self.start_h is None) == (self.start is None):
            raise ValueError(f"{self.kind}: give exactly one of start_h or start")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError(f"{self.kind}: start needs a UTC offset (e.g. +08:00)")
        if self.kind == "gateway_outage":
            if self.gateway is None:
                raise ValueError("gateway_outage needs `gateway` (an index or an id)")
        elif self.resident is None:
            raise ValueError(f"{self.kind} needs `resident` (an index or an id)")
        if self.open and self.duration_h is not None:
            raise ValueError(f"{self.kind}: give duration_h or open = true, not both")
        return self


class Incidents(_Model):
    rate: dict[IncidentKind, Annotated[float, Field(ge=0.0)]]
    fixed: tuple[FixedIncident, ...] = ()
    no_use: KindParams = KindParams()
    running_tap: KindParams = KindParams()
    slow_leak: KindParams = KindParams()
    meter_silent: KindParams = KindParams()
    gateway_outage: KindParams = KindParams()
    meter_swap: KindParams = KindParams()
    planned_absence: KindParams = KindParams()
    unannounced_absence: KindParams = KindParams()
    smoke: KindParams = KindParams()
    gas: KindParams = KindParams()
    sos: KindParams = KindParams()
    day_out: KindParams = KindParams()
    cleaning_day: KindParams = KindParams()
    late_messages: KindParams = KindParams()
    duplicate_messages: KindParams = KindParams()

    def params(self, kind: str) -> KindParams:
        value: KindParams = getattr(self, kind)
        return value


class Scenario(_Model):
    """A validated scenario. Build it with `Scenario.load(path)`."""

    population: PopulationSpec
    profile: tuple[Profile, ...]
    routine: Routine
    meters: Meters
    sensors: Sensors
    incidents: Incidents
    source: str | None = None  # the file laid over the defaults, for messages

    @model_validator(mode="after")
    def _shares(self) -> Scenario:
        if not self.profile or sum(p.share for p in self.profile) <= 0:
            raise ValueError("at least one [[profile]] with a share above 0 is needed")
        if not self.routine.flush_l or sum(s for _, s in self.routine.flush_l) <= 0:
            raise ValueError("routine.flush_l needs at least one cistern with a share above 0")
        return self

    @classmethod
    def load(cls, path: str | Path | None = None) -> Scenario:
        """The defaults, with the TOML file at `path` (if any) laid over them."""
        data = _read_toml(DEFAULT_SCENARIO, None)
        if path is not None:
            data = _overlay(data, _read_toml(Path(path), str(path)))
            data["source"] = str(path)
        return cls.from_mapping(data, source=str(path) if path is not None else None)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> Scenario:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ScenarioError(source, str(exc)) from exc

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A copy with nested `overrides` laid over this scenario, validated again."""
        data = _overlay(self.model_dump(mode="python"), overrides)
        return self.from_mapping(data, source=self.source)


def _read_toml(path: Path, name: str | None) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ScenarioError(name, "file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(name, f"invalid TOML: {exc}") from exc


# Tables that a file gives whole: the reporting modes it lists are all the modes there are.
_REPLACED_TABLES = frozenset({"mode_share"})


def _overlay(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key (except `_REPLACED_TABLES`); arrays and values replace."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in _REPLACED_TABLES:
            out[key] = _overlay(out[key], value)
        else:
            out[key] = value
    return out
