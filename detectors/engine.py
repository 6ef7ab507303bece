"""The detector: usage ring + per-meter runs + routine profile + alert states. Pure.

`Detector` holds everything in memory and is driven from outside: `apply` readings (any
order; late ones come back as meters to rebuild), then `sweep(now, ...)` evaluates every rule
for every meter at once and returns the alert transitions. The database runner and the
simulator replay drive the very same object, so what is scored is what runs.

Rules are evaluated at each meter's *horizon*: the end of its newest complete bucket. A meter
that reports hourly batches or once a day is judged on the data it has, never on buckets it
has not reported yet (unknown is not zero); whether a meter is *silent* is judged against
`now` and its expected reporting interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lovekey.config import DetectSettings
from lovekey.config.settings import MAX_FLOW_LPM_DEFAULT
from lovekey.detectors import rules
from lovekey.detectors.changes import Change, silent_details, water_details
from lovekey.detectors.day_learning import DayLearner
from lovekey.detectors.hysteresis import RuleState
from lovekey.detectors.params import MeterParams
from lovekey.detectors.profile import RoutineProfile
from lovekey.detectors.resident_meters import ResidentMeters
from lovekey.detectors.ring import LEAK_READING_SLACK_L, LEAK_USE_MIN_L, NEVER, ApplyResult, UsageRing
from lovekey.detectors.rules import SweepInput, Verdict
from lovekey.detectors.runs import Runs
from lovekey.vocabulary import WELFARE_KINDS, AlertKind, AlertTier

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
BOOL = npt.NDArray[np.bool_]

# the alerts a sweep raises, by subject: the resident (the rules over their water use), the
# meter, the gateway
WATER_KINDS: tuple[AlertKind, ...] = (*WELFARE_KINDS, AlertKind.LEAK)
METER_KINDS: tuple[AlertKind, ...] = (AlertKind.METER_SILENT,)
GATEWAY_KINDS: tuple[AlertKind, ...] = (AlertKind.GATEWAY_OFFLINE,)
SWEPT_KINDS: tuple[AlertKind, ...] = WATER_KINDS + METER_KINDS + GATEWAY_KINDS
# the rules that fire on a resident being quiet (all their meters), held while they are away
QUIET_KINDS: tuple[AlertKind, ...] = (AlertKind.LOW_USAGE, AlertKind.ROUTINE_BREAK)


@dataclass(frozen=True, slots=True)
class Registry:
    """Who is who, as indexes: meter i belongs to resident `resident_of[i]` (-1: nobody)."""

    meter_ids: Sequence[str]
    resident_ids: Sequence[str]
    gateway_ids: Sequence[str]
    resident_of: I64
    gateway_of: I64
    params: MeterParams
    # per resident: can be asked on their own phone (the check-in tier); None: everyone
    askable: BOOL | None = None
    # per resident: their household has a door reminder (`kind=door_sensor`); None: nobody
    door: BOOL | None = None

    def __post_init__(self) -> None:
        m = len(self.meter_ids)
        if not (self.resident_of.size == self.gateway_of.size == self.params.meters == m):
            raise ValueError("registry arrays must all have one entry per meter")
        if self.askable is not None and self.askable.size != len(self.resident_ids):
            raise ValueError("askable has one entry per resident")
        if self.door is not None and self.door.size != len(self.resident_ids):
            raise ValueError("door has one entry per resident")


@dataclass(frozen=True, slots=True)
class Presence:
    """Per resident: away now, and since when monitoring runs (end of the last absence).

    `lapsed_since_s`: the start of an absence that ended by running out (the away button's
    default length passed without a `home`), NEVER otherwise. Until water is used again the
    resident is taken to be still away: someone who pressed "going out" and has not run a
    tap since has not come back.
    """

    away: BOOL
    monitor_since_s: I64
    lapsed_since_s: I64 | None = None
    # when the resident last answered a check-in "fine" (NEVER: not yet): their open quiet
    # alerts are closed, and the floor's window and the dry runs start again from then
    answered_fine_s: I64 | None = None
    # when the resident was last seen up and about other than by their water: a passage at
    # the door reminder. It ends a dry run for the learned rules (not for the floor)
    active_at_s: I64 | None = None
    # per resident and quarter of the local day (night, morning, afternoon, evening): the
    # longest dry stretch at which they answered a check-in "fine" lately. routine_break's
    # check-in tier does not ask again for a stretch no longer than that (the floor does)
    fine_dry_s: npt.NDArray[np.int64] | None = None
    # when the condition began of the newest alert a person resolved as the resident needing
    # help (NEVER: none lately). That dry run was an incident, not their routine: its days
    # are not learned, so their thresholds stay where their ordinary days put them
    found_s: I64 | None = None

    @classmethod
    def everyone_home(cls, residents: int) -> Presence:
        return cls(np.zeros(residents, np.bool_), np.full(residents, NEVER, np.int64))


class Detector:
    # the quiet rules' window and limits are computed for the meters that may fire when they
    # are under this share of all meters, else for all at once (tests set 0 or 1 to compare)
    quiet_subset_share = 0.25

    def __init__(
        self,
        registry: Registry,
        settings: DetectSettings,
        *,
        now_s: int,
        utc_offset_s: int,
        learn_days: bool = True,
        max_flow_lpm: float | None = MAX_FLOW_LPM_DEFAULT,
    ) -> None:
        """`max_flow_lpm`: a rise faster than this is not use (`ingest.max_flow_lpm`).
        `learn_days=False`: never summarise days (thresholds are set by the caller, as the
        benchmark does on a ring too short to hold a day); the ring may then be any length."""
        self.registry = registry
        self.settings = settings
        self.bucket_s = settings.bucket_minutes * 60
        bs = self.bucket_s
        meters = len(registry.meter_ids)
        self.ring = UsageRing(
            meters,
            bucket_s=bs,
            buckets=settings.ring_hours * 3600 // bs,
            now_s=now_s,
            max_spread_s=int(settings.max_spread_h * 3600),
            flow_span_max_s=settings.flow_span_max_s,
            flow_window_s=max(bs, 3600 // bs * bs),
            zero_l=settings.leak_dry_l,
            use_min_l=settings.use_min_l,
            max_flow_lpm=max_flow_lpm,
        )
        self.runs = Runs(meters)
        self.profile = RoutineProfile(
            meters,
            bucket_s=bs,
            days=settings.routine_history_days,
            day_start_s=int(settings.routine_day_start_h * 3600) // bs * bs,
            utc_offset_s=utc_offset_s,
        )
        self.days = DayLearner(
            self.ring,
            self.profile,
            settings,
            registry.params.routine_margin_b,
            learn=learn_days,
            floor_min_l=registry.params.low_min_l,
        )
        residents, gateways = len(registry.resident_ids), len(registry.gateway_ids)
        self.states: dict[str, RuleState] = {
            **{k: RuleState(residents) for k in WATER_KINDS},
            AlertKind.METER_SILENT: RuleState(meters),
            AlertKind.GATEWAY_OFFLINE: RuleState(gateways),
        }
        self.resident_meters = ResidentMeters(registry.resident_of, residents)
        # per welfare kind and resident: the open alert only asks the resident (check-in tier)
        self.check_in_only = {k: np.zeros(residents, np.bool_) for k in WATER_KINDS}
        # ... raised at the check-in tier although its neighbour tier had fired already
        # (`quiet_neighbour_asks_first`): the stage's silence, not the tier, wakes the neighbour
        self.asked_first = {k: np.zeros(residents, np.bool_) for k in WATER_KINDS}
        self._answered: I64 | None = None  # per resident: their last "fine", this sweep
        self._answered_before: I64 | None = None  # ... and at the sweep before
        self._field_judged_hz = np.full(meters, NEVER, np.int64)  # the field rule's last window
        # per meter: the start of the dry run its resident was found needing help in, and
        # whether that dry run has ended (its days are all tainted)
        self._found_since = np.full(meters, NEVER, np.int64)
        self._found_done = np.zeros(meters, np.bool_)
        self._meters_of_gateway = np.bincount(registry.gateway_of, minlength=gateways)
        self._leak_known = np.zeros(meters, np.bool_)  # leak flow measured this hour
        self._leak_hour = -1
        self._all_meters = np.arange(meters, dtype=np.int64)
        # meters that report at least hourly are the ones that can tell a gateway is down
        self._judges = registry.params.report_interval_s <= settings.gateway_judge_interval_s
        self._judge_count = np.bincount(registry.gateway_of[self._judges], minlength=gateways)
        self._judge_quiet_s = registry.params.report_interval_s + settings.gateway_silent_grace_s
        # how far behind `now` a meter's data may be for a running tap or a leak to be current
        p = registry.params
        self._tap_lag_s = p.report_interval_s + p.tap_limit_s
        self._leak_lag_s = p.report_interval_s + p.leak_limit_s
        self.utc_offset_s = utc_offset_s
        self.last_sweep_s: int | None = None
        self.quiet_candidates = 0  # meters the last sweep judged the quiet rules' window for

    @property
    def recorded_days(self) -> list[int]:
        """Days learned since the owner last looked (to persist; the owner clears it)."""
        return self.days.recorded

    def relearn(self) -> None:
        """Recompute routine thresholds from the recorded days (after loading saved days)."""
        self.days.relearn()

    # -- data in --------------------------------------------------------------------------

    def apply(
        self,
        meter: npt.ArrayLike,
        ts_s: npt.ArrayLike,
        total_l: npt.ArrayLike,
        arrival_s: npt.ArrayLike | None = None,
    ) -> ApplyResult:
        """New readings. Meters in `.dirty` got late data: pass their history to `rebuild`."""
        result = self.ring.apply(meter, ts_s, total_l, arrival_s)
        self.runs.observe(
            result.completed,
            self.registry.params,
            bucket_s=self.bucket_s,
            dry_l=self.settings.leak_dry_l,
            baseline_l=self.ring.baseline_l,
        )
        return result

    def rebuild(
        self,
        meters: npt.ArrayLike,
        meter: npt.ArrayLike,
        ts_s: npt.ArrayLike,
        total_l: npt.ArrayLike,
        arrival_s: npt.ArrayLike | None = None,
    ) -> None:
        """Replace what is known of `meters` by their full history (readings of those meters)."""
        ms = np.asarray(meters, dtype=np.int64)
        # a leak measured before still runs through the history: re-read net of it
        leak_l = self.ring.baseline_l[ms].copy()
        self.ring.reset_meters(ms)
        self.ring.baseline_l[ms] = leak_l
        self.runs.reset(ms)
        result = self.apply(meter, ts_s, total_l, arrival_s)
        if result.dirty.size:  # cannot happen for a reset meter's sorted history
            raise AssertionError("rebuild left dirty meters")

    def restore(
        self,
        kind: str,
        subjects: Sequence[str],
        since_s: Sequence[int],
        *,
        resolved_at_s: Sequence[int] | None = None,
    ) -> None:
        """Alerts found in the database when this process started.

        Unresolved ones are active here too (never raised twice). With `resolved_at_s`, these
        are alerts a person resolved: their episode is not raised again while it lasts.
        """
        index = self._subject_index(kind)
        times = resolved_at_s if resolved_at_s is not None else since_s
        found = [(index[s], t, u) for s, t, u in zip(subjects, since_s, times, strict=True) if s in index]
        if not found:
            return
        idx = np.array([i for i, _, _ in found], dtype=np.int64)
        since = np.array([t for _, t, _ in found], dtype=np.int64)
        if resolved_at_s is None:
            self.states[kind].restore(idx, since, since)
        else:
            self.states[kind].handled(idx, np.array([u for _, _, u in found], dtype=np.int64))

    def _subject_index(self, kind: str) -> dict[str, int]:
        reg = self.registry
        ids = (
            reg.resident_ids
            if kind in WATER_KINDS
            else reg.meter_ids
            if kind in METER_KINDS
            else reg.gateway_ids
        )
        return {s: i for i, s in enumerate(ids)}

    # -- one sweep ------------------------------------------------------------------------

    def sweep(
        self,
        now_s: int,
        presence: Presence | None = None,
        gateway_offline_since_s: I64 | None = None,
    ) -> list[Change]:
        """Evaluate every rule at `now_s`; return the alerts to raise and to clear."""
        self.ring.advance(now_s)
        presence = presence or Presence.everyone_home(len(self.registry.resident_ids))
        self.days.learn_due(now_s)
        away_r = self._away(presence)
        # answers are acted on once: the first sweep (a restart) only takes note of them
        self._answered_before = self._answered
        if self._answered_before is None and presence.answered_fine_s is not None:
            self._answered_before = presence.answered_fine_s
        self._answered = presence.answered_fine_s
        inp = self._sweep_input(now_s, presence, gateway_offline_since_s)

        offline = rules.gateway_offline(inp)
        offline_m = offline.raise_when[self.registry.gateway_of]
        silent = rules.meter_silent(inp, offline_m)
        # no data now, from the meter (`clear_when` is "not silent") or through its gateway
        unknown_now = ~silent.clear_when | offline_m
        verdicts = {
            AlertKind.LOW_USAGE: rules.low_usage(inp),
            AlertKind.ROUTINE_BREAK: rules.routine_break(inp),
            AlertKind.RUNNING_TAP: rules.running_tap(inp),
            AlertKind.LEAK: rules.leak(inp),
        }
        away_m = self.resident_meters.to_meters(away_r, False)
        self._judge_field_rule(inp, unknown_now | away_m)
        # after every rule has judged this sweep's data: from now on a leak's flow is netted
        # out of the new buckets and windows (this writes the ring's `baseline_l`)
        self._track_leaks(verdicts[AlertKind.LEAK].raise_when, inp.horizon_s)

        changes = self._step_residents(inp, verdicts, unknown_now, away_r, away_m)
        changes += self._step_meters(silent)
        changes += self._step_gateways(inp, offline)

        # days with an absence or a silence are not learned as normal days, nor those of a
        # dry run a person found to be an incident or one longer than any learned limit.
        # Days of an open no-use alert otherwise are: a false alarm (a long day out) must
        # stay normal, or the resident would learn an ever tighter pattern
        self.days.taint(inp.horizon_s, away_m | unknown_now)
        self._taint_found(inp.horizon_s, presence.found_s)
        self._taint_long_dry(inp.horizon_s)
        self.last_sweep_s = now_s
        return changes

    def _taint_found(self, hz: I64, found_r: I64 | None) -> None:
        """Not learned: the days of a dry run in which the resident was found needing help,
        from its start until water is used again. Learned, they set the resident's limits to
        the incident's length (up to the 24 h cap) for four weeks, and a shorter incident in
        that time could go unseen."""
        if found_r is None:
            return
        found = self.resident_meters.to_meters(found_r, NEVER)
        fresh = found != self._found_since
        self._found_since[fresh] = found[fresh]
        self._found_done[fresh] = False
        m = np.flatnonzero((found != NEVER) & ~self._found_done)
        if m.size == 0:
            return
        since, used_end = found[m], self.runs.last_use_end[m]
        back = used_end > since  # water again: the dry run ended with that use
        self.days.taint_spans(m, since, np.where(back, used_end, hz[m]))
        self._found_done[m[back]] = True

    def _taint_long_dry(self, hz: I64) -> None:
        """Not learned: the days of a dry run longer than any limit may be learned
        (`low_usage_cap_h`). Nobody's routine goes without water for longer; such a run is an
        absence nobody announced or an incident, and learning it left the resident's rules
        at the cap, and off the floor, for four weeks: a shorter incident after it went
        unseen."""
        cap_s = int(self.settings.low_usage_cap_h * 3600)
        if cap_s <= 0:
            return
        # as the rules measure a dry run: from the last use, or from when data began
        dry_from = np.maximum(self.runs.last_use_end, self.ring.known_start)
        m = np.flatnonzero(hz - dry_from > cap_s)
        if m.size:
            oldest = self.ring.oldest * self.bucket_s
            self.days.taint_spans(m, np.maximum(dry_from[m], oldest), hz[m])

    def _away(self, presence: Presence) -> BOOL:
        """Per resident: away now, or back from an absence that ran out without using water."""
        away_r = presence.away
        if presence.lapsed_since_s is not None:
            last_use_r = self.resident_meters.latest(self.runs.last_use_end)
            lapsed = presence.lapsed_since_s
            # water run in the hour or two after pressing "going out" is still before leaving
            leaving_s = 2 * 3600
            away_r = away_r | ((lapsed != NEVER) & (last_use_r <= lapsed + leaving_s))
        return away_r

    def _sweep_input(self, now_s: int, presence: Presence, status_since: I64 | None) -> SweepInput:
        """Gather what the rules read: the ring, the runs, the profile and the open alerts."""
        reg, st, bs = self.registry, self.settings, self.bucket_s
        ring, runs, prof = self.ring, self.runs, self.profile
        params = reg.params
        hz = ring.horizon()
        known_start = ring.known_start
        since_r = presence.monitor_since_s
        if presence.answered_fine_s is not None:  # a "fine" restarts the rules from the answer
            since_r = np.maximum(since_r, presence.answered_fine_s)
        monitor = self.resident_meters.to_meters(-(-since_r // bs) * bs, NEVER)
        dry_from = np.maximum(runs.last_use_end, np.maximum(known_start, monitor))
        water_from = dry_from
        door_out: BOOL | None = None
        if presence.active_at_s is not None:  # a passage at the door ends a dry run
            active = self.resident_meters.to_meters(presence.active_at_s // bs * bs, NEVER)
            # and one with no water after it is probably the resident going out: routine_break's
            # tiers count the dry run from a while later (slower, not silenced: someone can
            # fall after coming home); the floor and low_usage's check-in tier judge water alone
            # (a passage up to `door_out_slack_min` before the last use's bucket ended counts
            # as after it: a hand washed on the way out lands in a bucket that closes after
            # the door saw them go)
            slack = int(st.door_out_slack_min * 60)
            out = (active != NEVER) & (active >= runs.last_use_end - slack)
            # but no passage explains a whole day without water (`low_usage_cap_h`, which
            # no one's routine exceeds): a visitor or a draught at the door while the
            # resident lies on the floor would otherwise put the dry run off again and
            # again. Past it, the dry run is judged on water alone, and nothing is held
            cap_s = int(st.low_usage_cap_h * 3600)
            if cap_s > 0:
                out &= hz - dry_from <= cap_s
            # until `door_out_max_h` after the passage: longer than an outing lasts, the dry
            # run is judged from when the resident was last seen
            held = out & (hz - active < int(st.door_out_max_h * 3600))
            active = np.where(held, active + int(st.door_out_grace_h * 3600) // bs * bs, active)
            # (only a passage out can be later than the dry run's start)
            dry_from = np.where(out, np.maximum(dry_from, np.minimum(active, hz)), dry_from)
            door_out = out
        home_silent: BOOL | None = None
        if reg.door is not None and reg.door.any():  # a reminder that saw nobody leave
            home_silent = self.resident_meters.to_meters(reg.door, False)
            if door_out is not None:
                home_silent = home_silent & ~door_out
            # ... and works: one that has sensed nobody for days (a dead battery) says nothing
            alive = np.zeros(len(reg.resident_ids), np.bool_)
            if (heard := presence.active_at_s) is not None:
                alive = (heard != NEVER) & (now_s - heard < int(st.door_alive_h * 3600))
            home_silent = home_silent & self.resident_meters.to_meters(alive, False)
        dry_b = (hz - dry_from) // bs
        # the profile tables are slot-major: row = the slot each meter's horizon ends
        cell = prof.slot_ending(hz) * len(hz) + self._all_meters
        limit = prof.threshold.reshape(-1).take(cell)  # uint8, compared as it is
        over_limit = dry_b > limit
        answered_dry_b = np.zeros(len(hz), np.int64)
        if presence.fine_dry_s is not None:  # each meter's resident, at its horizon's quarter
            quarter = ((hz + self.utc_offset_s) % 86400) // 21600
            per_r = presence.fine_dry_s // bs
            answered_dry_b = np.where(
                self.resident_meters.has_resident,
                per_r[np.maximum(self.registry.resident_of, 0), quarter],
                0,
            )

        # The quiet rules can fire only where the dry run is already long: longer than the
        # resident's own limit (routine_break) or than low_usage's minimum. The window's
        # litres and the slot each dry run began in are read for those meters (and those of
        # residents with an open low_usage alert, to clear it), for all at once when they
        # are many (a night): the rules' answer is the same either way.
        min_dry_b = int(st.low_usage_min_dry_h * 3600) // bs
        # low_usage, the net under the learned tiers, asks the resident on water alone unless
        # told to wait for the door too: a draught or a visitor at the door while they lie on
        # the floor would put the dry run off by half a day (its neighbour tier waits)
        low_dry_b: I64 | None = None
        if door_out is not None and not st.door_delays_low_usage:
            low_dry_b = (hz - water_from) // bs
        low_active = self.resident_meters.to_meters(self.states[AlertKind.LOW_USAGE].active, False)
        candidates = over_limit | ((dry_b if low_dry_b is None else low_dry_b) >= min_dry_b) | low_active
        learned: BOOL | None = None
        if st.routine_check_in_enabled and not st.routine_check_in_own and prof.early_allowance.any():
            # the check-in tier judges the district alone: any meter with a learned pattern
            # whose dry run is over the district's shortest allowance may fire
            learned = prof.learned_days >= st.routine_min_days
            shortest = int(prof.early_allowance[prof.early_allowance > 0].min(initial=0))
            candidates |= learned & (dry_b > shortest)
        maybe = np.flatnonzero(candidates)
        self.quiet_candidates = int(maybe.size)  # for the benchmark's report
        sel: I64 | slice = maybe if maybe.size < len(hz) * self.quiet_subset_share else slice(None)
        hz_s = hz[sel]
        open_meters, raised_at, used_since = self._routine_open(hz)
        floor_sel = np.flatnonzero(self.days.floor_eligible)
        floor_hz = hz[floor_sel]
        return SweepInput(
            now_s=now_s,
            bucket_s=bs,
            settings=st,
            params=params,
            horizon_s=hz,
            known_start_s=known_start,
            monitor_from_s=monitor,
            last_arrival_s=ring.last_arrival,
            last_use_end_s=runs.last_use_end,
            last_flow_end_s=runs.last_flow_end,
            last_calm_end_s=runs.last_calm_end,
            last_wet_end_s=runs.last_wet_end,
            last_dry_end_s=runs.last_dry_end,
            leak_baseline_l=ring.baseline_l,
            flow_buckets=ring.flow_buckets,
            tap_lag_s=self._tap_lag_s,
            leak_lag_s=self._leak_lag_s,
            dry_from_s=dry_from,
            dry_b=dry_b,
            routine_limit_b=limit,
            over_routine_limit=over_limit,
            quiet_sel=sel,
            window_usage_l=ring.usage_between(sel, hz_s - params.low_window_s[sel], hz_s),
            horizon_cell=cell,
            dry_start_slot=prof.slot_ending(dry_from[sel] + bs),
            low_dry_b=low_dry_b,
            low_dry_start_slot=None if low_dry_b is None else prof.slot_ending(water_from[sel] + bs),
            low_threshold_b=prof.low_threshold,
            allowance_b=prof.allowance,
            low_allowance_b=prof.low_allowance,
            profile_group=prof.group,
            profile_slots=prof.slots,
            floor_sel=floor_sel,
            floor_usage_l=ring.usage_between(floor_sel, floor_hz - params.low_window_s[floor_sel], floor_hz),
            early_allowance_b=prof.early_allowance,
            answered_dry_b=answered_dry_b,
            routine_open_meters=open_meters,
            routine_raised_at_s=raised_at,
            routine_used_since_l=used_since,
            gateway_of=reg.gateway_of,
            gateway_judges=self._judges,
            gateway_judge_count=self._judge_count,
            gateway_judge_quiet_s=self._judge_quiet_s,
            gateway_status_since_s=status_since,
            home_silent=home_silent,
            door_out=door_out,
            home_allowance_b=prof.home_allowance,
            learned=learned,
            early_mobile=params.check_in_mobile if prof.early_allowance.shape[0] > prof.groups else None,
        )

    def _routine_open(self, hz: I64) -> tuple[I64, I64, F32]:
        """Meters of residents with an open routine_break, the evidence time it rose at, and
        the litres used since then (the part of it still in the ring)."""
        state = self.states[AlertKind.ROUTINE_BREAK]
        res = self.resident_meters
        meters = np.flatnonzero(res.has_resident & state.active[res.resident])
        raised_hz = state.raised_at[res.resident[meters]]
        if not meters.size:
            return meters, raised_hz, np.empty(0, np.float32)
        oldest = (self.ring.oldest + 1) * self.bucket_s
        used = self.ring.usage_between(meters, np.maximum(raised_hz, oldest), hz[meters])
        return meters, raised_hz, used

    def _step_residents(
        self,
        inp: SweepInput,
        verdicts: Mapping[AlertKind, Verdict],
        unknown_now: BOOL,
        away_r: BOOL,
        away_m: BOOL,
    ) -> list[Change]:
        """The water rules' hysteresis, per resident: meters' verdicts become residents'."""
        changes: list[Change] = []
        hz = inp.horizon_s
        hold_m = unknown_now | away_m
        for kind, verdict in verdicts.items():
            # a resident is quiet when all their meters are; flowing when any one is. Away,
            # the quiet rules are held (and their open alerts cleared): no use is expected
            quiet_kind = kind in QUIET_KINDS
            how: Literal["all", "any"] = "all" if quiet_kind else "any"
            hold = hold_m if quiet_kind else unknown_now
            neighbour_m, first_m = self._tiers(kind, verdict)
            cond_r, clear_r, hold_r, since_r, rep_r = self.resident_meters.by_resident(
                first_m & ~hold, verdict.clear_when & ~hold, hold, verdict.since_s, how
            )
            neighbour_r = cond_r
            if first_m is not verdict.raise_when:  # two tiers: which residents the second reaches
                neighbour_r = self.resident_meters.by_resident(
                    neighbour_m & ~hold, verdict.clear_when & ~hold, hold, verdict.since_s, how
                )[0]
            state = self.states[kind]
            check_in = self.check_in_only[kind]
            if quiet_kind:
                for r in state.force_clear(away_r):
                    changes.append(self._resident_change(kind, "clear", int(r), reason="resident_away"))
                # a resident who answered "fine" since the last sweep: their alert is closed
                # (the alerts side resolved it as resident_ok) and the rules start again from
                # the answer (compared with the last sweep's answers, not the alert's evidence
                # time: a daily meter's evidence is hours older than an answer given before)
                if self._answered is not None and self._answered_before is not None:
                    state.force_clear(state.active & (self._answered > self._answered_before))
                hold_r = hold_r | away_r
            step = state.step(cond_r, clear_r, hold_r)
            state.since[step.raised] = since_r[step.raised]
            state.raised_at[step.raised] = hz[rep_r[step.raised]]
            check_in[step.cleared] = False
            check_in[~state.active] = False
            asked_first = self.asked_first[kind]
            asked_first[~state.active] = False
            # an open check-in alert whose neighbour tier now fires goes to the neighbour
            # (not one that was raised asking first with that tier already firing)
            lifted = np.flatnonzero(state.active & check_in & neighbour_r & ~hold_r & ~asked_first)
            check_in[step.raised] = ~neighbour_r[step.raised]
            if quiet_kind and self.settings.quiet_neighbour_asks_first:
                # the neighbour tier fired before anyone was asked: ask the resident first
                askable = self.registry.askable
                ask = neighbour_r[step.raised] & (True if askable is None else askable[step.raised])
                check_in[step.raised] |= ask
                asked_first[step.raised] = ask
            check_in[lifted] = False
            # an episode a person already resolved stays active here but is not raised again
            handled = since_r[step.raised] <= state.handled_until[step.raised]
            for r in step.raised[~handled]:
                m = int(rep_r[r])
                details = water_details(
                    kind, m, inp, verdict, self.registry.meter_ids[m], self.profile.learned_days
                )
                tier = AlertTier.CHECK_IN if check_in[r] else AlertTier.NEIGHBOUR
                if asked_first[r]:  # in quiet hours the alerts side then tells the neighbour at once
                    details["neighbour_tier"] = True
                    # the neighbour tier has fired already: nothing is left to hold for, so a
                    # passage out does not keep the neighbour from being told (else nobody is)
                    details.pop("door_out", None)
                changes.append(
                    self._resident_change(
                        kind, "raise", int(r), since_s=int(since_r[r]), details=details, tier=tier
                    )
                )
            for r in lifted:
                if state.since[r] <= state.handled_until[r]:
                    continue
                m = int(rep_r[r])
                details = water_details(
                    kind, m, inp, verdict, self.registry.meter_ids[m], self.profile.learned_days
                )
                changes.append(
                    self._resident_change(kind, "escalate", int(r), details=details, tier=AlertTier.NEIGHBOUR)
                )
            for r in step.cleared:
                changes.append(self._resident_change(kind, "clear", int(r)))
        return changes

    def _tiers(self, kind: str, verdict: Verdict) -> tuple[BOOL, BOOL]:
        """Per meter: the neighbour tier's condition, and the first tier's (either tier).

        A resident who cannot be asked (`Registry.askable`) has no check-in tier: for
        routine_break they wait for the neighbour tier's timing; the floor is never skipped,
        so for them it goes to the neighbour at once."""
        early = verdict.early_when
        if early is None:
            return verdict.raise_when, verdict.raise_when
        askable = self.registry.askable
        if askable is None:
            return verdict.raise_when, early
        askable_m = self.resident_meters.to_meters(askable, True)
        if kind == AlertKind.LOW_USAGE:
            return verdict.raise_when | (early & ~askable_m), early
        return verdict.raise_when, np.where(askable_m, early, verdict.raise_when)

    def _step_meters(self, silent: Verdict) -> list[Change]:
        """meter_silent's hysteresis (a meter of an offline gateway is held by the rule)."""
        changes: list[Change] = []
        state = self.states[AlertKind.METER_SILENT]
        step = state.step(silent.raise_when, silent.clear_when, hold=silent.hold)
        state.since[step.raised] = silent.since_s[step.raised]
        for m in step.raised:
            changes.append(
                self._meter_change(
                    "raise",
                    int(m),
                    silent_details(int(silent.since_s[m]), int(self.registry.params.silent_after_s[m])),
                )
            )
        for m in step.cleared:
            changes.append(self._meter_change("clear", int(m)))
        return changes

    def _step_gateways(self, inp: SweepInput, offline: Verdict) -> list[Change]:
        changes: list[Change] = []
        state = self.states[AlertKind.GATEWAY_OFFLINE]
        step = state.step(offline.raise_when, offline.clear_when)
        last_g = np.full(len(self.registry.gateway_ids), NEVER, np.int64)
        if step.raised.size or step.cleared.size:  # a per-meter scatter, only when needed
            last_g = rules.newest_data_by_gateway(inp)
        state.since[step.raised] = last_g[step.raised]
        for g in step.raised:
            changes.append(
                self._gateway_change(
                    "raise", int(g), int(last_g[g]), {"meters": int(self._meters_of_gateway[g])}
                )
            )
        for g in step.cleared:
            changes.append(self._gateway_change("clear", int(g), int(last_g[g])))
        return changes

    def _judge_field_rule(self, inp: SweepInput, held: BOOL) -> None:
        """What the plain field rule judged this sweep, for the floor's eligibility: the
        window ending at each meter's horizon, once per new horizon, for the meters it would
        judge (not away, heard, the window after the last absence)."""
        if not self.days.learning:
            return
        hz = inp.horizon_s
        fresh = (hz != self._field_judged_hz) & ~held
        self._field_judged_hz = np.where(held, self._field_judged_hz, hz)
        meters = np.flatnonzero(fresh)
        if not meters.size:
            return
        start = hz[meters] - inp.params.low_window_s[meters]
        litres = self.ring.usage_between(meters, start, hz[meters])
        if inp.leak_baseline_l.any():  # net of a leak, as the rule (before it is updated)
            buckets = inp.params.low_window_s[meters] // self.bucket_s
            litres = litres - inp.leak_baseline_l[meters] * buckets
        judged = ~np.isnan(litres) & (start >= inp.monitor_from_s[meters])
        self.days.judged_windows(meters[judged], hz[meters[judged]], litres[judged].astype(np.float32))

    # -- helpers --------------------------------------------------------------------------

    def _track_leaks(self, leaking: BOOL, hz: I64) -> None:
        """A leak's constant flow is not the resident using water: while a meter leaks, only
        use above its leak (the median bucket of the last `leak_limit`, plus the slack of a
        whole-litre register) counts as use, and
        windows are measured net of it. Back to zero once an hour measured dry follows the
        flow. A gap in the readings (or a coarse delta) also breaks the leak's own run, for a
        day, but says nothing of the pipe: counting the leak as use for that day hid a dry run."""
        ring, runs = self.ring, self.runs
        stopped = (ring.baseline_l > 0) & (runs.last_still_end > runs.last_wet_end) & ~leaking
        ring.baseline_l[stopped] = 0.0
        self._leak_known[stopped] = False
        # measured when a leak is first seen, then again every hour (not every sweep)
        hour = int(hz.max(initial=0)) // 3600
        if hour != self._leak_hour:
            self._leak_hour = hour
            self._leak_known[:] = False
        meters = np.flatnonzero(leaking & ~self._leak_known)
        if meters.size == 0:
            return
        self._leak_known[meters] = True
        span = self.registry.params.leak_limit_s[meters] // self.bucket_s
        last = hz[meters] // self.bucket_s - 1
        first = int((last - span + 1).min())
        usage = ring.usage_matrix(first, int(last.max()) - first + 1, meters)
        offsets = np.arange(usage.shape[0])[:, None] + first
        inside = (offsets > (last - span)[None, :]) & (offsets <= last[None, :])
        # the median bucket (a leak runs in most of them) plus the slack: through a
        # whole-litre register 2.1 L a bucket reads 2, 3, 2, 2, 3 L, and a 3 is not use
        window = np.where(inside & ~np.isnan(usage), usage, np.nan)
        known = (~np.isnan(window)).any(axis=0)
        level = np.zeros(meters.size, np.float32)
        if known.any():
            level[known] = np.nanmedian(window[:, known], axis=0) + LEAK_READING_SLACK_L
        found = (ring.baseline_l[meters] == 0) & (level > 0)
        ring.baseline_l[meters] = np.maximum(level, 0.0)
        if found.any():
            self._unmark_leak(meters[found], level[found], last[found])

    def _unmark_leak(self, meters: I64, level: F32, last: I64) -> None:
        """The flow a leak made before it was known (since the last dry hour, which can be
        more than `leak_limit_h` back when readings come in batches) was not use either:
        clear those used flags and move the meters' last use back to the newest still used."""
        ring, runs = self.ring, self.runs
        first = max(ring.oldest, int((runs.last_dry_end[meters] // self.bucket_s).min()))
        usage = ring.usage_matrix(first, int(last.max()) - first + 1, meters)
        start_s = (np.arange(usage.shape[0])[:, None] + first) * self.bucket_s
        flowed = (start_s >= runs.last_dry_end[meters][None, :]) & (
            start_s < (last[None, :] + 1) * self.bucket_s
        )
        floor = max(ring.use_min_l, LEAK_USE_MIN_L)
        leak_only = flowed & ~(usage - level[None, :] >= floor)
        runs.last_use_end[meters] = np.minimum(
            runs.last_use_end[meters], ring.unmark_used(meters, first, leak_only)
        )

    def _resident_change(
        self,
        kind: str,
        action: str,
        r: int,
        *,
        since_s: int | None = None,
        details: dict[str, Any] | None = None,
        reason: str = "condition_cleared",
        tier: str = AlertTier.NEIGHBOUR,
    ) -> Change:
        rid = self.registry.resident_ids[r]
        since = int(self.states[kind].since[r]) if since_s is None else since_s
        return Change(kind, action, rid, rid, None, None, since, details or {}, reason, tier)

    def _meter_change(self, action: str, m: int, details: dict[str, Any] | None = None) -> Change:
        reg = self.registry
        r = int(reg.resident_of[m])
        return Change(
            AlertKind.METER_SILENT,
            action,
            reg.meter_ids[m],
            reg.resident_ids[r] if r >= 0 else None,
            reg.meter_ids[m],
            reg.gateway_ids[int(reg.gateway_of[m])],
            int(self.states[AlertKind.METER_SILENT].since[m]),
            details or {},
        )

    def _gateway_change(
        self, action: str, g: int, since_s: int, details: dict[str, Any] | None = None
    ) -> Change:
        gid = self.registry.gateway_ids[g]
        return Change(AlertKind.GATEWAY_OFFLINE, action, gid, None, None, gid, since_s, details or {})
