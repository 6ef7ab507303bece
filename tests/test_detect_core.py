"""The pure detector core on hand-made arrays: no database, no clock."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pydantic import ValidationError

from lovekey.config import DetectSettings, load_settings
from lovekey.detectors import rules
from lovekey.detectors.engine import Detector, Presence, Registry
from lovekey.detectors.hysteresis import RuleState
from lovekey.detectors.params import build_params, effective_rules, uniform_params
from lovekey.detectors.profile import DISABLED, RoutineProfile
from lovekey.detectors.ring import NEVER, UsageRing
from lovekey.detectors.rules import SweepInput

BS = 900
SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2026-03-01 00:00 in Shanghai, a Sunday; epoch seconds
T0 = int(datetime(2026, 3, 1, tzinfo=SHANGHAI).timestamp())
OFFSET = 8 * 3600


def ring(meters: int = 1, buckets: int = 32, **kw: int) -> UsageRing:
    return UsageRing(meters, bucket_s=BS, buckets=buckets, now_s=T0, **kw)


def usage(r: UsageRing, meter: int, first: int, count: int) -> np.ndarray:
    """Usage of `count` buckets from bucket `first` (relative to T0) for one meter."""
    return r.usage_matrix(T0 // BS + first, count)[:, meter]


# -- the usage ring ---------------------------------------------------------------------------


def test_regular_readings_give_usage_per_bucket_and_the_first_bucket_is_unknown() -> None:
    r = ring()
    r.apply([0] * 5, T0 + BS * np.arange(5), [100, 110, 125, 125, 130])
    got = usage(r, 0, -1, 5)
    assert np.isnan(got[0])  # before the first reading: unknown, not zero
    assert got[1:].tolist() == [10, 15, 0, 5]


def test_a_delta_spanning_buckets_is_spread_evenly_and_known() -> None:
    r = ring()
    r.apply([0, 0], [T0, T0 + 4 * BS], [0, 40])  # one reading, then four buckets later
    assert usage(r, 0, 0, 4).tolist() == [10, 10, 10, 10]
    # readings off the bucket grid are spread by the time they overlap each bucket
    r2 = ring()
    r2.apply([0, 0], [T0 + BS // 2, T0 + BS // 2 + 2 * BS], [0, 30])
    got = usage(r2, 0, 0, 3)
    assert np.isnan(got[0])
    assert got[1] == pytest.approx(15)
    assert np.isnan(got[2])


def test_a_gap_is_unknown_until_data_covers_it() -> None:
    r = ring()
    r.apply([0, 0], [T0, T0 + BS], [0, 5])
    assert np.isnan(usage(r, 0, 1, 3)).all()  # nothing reported yet: unknown, never zero
    assert r.horizon()[0] == T0 + BS


def test_a_long_gap_with_water_used_is_unknown_but_without_use_is_known_dry() -> None:
    r = ring(buckets=64, max_spread_s=6 * 3600)
    r.apply([0, 0], [T0, T0 + 8 * 3600], [0, 50])
    assert np.isnan(usage(r, 0, 0, 31)).all()
    assert r.usage_between(np.array([0]), np.array([T0]), np.array([T0 + 8 * 3600]))[0] != 0
    dry = ring(buckets=64, max_spread_s=6 * 3600)
    dry.apply([0, 0], [T0, T0 + 8 * 3600], [7, 7])
    assert (usage(dry, 0, 0, 32) == 0).all()


def test_a_total_going_backwards_is_a_swap_not_negative_use() -> None:
    r = ring()
    r.apply([0] * 6, T0 + BS * np.arange(6), [900, 910, 920, 3, 8, 20])
    got = usage(r, 0, 0, 5)
    assert got[0] == 10
    assert got[1] == 10
    # the bucket across the swap is unknown; with readings on bucket boundaries the odometer
    # cell shared by both sides cannot be both, so the bucket after it is given up as well
    assert np.isnan(got[2])
    assert np.isnan(got[3])
    assert got[4] == 12  # the new register counts from its own start
    assert not (np.nan_to_num(got) < 0).any()
    # a window across the swap is not covered: it would miss the unknown litres
    window = r.usage_between(np.array([0]), np.array([T0]), np.array([T0 + 5 * BS]))
    assert np.isnan(window[0])


def test_out_of_order_and_duplicated_readings_in_a_batch_give_the_same_usage() -> None:
    ts = T0 + BS * np.arange(8)
    total = np.cumsum([0, 3, 0, 0, 12, 7, 1, 6]).astype(float)
    ordered = ring()
    ordered.apply([0] * 8, ts, total)
    rng = np.random.default_rng(7)
    order = rng.permutation(8)
    dup = np.concatenate([order, order[:3]])
    shuffled = ring()
    result = shuffled.apply(np.zeros(dup.size, int), ts[dup], total[dup])
    assert result.dirty.size == 0
    assert result.applied == 8
    np.testing.assert_array_equal(usage(ordered, 0, 0, 7), usage(shuffled, 0, 0, 7))


def test_a_reading_older_than_the_last_makes_the_meter_dirty_and_a_rebuild_places_it() -> None:
    ts = T0 + BS * np.arange(6)
    total = np.array([0, 5, 5, 9, 30, 31], dtype=float)
    late = [2]  # arrives after the others
    on_time = [i for i in range(6) if i not in late]
    r = ring(meters=2)
    r.apply([0] * 5, ts[on_time], total[on_time])
    r.apply([1], [T0], [0])
    result = r.apply([0, 1], [*ts[late].tolist(), T0 + BS], [*total[late].tolist(), 4])
    assert result.dirty.tolist() == [0]  # meter 0 must be rebuilt
    assert usage(r, 1, 0, 1).tolist() == [4]  # meter 1's reading was applied as usual
    r.reset_meters(np.array([0]))
    r.apply([0] * 6, ts, total)  # the authoritative history, any order
    expected = ring()
    expected.apply([0] * 6, ts, total)
    np.testing.assert_array_equal(usage(r, 0, 0, 5), usage(expected, 0, 0, 5))


def test_an_exact_repeat_of_the_last_reading_is_ignored_not_dirty() -> None:
    r = ring()
    r.apply([0, 0], [T0, T0 + BS], [1, 2])
    result = r.apply([0], [T0 + BS], [2])
    assert result.dirty.size == 0
    assert result.applied == 0


def test_a_late_hourly_batch_equals_the_same_values_sent_one_by_one() -> None:
    ts = T0 + BS * np.arange(1, 9)
    total = np.cumsum(np.arange(8, dtype=float))
    live = ring()
    for t, v in zip(ts, total, strict=True):
        live.apply([0], [t], [v])
    batched = ring()
    batched.apply([0] * 4, ts[:4], total[:4])
    batched.advance(int(ts[-1]) + 3 * 3600)  # time passes before the next batch arrives
    batched.apply([0] * 4, ts[4:], total[4:])
    np.testing.assert_array_equal(usage(live, 0, 1, 7), usage(batched, 0, 1, 7))


def test_the_ring_moves_without_shifting_and_forgets_what_falls_out() -> None:
    r = ring(buckets=8)
    for k in range(20):  # more than twice round the ring, across midnight
        r.apply([0], [T0 - 2 * 3600 + k * BS], [float(k * k)])
    # reading k ends bucket k - 9 (relative to T0); the ring holds buckets 4..11 now, so the
    # usage of buckets 5..10 is known (bucket 4 would need the end of bucket 3)
    got = usage(r, 0, 5, 6)
    assert got.tolist() == [float((k + 1) ** 2 - k * k) for k in range(13, 19)]
    assert np.isnan(usage(r, 0, -8, 1)[0])  # long gone from the ring
    before = usage(r, 0, 5, 6).copy()
    r.rebase()  # moving the odometer origin changes no usage
    np.testing.assert_allclose(usage(r, 0, 5, 6), before)


def test_unmarking_use_returns_the_newest_bucket_still_used_or_never() -> None:
    r = ring(meters=2)
    r.apply([0, 1] * 6, np.repeat(T0 + BS * np.arange(6), 2), np.repeat([0.0, 1, 2, 3, 4, 5], 2))
    first = T0 // BS  # buckets 0..4 were used by both meters
    assert r.used_matrix(first, 5).all()
    unmark = np.zeros((5, 2), np.bool_)
    unmark[3:, 0] = True  # meter 0: the last two were a leak; meter 1: all five were
    unmark[:, 1] = True
    got = r.unmark_used(np.array([0, 1]), first, unmark)
    assert got.tolist() == [(first + 3) * BS, NEVER]
    assert r.used_matrix(first, 5).tolist() == [[True, False]] * 3 + [[False, False]] * 2


def test_completed_buckets_report_usage_hour_and_coarseness() -> None:
    r = ring(flow_window_s=3600, flow_span_max_s=3900)
    done = r.apply([0] * 6, T0 + BS * np.arange(6), [0, 1, 2, 3, 4, 5]).completed
    assert done.usage_l[1:].tolist() == [1, 1, 1, 1, 1]
    assert np.isnan(done.hour_l[:4]).all()
    assert done.hour_l[4:].tolist() == [4, 4]
    coarse = r.apply([0], [T0 + 5 * BS + 2 * 3600], [13]).completed
    assert coarse.coarse.all()
    assert len(coarse) == 8


# -- the routine profile ----------------------------------------------------------------------


def test_routine_days_start_at_four_local_and_shanghai_has_no_dst() -> None:
    p = RoutineProfile(1, bucket_s=BS, days=28, day_start_s=4 * 3600, utc_offset_s=OFFSET)
    # every day of 2026 starts at 04:00 local and has 96 buckets (no DST in Asia/Shanghai)
    day = datetime(2026, 1, 1, 4, tzinfo=SHANGHAI)
    for _ in range(365):
        start = int(day.timestamp())
        assert p.day_start(p.day_of(start)) == start
        assert p.day_of(start + 86400 - 1) == p.day_of(start)
        assert SHANGHAI.utcoffset(day) == timedelta(hours=8)
        day += timedelta(days=1)
    end = np.array([int(datetime(2026, 3, 29, 4, 15, tzinfo=SHANGHAI).timestamp())])
    assert p.slot_ending(end).tolist() == [0]
    midnight = np.array([int(datetime(2026, 3, 29, 0, 0, tzinfo=SHANGHAI).timestamp())])
    assert p.slot_ending(midnight).tolist() == [79]  # 23:45-24:00 is late in the routine day


def _day_usage(first_use_slot: int, slots: int = 96) -> np.ndarray:
    u = np.zeros(slots, np.float32)
    u[first_use_slot::4] = 6.0  # first use, then every hour
    return u


def test_profile_thresholds_follow_the_residents_usual_first_use() -> None:
    p = RoutineProfile(2, bucket_s=BS, days=28, day_start_s=4 * 3600, utc_offset_s=OFFSET)
    rng = np.random.default_rng(3)
    for day in range(20):
        early = 8 + int(rng.integers(0, 4))  # 06:00-06:45
        late = 20 + int(rng.integers(0, 4))  # 09:00-09:45
        usage = np.stack([_day_usage(early), _day_usage(late)], axis=1)
        p.record_day(day, usage, usage >= 1.0, np.zeros(2, bool))
    p.recompute(
        min_days=14,
        quantile=0.95,
        slack_b=2,
        margin_b=np.array([4, 4]),
        min_gap_b=8,
        low_margin_b=4,
        low_cap_b=96,
    )
    t = p.threshold.T  # meters x slots
    # the early riser's alert point comes hours before the late riser's
    first_alert = [int(np.argmax(np.arange(96) + 1 > t[i])) for i in range(2)]
    assert first_alert[0] < first_alert[1]
    assert 11 + 2 + 4 <= first_alert[0] <= 11 + 2 + 4 + 2  # q95 06:45, +30 min slack, +1 h
    # low_usage waits at least for the longest morning dry run each resident has had
    assert p.low_threshold[19, 1] >= 20 > p.low_threshold[19, 0]


def test_profile_needs_enough_valid_days() -> None:
    p = RoutineProfile(1, bucket_s=BS, days=28, day_start_s=4 * 3600, utc_offset_s=OFFSET)
    for day in range(20):
        u = _day_usage(10)[:, None]
        if day % 2:
            u = u.copy()
            u[50] = np.nan  # a day with a hole is not learned
        p.record_day(day, u, u >= 1.0, np.zeros(1, bool))
    p.recompute(
        min_days=14,
        quantile=0.95,
        slack_b=2,
        margin_b=np.array([4]),
        min_gap_b=8,
        low_margin_b=4,
        low_cap_b=96,
    )
    assert p.learned_days.tolist() == [10]
    assert (p.threshold == DISABLED).all()


def test_a_check_in_schedule_takes_the_place_of_the_districts_quantile() -> None:
    """`routine_check_in_schedule_h`: the check-in tier's allowance by the local hour a dry
    run began, the same for every activity group: asked once the dry run has lasted the
    hours; 0 never asks for runs begun that hour."""
    p = RoutineProfile(2, bucket_s=BS, days=28, day_start_s=4 * 3600, utc_offset_s=OFFSET)
    for day in range(20):
        usage = np.stack([_day_usage(8), _day_usage(20)], axis=1)
        p.record_day(day, usage, usage >= 1.0, np.zeros(2, bool))
    hours = [0.0] * 24
    hours[10], hours[4] = 4.5, 12.0
    args = dict(min_days=14, quantile=0.95, slack_b=2, margin_b=np.array([4, 4]), min_gap_b=8)
    p.recompute(**args, low_margin_b=4, low_cap_b=96, groups=2, early_population_quantile=0.995)
    by_quantile = p.early_allowance.copy()
    p.recompute(
        **args,
        low_margin_b=4,
        low_cap_b=96,
        groups=2,
        early_population_quantile=0.995,
        early_schedule_b=p.schedule_allowance(hours),
    )
    never = np.iinfo(np.int16).max
    # slots count from the routine day's start, 04:00: slot 0 is 04:00-04:15, slot 24 10:00
    assert p.early_allowance.shape == (2, 96)
    assert (p.early_allowance[:, 24:28] == 4.5 * 4 - 1).all()  # asked at 18 buckets: dry_b > 17
    assert (p.early_allowance[:, 0:4] == 12 * 4 - 1).all()
    assert (p.early_allowance[:, 4:24] == never).all()
    assert (p.early_allowance[:, 28:] == never).all()
    assert not np.array_equal(by_quantile, p.early_allowance)


def test_the_schedule_setting_takes_24_hours_or_none() -> None:
    assert len(DetectSettings().routine_check_in_schedule_h) == 24
    assert DetectSettings(routine_check_in_schedule_h=[5.0] * 24).routine_check_in_schedule_h == [5.0] * 24
    assert DetectSettings(routine_check_in_schedule_h=[]).routine_check_in_schedule_h == []  # the quantile
    for name in (
        "routine_check_in_schedule_h",
        "routine_check_in_schedule_mobile_h",
        "routine_check_in_schedule_home_h",
    ):
        for bad, why in (([5.0] * 23, "24 values"), ([5.0] * 23 + [-1.0], "greater than or equal to 0")):
            with pytest.raises(ValidationError, match=why):
                DetectSettings(**{name: bad})
    for bad_alive in (0, -1, "abc", 1e9):
        with pytest.raises(ValidationError):
            DetectSettings(door_alive_h=bad_alive)
    with pytest.raises(ValidationError):
        DetectSettings(door_out_slack_min=-5)


# -- the state machine ------------------------------------------------------------------------


def test_hysteresis_raises_after_and_clears_only_on_clear_recovery() -> None:
    s = RuleState(2, raise_after=2, clear_after=2)
    cond = np.array([True, False])
    no = np.zeros(2, bool)
    assert s.step(cond, no).raised.size == 0
    assert s.step(cond, no).raised.tolist() == [0]
    # hovering: the condition is gone but recovery is not clear -> stays active
    for _ in range(5):
        step = s.step(no, no)
        assert step.cleared.size == 0
        assert s.active[0]
    s.step(no, np.array([True, False]))
    assert s.step(no, np.array([True, False])).cleared.tolist() == [0]
    # hold freezes both ways
    s.step(cond, no, hold=np.array([True, False]))
    assert s.step(cond, no, hold=np.array([True, False])).raised.size == 0


def test_hysteresis_holds_when_the_condition_and_its_clearing_both_hold() -> None:
    # contradictory evidence must not raise an idle subject nor clear an active one, or the
    # same data would flip the state on every sweep
    s = RuleState(2)
    s.active[1] = True
    both = np.ones(2, bool)
    for _ in range(3):
        step = s.step(both, both)
        assert step.raised.size == 0
        assert step.cleared.size == 0
    assert s.active.tolist() == [False, True]


# -- per-meter thresholds ---------------------------------------------------------------------


def test_overrides_resident_beats_community_beats_default_and_bad_ones_are_reported() -> None:
    st = DetectSettings()
    values, problems = effective_rules(
        st,
        {"detect": {"low_usage_min_l": 8, "leak_limit_h": 12}},
        {
            "detect": {
                "low_usage_min_l": 5,
                "routine_enabled": False,
                "bucket_minutes": 1,
                "running_tap_limit_h": "soon",
            }
        },
    )
    assert values["low_usage_min_l"] == 5
    assert values["leak_limit_h"] == 12
    assert values["routine_enabled"] is False
    assert len(problems) == 2
    params = build_params(st, [values, effective_rules(st, None, None)[0]], [3600, None])
    assert params.low_min_l.tolist() == [5, 10]
    # the interval plus a grace of 3 h (messages held up for an hour or two are not a fault)
    assert params.silent_after_s.tolist() == [3600 + 3 * 3600, 900 + 3 * 3600]


# -- the detector -----------------------------------------------------------------------------


class Home:
    """Hand-made meters: litres per bucket in, readings out, one sweep per bucket."""

    def __init__(
        self,
        meters: int,
        *,
        gateways: list[int] | None = None,
        settings: DetectSettings | None = None,
        rules: list[dict] | None = None,
        start: int = T0,
        interval_s: int | None = None,
    ) -> None:
        self.st = settings or load_settings(environ={}).detect
        gw = np.array(gateways if gateways is not None else [0] * meters, np.int64)
        if rules is None:
            params = uniform_params(self.st, meters, interval_s)
        else:
            params = build_params(self.st, rules, [interval_s] * meters)
        self.reg = Registry(
            [f"WM-{i}" for i in range(meters)],
            [f"R-{i}" for i in range(meters)],
            [f"GW-{g}" for g in range(int(gw.max()) + 1)],
            np.arange(meters),
            gw,
            params,
        )
        self.det = Detector(self.reg, self.st, now_s=start, utc_offset_s=OFFSET)
        self.total = np.full(meters, 1000.0)
        self.t = start
        self.log: list[tuple[float, str, str, str]] = []
        self.presence = Presence.everyone_home(meters)

    def run(self, hours: float, litres: np.ndarray | float, *, report: list[int] | None = None) -> None:
        """Advance `hours` bucket by bucket; each meter in `report` sends one reading per bucket."""
        meters = self.total.size
        report = list(range(meters)) if report is None else report
        for _ in range(int(hours * 3600 // BS)):
            self.t += BS
            self.total += np.broadcast_to(litres, (meters,))
            if report:
                self.det.apply(report, [self.t] * len(report), self.total[report], [self.t + 3] * len(report))
            for c in self.det.sweep(self.t + 30, self.presence):
                self.log.append(((self.t - T0) / 3600, c.kind, c.action, c.subject))

    def events(self, kind: str | None = None) -> list[tuple[float, str, str, str]]:
        return [e for e in self.log if kind is None or e[1] == kind]


def _quiet_litres(hour_of_day: float) -> float:
    return 6.0 if 7 <= hour_of_day < 21 and int(hour_of_day * 4) % 4 == 0 else 0.0


def test_low_usage_raises_after_twelve_known_hours_and_clears_on_clear_use() -> None:
    h = Home(1)
    h.run(6, 3.0)  # active
    h.run(13, 0.0)  # nothing for 13 hours
    raised = h.events("low_usage")
    assert [e[2] for e in raised] == ["raise"]
    # under 10 L in the window since 17.25 h, but it fires once no water at all was used for
    # 13 h (low_usage_min_dry_h): a morning's few litres before a day out are not an alarm
    assert raised[0][0] == 19.0
    h.run(0.5, 4.0)  # 8 L: under the 15 L that clears
    assert len(h.events("low_usage")) == 1
    h.run(1, 4.0)
    assert [e[2] for e in h.events("low_usage")] == ["raise", "clear"]


def test_a_stored_impossible_jump_is_not_use_and_does_not_hide_low_usage() -> None:
    # issue 16, finding 3: a +5e11 L step already stored counted as use for 12 h
    h = Home(1)
    h.run(6, 3.0)
    h.run(2, 0.0)
    h.total += 5e11  # a glitch of the register, far faster than any pipe
    h.run(11, 0.0)
    raised = h.events("low_usage")
    assert [e[2] for e in raised] == ["raise"]
    assert raised[0][0] == 19.0  # as without the jump
    r = ring()
    r.apply([0] * 4, T0 + BS * np.arange(4), [100, 110, 110 + 5e11, 5e11 + 115])
    assert usage(r, 0, 0, 3).tolist() == [10, 0, 5]  # the step is no use; what follows is


def test_a_silent_meter_is_a_maintenance_alert_and_never_a_low_usage_one() -> None:
    h = Home(2, gateways=[0, 1])
    h.run(6, 3.0)
    h.run(30, 0.0, report=[1])  # meter 0 stops reporting; meter 1 reports no use
    kinds = {(e[1], e[3]) for e in h.events()}
    assert ("meter_silent", "WM-0") in kinds
    assert ("low_usage", "R-1") in kinds
    assert not any(e[3] == "R-0" for e in h.events())  # unknown is not zero
    h.run(1, 3.0)  # meter 0 back, with the litres of the whole gap
    assert ("meter_silent", "clear", "WM-0") in {(e[1], e[2], e[3]) for e in h.events()}
    assert not any(e[3] == "R-0" for e in h.events())


def test_a_meter_never_heard_from_is_silent_and_the_sweep_goes_on() -> None:
    """A meter registered before it ever reported has no horizon (NEVER). Not learning its
    day used to count the days from NEVER to now, one by one: the first sweeps of a fresh
    install hung (evaluate's seed 14 has such a meter)."""
    h = Home(3, gateways=[0, 1, 2])
    h.run(2, 3.0, report=[1, 2])  # meter 0 never reports
    with _deadline(60):  # the hang: meters 0 and 2 silent in the same sweep
        h.run(28, 3.0, report=[1])
    assert h.det.ring.horizon()[0] <= NEVER
    raised = {(e[1], e[2], e[3]) for e in h.events()}
    assert {("meter_silent", "raise", "WM-0"), ("meter_silent", "raise", "WM-2")} <= raised
    assert not any(e[3] in ("R-0", "R-2") for e in h.events())
    days = h.det.days
    assert days._taint
    assert min(days._taint) >= days.profile.day_of(h.det.ring.oldest * BS)


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail, rather than hang, a block that takes longer than `seconds`."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_days_older_than_the_ring_are_never_marked_not_to_learn() -> None:
    """Nothing older than the ring's oldest bucket can be learned, so a span reaching back
    past it marks only the days from there (a span from NEVER marks none before it)."""
    h = Home(1)
    h.run(2, 3.0)
    days = h.det.days
    oldest_s = h.det.ring.oldest * BS
    oldest_day = days.profile.day_of(oldest_s)
    days.taint_spans(np.array([0]), np.array([oldest_s - 10 * 86400]), np.array([h.t]))
    assert days._taint
    assert min(days._taint) == oldest_day
    days.taint_spans(np.array([0]), np.array([NEVER]), np.array([NEVER]))
    assert min(days._taint) == oldest_day


def test_all_meters_of_a_gateway_silent_is_one_gateway_alert() -> None:
    h = Home(3, gateways=[0, 0, 1])
    h.run(2, 3.0)
    h.run(2, 3.0, report=[2])
    assert [(e[1], e[3]) for e in h.events()] == [("gateway_offline", "GW-0")]
    h.run(1, 3.0)
    assert h.events()[-1][1:] == ("gateway_offline", "clear", "GW-0")


def test_a_reported_gateway_outage_counts_after_its_grace() -> None:
    h = Home(1)
    h.run(1, 3.0)
    offline_since = np.array([h.t], np.int64)
    changes = h.det.sweep(h.t + 60, gateway_offline_since_s=offline_since)
    assert changes == []
    changes = h.det.sweep(h.t + h.st.gateway_grace_s + 60, gateway_offline_since_s=offline_since)
    assert [(c.kind, c.subject) for c in changes] == [("gateway_offline", "GW-0")]


def test_away_suppresses_and_monitoring_restarts_with_a_fresh_window() -> None:
    h = Home(1)
    h.run(6, 3.0)
    h.presence = Presence(np.array([True]), np.array([h.t]))
    h.run(48, 0.0)
    assert h.events() == []
    h.presence = Presence(np.array([False]), np.array([h.t]))  # back (or away ended)
    h.run(12.5, 0.0)
    assert h.events() == []  # the absence is not counted against them
    h.run(1, 0.0)
    assert [e[1:3] for e in h.events()] == [("low_usage", "raise")]
    h.presence = Presence(np.array([True]), np.array([h.t]))  # staff mark them away
    h.run(0.25, 0.0)
    assert [e[1:3] for e in h.events()][-1] == ("low_usage", "clear")


def test_running_tap_after_two_hours_and_clears_after_half_an_hour_below_rate() -> None:
    h = Home(2)
    h.run(1, 1.0)
    litres = np.array([3.0 * 15, 1.0])  # 3 L/min on meter 0
    h.run(1.75, litres)
    assert h.events("running_tap") == []
    h.run(0.5, litres)
    assert [e[1:] for e in h.events("running_tap")] == [("running_tap", "raise", "R-0")]
    h.run(0.25, 1.0)
    assert len(h.events("running_tap")) == 1
    h.run(0.5, 1.0)
    assert h.events("running_tap")[-1][2] == "clear"


def test_a_running_tap_in_a_backlog_that_ended_hours_ago_is_not_raised_now() -> None:
    # a gateway back from an outage delivers 4 h of 3 L/min that ended 10 h ago
    h = Home(1)
    ts = h.t + BS * np.arange(1, 17)
    now = int(ts[-1]) + 10 * 3600
    h.det.apply([0] * ts.size, ts, 1000.0 + 45.0 * np.arange(ts.size), [now] * ts.size)
    for k in range(3):  # and sweeps that bring nothing new change nothing
        assert [c for c in h.det.sweep(now + 10 * k) if c.kind == "running_tap"] == []


def test_leak_is_a_day_of_flow_that_never_stops() -> None:
    h = Home(2)
    h.run(2, 0.0)
    h.run(23, np.array([0.1 * 15, 0.0]))  # 0.1 L/min trickle
    assert h.events("leak") == []
    h.run(1.5, np.array([0.1 * 15, 0.0]))
    assert [e[1:] for e in h.events("leak")] == [("leak", "raise", "R-0")]
    h.run(1.5, 0.0)
    assert h.events("leak")[-1][2] == "clear"


def test_hourly_batches_are_judged_on_what_has_arrived() -> None:
    h = Home(1, interval_s=3600)
    h.run(6, 3.0)
    for _ in range(13):  # an hour passes, then its four frozen values arrive together
        ts = h.t + BS * np.arange(1, 5)
        h.t += 3600
        h.det.apply([0] * 4, ts, np.full(4, h.total[0]), [h.t + 5] * 4)
        for c in h.det.sweep(h.t + 60):
            h.log.append(((h.t - T0) / 3600, c.kind, c.action, c.subject))
    assert [e[1:3] for e in h.events()] == [("low_usage", "raise")]  # and no meter_silent


def test_resident_override_changes_the_threshold() -> None:
    st = load_settings(environ={}).detect.model_copy(update={"use_min_l": 0.5})
    strict, _ = effective_rules(st, None, {"detect": {"low_usage_min_l": 30}})
    normal, _ = effective_rules(st, None, None)
    h = Home(2, settings=st, rules=[strict, normal])
    h.run(14, 0.4)  # 19 L in every 12 h, in drips under the 0.5 L that counts as "used" here
    assert [e[3] for e in h.events("low_usage")] == ["R-0"]


def test_routine_break_alerts_hours_before_the_field_rule_on_a_regular_resident() -> None:
    h = Home(2)
    for _ in range(20 * 96):  # twenty ordinary days
        h.run(0.25, _quiet_litres(((h.t + OFFSET) % 86400) / 3600))
    assert h.events() == []
    # day 21: resident 0 stops using water at noon, resident 1 goes on as usual
    noon = h.t + 12 * 3600
    while h.t < noon + 18 * 3600:
        normal = _quiet_litres(((h.t + OFFSET) % 86400) / 3600)
        h.run(0.25, np.array([normal if h.t < noon else 0.0, normal]))
    routine = [e for e in h.events("routine_break") if e[2] == "raise"]
    low = [e for e in h.events("low_usage") if e[2] == "raise"]
    assert [e[3] for e in routine] == ["R-0"]
    assert [e[3] for e in low] == ["R-0"]
    stopped = (noon - T0) / 3600
    assert 1 <= routine[0][0] - stopped <= 3  # hourly user: quiet for 2-3 h is unusual
    assert low[0][0] - routine[0][0] >= 6  # the field rule comes many hours later
    assert h.det.profile.learned_days[1] >= 14


def _quiet_day_changes(settings: DetectSettings, *, askable: bool = True) -> list[tuple[str, str, str, bool]]:
    """One resident: 6 h of use, then 20 h without water; every change (kind, action, tier,
    whether it says the neighbour tier had fired)."""
    h = Home(1, settings=settings)
    if not askable:
        h.det.registry = replace(h.reg, askable=np.array([False]))
    changes = []
    for hours, litres in ((6, 3.0), (20, 0.0)):
        for _ in range(int(hours * 3600 // BS)):
            h.t += BS
            h.total += litres
            h.det.apply([0], [h.t], h.total, [h.t + 3])
            changes += [
                (c.kind, c.action, c.tier, bool(c.details.get("neighbour_tier")))
                for c in h.det.sweep(h.t + 30, h.presence)
            ]
    return changes


def test_a_neighbour_tier_that_fires_before_anyone_was_asked_asks_the_resident_first() -> None:
    """`quiet_neighbour_asks_first`: the learned low_usage (a neighbour tier: nothing learned
    yet, so no floor) is raised as a check-in, and is not escalated by the same tier later:
    the stage's silence wakes the neighbour. A resident who cannot be asked: the neighbour
    at once, as when it is off."""
    st = load_settings(environ={}).detect
    old = st.model_copy(update={"quiet_neighbour_asks_first": False})
    assert _quiet_day_changes(old) == [("low_usage", "raise", "neighbour", False)]
    first = st.model_copy(update={"quiet_neighbour_asks_first": True})
    assert st.quiet_neighbour_asks_first  # the default
    # marked so: in quiet hours the alerts side tells the neighbour at once
    assert _quiet_day_changes(first) == [("low_usage", "raise", "check_in", True)]
    assert _quiet_day_changes(first, askable=False) == [("low_usage", "raise", "neighbour", False)]


def test_restore_marks_open_alerts_active_so_a_restart_does_not_raise_them_again() -> None:
    h = Home(1)
    h.run(14, 0.0)
    assert [e[1:3] for e in h.events()] == [("low_usage", "raise")]
    again = Home(1)  # a fresh process that finds the alert open in the database
    again.det.restore("low_usage", ["R-0"], [T0])
    again.run(14, 0.0)
    assert again.events() == []


def _busy_then_quiet_district(settings: DetectSettings | None = None) -> list[tuple[float, str, str, str]]:
    """Thirty residents learn three weeks of their own days, then some stop using water at
    different hours (and are found, and use water again), a few use little, the rest go on:
    every alert change, in order."""
    rng = np.random.default_rng(7)
    n = 30
    h = Home(n, settings=settings)
    rate = rng.uniform(0.2, 0.9, n)  # chance of use in a daytime bucket
    stop_at = np.full(n, np.inf)
    stop_at[:10] = 21 * 24 + rng.uniform(6, 20, 10)  # hours from the start
    found_at = stop_at + rng.uniform(15, 24, n)
    frugal = np.zeros(n, np.bool_)
    frugal[10:14] = True
    while h.t < T0 + 24 * 86400:
        hour = (h.t - T0) / 3600
        awake = 6 <= ((h.t + OFFSET) % 86400) / 3600 < 22
        litres = np.where(awake & (rng.random(n) < rate), rng.uniform(1, 12, n), 0.0)
        litres[(hour >= stop_at) & (hour < found_at)] = 0.0
        if hour >= 21 * 24:
            litres[frugal] = np.minimum(litres[frugal], 0.4)
        h.run(0.25, litres)
    return h.events()


def test_quiet_rules_give_the_same_alerts_computed_for_all_meters_or_the_few_that_may_fire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Detector, "quiet_subset_share", 0.0)
    everyone = _busy_then_quiet_district()  # the window computed for every meter
    monkeypatch.setattr(Detector, "quiet_subset_share", 1.0)
    few = _busy_then_quiet_district()  # only where a quiet rule may fire
    kinds = {(e[1], e[2]) for e in everyone}
    assert {
        ("low_usage", "raise"),
        ("low_usage", "clear"),
        ("routine_break", "raise"),
        ("routine_break", "clear"),
    } <= kinds
    assert few == everyone


def test_the_district_alone_check_in_tier_judges_every_meter_that_may_fire_in_a_subset_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`routine_check_in_own` off: the check-in tier may fire for a meter under its own
    limit, so a sweep that reads the window for the few meters that may fire must count
    those too (they are the ones whose dry run is over the district's shortest allowance)."""
    defaults = load_settings(environ={}).detect
    assert not defaults.routine_check_in_own
    quantile = defaults.model_copy(update={"routine_check_in_schedule_h": []})
    for st in (defaults, quantile):  # the check-in schedule, and the district's quantile
        monkeypatch.setattr(Detector, "quiet_subset_share", 0.0)
        everyone = _busy_then_quiet_district(st)
        monkeypatch.setattr(Detector, "quiet_subset_share", 1.0)
        few = _busy_then_quiet_district(st)
        assert few == everyone
    # and it asks where the resident's own limit would not: more check-ins than with it
    own = _busy_then_quiet_district(quantile.model_copy(update={"routine_check_in_own": True}))
    asked = [e for e in everyone if e[1:3] == ("routine_break", "raise")]
    assert len(asked) > len([e for e in own if e[1:3] == ("routine_break", "raise")])


def test_one_reading_per_meter_and_a_mixed_batch_fill_the_ring_alike() -> None:
    rng = np.random.default_rng(3)
    meters = 50
    one, mixed = ring(meters, buckets=16), ring(meters, buckets=16)
    total = rng.uniform(0, 1000, meters)
    t = T0
    for _ in range(12):
        t += int(rng.integers(400, 1400))
        ts = t + rng.integers(-300, 300, meters)
        total = total + np.where(rng.random(meters) < 0.3, -5.0, rng.uniform(0, 20, meters))
        a = one.apply(np.arange(meters), ts, total)  # one reading each
        # the same readings, plus a later one for meter 0: the general path
        extra_ts = int(ts[0]) + 60
        b = mixed.apply(
            np.append(np.arange(meters), 0), np.append(ts, extra_ts), np.append(total, total[0] + 1.0)
        )
        keep = a.completed.meter != 0
        other = b.completed.meter != 0
        order_a = np.lexsort((a.completed.bucket[keep], a.completed.meter[keep]))
        order_b = np.lexsort((b.completed.bucket[other], b.completed.meter[other]))
        for field in ("meter", "bucket", "usage_l", "used"):
            np.testing.assert_array_equal(
                getattr(a.completed, field)[keep][order_a], getattr(b.completed, field)[other][order_b]
            )
        one.apply([0], [extra_ts], [total[0] + 1.0])  # meter 0 catches up
    for name in ("odometer", "used"):
        np.testing.assert_array_equal(getattr(one, name), getattr(mixed, name))
    for name in ("last_ts", "last_total", "known_since"):
        np.testing.assert_array_equal(getattr(one, name), getattr(mixed, name))
    # the mixed batch's running sum rounds in the last bits; the odometer (float32) does not
    np.testing.assert_allclose(one.last_v, mixed.last_v, rtol=1e-13)


# -- the rules, one at a time, on a hand-made SweepInput -------------------------------------


def sweep_input(meters: int, now_s: int, **given: object) -> SweepInput:
    """A sweep's input for `meters` meters with fresh data up to `now_s`, no use ever seen,
    one gateway each; `given` replaces any field."""
    st = DetectSettings()
    hz = np.full(meters, now_s // BS * BS, np.int64)
    never = np.full(meters, NEVER, np.int64)
    fields: dict[str, object] = {
        "now_s": now_s,
        "bucket_s": BS,
        "settings": st,
        "params": uniform_params(st, meters, report_interval_s=BS),
        "horizon_s": hz,
        "known_start_s": hz - 86400,
        "monitor_from_s": never,
        "last_arrival_s": np.full(meters, now_s, np.int64),
        "last_use_end_s": never,
        "last_flow_end_s": never,
        "last_calm_end_s": never,
        "last_wet_end_s": never,
        "last_dry_end_s": never,
        "leak_baseline_l": np.zeros(meters, np.float32),
        "flow_buckets": 3600 // BS,
        "tap_lag_s": np.full(meters, BS + 7200, np.int64),
        "leak_lag_s": np.full(meters, BS + 86400, np.int64),
        "dry_from_s": hz - 86400,
        "dry_b": np.full(meters, 86400 // BS, np.int64),
        "routine_limit_b": np.full(meters, DISABLED, np.uint8),
        "over_routine_limit": np.zeros(meters, np.bool_),
        "quiet_sel": slice(None),
        "window_usage_l": np.zeros(meters, np.float32),
        "horizon_cell": np.arange(meters, dtype=np.int64),
        "dry_start_slot": np.zeros(meters, np.int64),
        "low_threshold_b": np.zeros((86400 // BS, meters), np.uint16),
        "allowance_b": np.zeros((1, 86400 // BS), np.int16),
        "low_allowance_b": np.zeros((1, 86400 // BS), np.int16),
        "profile_group": np.zeros(meters, np.int64),
        "profile_slots": 86400 // BS,
        "floor_sel": np.empty(0, np.int64),
        "floor_usage_l": np.empty(0, np.float32),
        "early_allowance_b": np.zeros((1, 86400 // BS), np.int16),
        "answered_dry_b": np.zeros(meters, np.int64),
        "routine_open_meters": np.empty(0, np.int64),
        "routine_raised_at_s": np.empty(0, np.int64),
        "routine_used_since_l": np.empty(0, np.float32),
        "gateway_of": np.arange(meters, dtype=np.int64),
        "gateway_judges": np.ones(meters, np.bool_),
        "gateway_judge_count": np.ones(meters, np.int64),
        "gateway_judge_quiet_s": np.full(meters, BS + 1800, np.int64),
        "gateway_status_since_s": None,
    }
    return SweepInput(**(fields | given))  # type: ignore[arg-type]


def test_running_tap_needs_its_whole_limit_of_flow_and_data_current_enough() -> None:
    now = T0 + 86400
    hz = now // BS * BS
    inp = sweep_input(
        3,
        now,
        # meter 0 flowed 2 h, meter 1 an hour; meter 2 flowed 2 h but its data is a day old
        horizon_s=np.array([hz, hz, hz - 86400], np.int64),
        last_calm_end_s=np.array([hz - 7200, hz - 3600, hz - 86400 - 7200], np.int64),
        last_flow_end_s=np.array([hz, hz, hz - 86400], np.int64),
    )
    verdict = rules.running_tap(inp)
    assert verdict.raise_when.tolist() == [True, False, False]
    assert verdict.since_s[0] == hz - 7200
    assert not verdict.clear_when.any()  # flowing now: nothing has recovered


def test_low_usage_fires_on_a_long_dry_window_and_clears_only_on_clearly_more_use() -> None:
    now = T0 + 86400
    inp = sweep_input(3, now, window_usage_l=np.array([2.0, 12.0, 20.0], np.float32))
    verdict = rules.low_usage(inp)
    assert verdict.raise_when.tolist() == [True, False, False]
    # 12 L is not low any more, but not clearly recovered either (15 L clears): the state holds
    assert verdict.clear_when.tolist() == [False, False, True]
    assert verdict.used_l is not None
    assert verdict.used_l[0] == 2.0


def test_a_gateway_is_offline_when_all_its_judges_are_quiet_or_by_its_own_word() -> None:
    now = T0 + 86400
    long_ago = now - 4 * 3600  # beyond an every-15-min meter's 15 min + 3 h of grace
    inp = sweep_input(
        5,
        now,
        # gateway 0: meters 0 and 1, both quiet; gateway 1: meters 2 and 3, one quiet;
        # gateway 2: meter 4 alone, fresh, but it said `offline` an hour ago
        last_arrival_s=np.array([long_ago, long_ago, long_ago, now, now], np.int64),
        gateway_of=np.array([0, 0, 1, 1, 2], np.int64),
        gateway_judge_count=np.array([2, 2, 1], np.int64),
        gateway_status_since_s=np.array([NEVER, NEVER, now - 3600], np.int64),
    )
    offline = rules.gateway_offline(inp)
    assert offline.raise_when.tolist() == [True, False, True]
    silent = rules.meter_silent(inp, offline.raise_when[inp.gateway_of])
    # a quiet meter of an offline gateway is the gateway's alert: held, not its own
    assert silent.raise_when.tolist() == [False, False, True, False, False]
    assert silent.hold is not None
    assert silent.hold.tolist() == [True, True, False, False, False]


def test_the_floor_is_the_plain_field_rule_for_the_meters_it_applies_to() -> None:
    """Issue 17: for the meters in `floor_sel` (residents whose days never trip the field
    rule) the check-in tier of low_usage is "< 10 L in the last 12 h of known data", however
    short the dry run; the learned tier (the neighbour) still waits for its long dry run."""
    now = T0 + 86400
    hz = now // BS * BS
    inp = sweep_input(
        4,
        now,
        # every meter used a little an hour ago: the learned rule's 13 h dry run is far off
        dry_b=np.full(4, 4, np.int64),
        window_usage_l=np.array([2.0, 2.0, 12.0, 2.0], np.float32),
        # meters 0 and 2 are the floor's; meter 3 is too, but came back from an absence 6 h ago
        floor_sel=np.array([0, 2, 3], np.int64),
        floor_usage_l=np.array([2.0, 12.0, 2.0], np.float32),
        monitor_from_s=np.array([NEVER, NEVER, NEVER, hz - 6 * 3600], np.int64),
    )
    verdict = rules.low_usage(inp)
    assert verdict.raise_when.tolist() == [False, False, False, False]  # nobody to the neighbour
    assert verdict.early_when is not None
    assert verdict.early_when.tolist() == [True, False, False, False]  # meter 0 is asked
    assert rules.floor(inp).tolist() == [True, False, False, False]


def test_routine_break_asks_the_resident_before_the_district_allows_the_neighbour() -> None:
    """Two tiers: over their own pattern and the district's 0.995 level the resident is asked;
    the neighbour waits for the district's 0.9995 level. A resident who answered "fine" at a
    dry stretch as long at this time of day is not asked again for it."""
    now = T0 + 86400
    slots = 86400 // BS
    inp = sweep_input(
        3,
        now,
        dry_b=np.array([20, 20, 20], np.int64),  # 5 h dry, over everyone's own limit
        over_routine_limit=np.ones(3, np.bool_),
        allowance_b=np.full((1, slots), 30, np.int16),  # the neighbour: over 7.5 h
        early_allowance_b=np.full((1, slots), 16, np.int16),  # the check-in: over 4 h
        answered_dry_b=np.array([0, 0, 24], np.int64),  # meter 2's resident was fine at 6 h
    )
    verdict = rules.routine_break(inp)
    assert verdict.raise_when.tolist() == [False, False, False]
    assert verdict.early_when is not None
    assert verdict.early_when.tolist() == [True, True, False]


def test_routine_break_can_ask_on_the_district_alone_at_any_hour() -> None:
    """`routine_check_in_own` off: the check-in tier asks a resident with a learned pattern
    once the dry run is over the district's level, even at an hour their own pattern is off
    (asleep, or often out: `routine_limit_b` DISABLED) or under their own limit; a resident
    without enough learned days is not asked. The neighbour tier still needs their own
    pattern. On, nothing changes."""
    now = T0 + 86400
    slots = 86400 // BS
    inp = sweep_input(
        3,
        now,
        settings=DetectSettings(routine_check_in_own=False),
        dry_b=np.full(3, 20, np.int64),  # 5 h dry
        over_routine_limit=np.zeros(3, np.bool_),  # own pattern off at this hour
        allowance_b=np.full((1, slots), 8, np.int16),  # the neighbour: over 2 h
        early_allowance_b=np.full((1, slots), 16, np.int16),  # the check-in: over 4 h
        learned=np.array([True, True, False]),
    )
    inp = replace(inp, dry_b=np.array([20, 12, 20], np.int64))  # meter 1: 3 h, under the district
    verdict = rules.routine_break(inp)
    assert verdict.raise_when.tolist() == [False, False, False]
    assert verdict.early_when is not None
    assert verdict.early_when.tolist() == [True, False, False]
    own = rules.routine_break(replace(inp, settings=DetectSettings(routine_check_in_own=True)))
    assert own.early_when is not None
    assert not own.early_when.any()


def test_routine_break_asks_sooner_where_the_door_saw_nobody_leave() -> None:
    """Issue 14: a household with a door reminder that saw no passage since the last water
    use is home and silent: its check-in tier asks over the district's `home_allowance_b`
    (lower), where the others wait for `early_allowance_b`. A passage since (probably out) or
    no reminder: as before. The neighbour tier is the same for all."""
    now = T0 + 86400
    slots = 86400 // BS
    inp = sweep_input(
        4,
        now,
        dry_b=np.full(4, 12, np.int64),  # 3 h dry, over everyone's own limit
        over_routine_limit=np.ones(4, np.bool_),
        allowance_b=np.full((1, slots), 30, np.int16),  # the neighbour: over 7.5 h
        early_allowance_b=np.full((1, slots), 16, np.int16),  # the check-in: over 4 h
        home_allowance_b=np.full((1, slots), 8, np.int16),  # home and silent: over 2 h
        # meter 0: reminder, nobody seen; 1: reminder, a passage since; 2, 3: no reminder
        home_silent=np.array([True, False, False, False]),
        door_out=np.array([False, True, False, False]),
        answered_dry_b=np.array([0, 0, 0, 0], np.int64),
    )
    verdict = rules.routine_break(inp)
    assert verdict.raise_when.tolist() == [False] * 4
    assert verdict.early_when is not None
    assert verdict.early_when.tolist() == [True, False, False, False]
    # the resident's own pattern still comes first: under it, nobody is asked
    quiet = rules.routine_break(replace(inp, over_routine_limit=np.zeros(4, np.bool_)))
    assert quiet.early_when is not None
    assert not quiet.early_when.any()
    # and without any reminder in the district, nothing changes
    plain = rules.routine_break(replace(inp, home_silent=None, door_out=None))
    assert plain.early_when is not None
    assert not plain.early_when.any()


def test_a_routine_check_in_after_a_passage_out_is_marked_so_silence_does_not_wake_the_neighbour() -> None:
    """Issue 14: a routine_break raised while the door saw the resident pass and no water
    since carries `door_out` (true when `door_out_holds_neighbour` is on): unanswered, the
    stage then leaves the neighbour to the neighbour tier."""
    from lovekey.detectors.changes import water_details

    now = T0 + 86400
    inp = sweep_input(
        2,
        now,
        settings=DetectSettings(door_out_holds_neighbour=True),
        door_out=np.array([True, False]),
        over_routine_limit=np.ones(2, np.bool_),
    )
    verdict = rules.routine_break(inp)
    learned = np.zeros(2, np.int16)
    assert water_details("routine_break", 0, inp, verdict, "WM-0", learned)["door_out"] is True
    assert "door_out" not in water_details("routine_break", 1, inp, verdict, "WM-1", learned)
    off = replace(inp, settings=DetectSettings(door_out_holds_neighbour=False))
    assert water_details("routine_break", 0, off, verdict, "WM-0", learned)["door_out"] is False
    assert "door_out" not in water_details("low_usage", 0, inp, rules.low_usage(inp), "WM-0", learned)


def test_a_resident_the_door_saw_go_out_is_not_asked_when_door_out_check_in_is_off() -> None:
    """`door_out_check_in` off: the check-in tier does not ask a resident the door saw go out
    with no water since (meter 0), and asks the one it did not (meter 1); the neighbour tier
    judges both alike."""
    now = T0 + 86400
    slots = 86400 // BS
    inp = sweep_input(
        2,
        now,
        settings=DetectSettings(door_out_check_in=False),
        dry_b=np.full(2, 20, np.int64),  # 5 h dry: over the check-in tier, under the neighbour's
        over_routine_limit=np.ones(2, np.bool_),
        allowance_b=np.full((1, slots), 30, np.int16),
        early_allowance_b=np.full((1, slots), 16, np.int16),
        door_out=np.array([True, False]),
        home_silent=np.array([False, False]),
        answered_dry_b=np.zeros(2, np.int64),
    )
    off = rules.routine_break(inp)
    assert off.early_when is not None
    assert off.early_when.tolist() == [False, True]
    on = rules.routine_break(replace(inp, settings=DetectSettings(door_out_check_in=True)))
    assert on.early_when is not None
    assert on.early_when.tolist() == [True, True]
    later = replace(inp, dry_b=np.full(2, 40, np.int64))  # 10 h: the neighbour tier, for both
    assert rules.routine_break(later).raise_when.tolist() == [True, True]
    assert rules.routine_break(later).early_when.tolist() == [True, True]


def test_the_days_of_a_dry_run_in_which_the_resident_was_found_needing_help_are_not_learned() -> None:
    """Residents 0 and 1 have the same 20 h dry run; a visit finds resident 0 needing help
    (`Presence.found_s`). Those days are not learned for resident 0 (from the start of the
    dry run until water is used again) and are for resident 1, whose alert nobody resolved
    so. Resident 0's days after it are learned as ever, although the outcome stays on record."""
    h = Home(3)
    for _ in range(10 * 96):
        h.run(0.25, _quiet_litres(((h.t + OFFSET) % 86400) / 3600))
    noon = h.t + 12 * 3600
    back = noon + 20 * 3600  # under low_usage_cap_h: without the outcome, it is learned
    found = np.full(3, NEVER, np.int64)
    end = back + 4 * 86400
    while h.t < end:
        normal = _quiet_litres(((h.t + OFFSET) % 86400) / 3600)
        dry = noon <= h.t < back
        h.run(0.25, np.array([0.0 if dry else normal, 0.0 if dry else normal, normal]))
        if h.t >= noon + 7 * 3600 and found[0] == NEVER:  # the outcome recorded
            found[0] = noon
            h.presence = replace(h.presence, found_s=found.copy())
    prof = h.det.profile
    first, last = prof.day_of(noon), prof.day_of(back)
    assert last == first + 1
    for day in (first, last):
        assert prof.day_rows(day)[1].tolist() == [False, True, True]
    for day in (first - 1, last + 1):
        assert prof.day_rows(day)[1].tolist() == [True, True, True]


def test_the_days_of_a_dry_run_longer_than_any_learned_limit_are_not_learned() -> None:
    """A dry run longer than `low_usage_cap_h` (24 h) is an absence nobody announced or an
    incident, never a routine: resident 0's 30 h are not learned (nobody recorded anything).
    Resident 1's 20 h are (a long day out is learned, or it would alarm every time)."""
    h = Home(2)
    for _ in range(10 * 96):
        h.run(0.25, _quiet_litres(((h.t + OFFSET) % 86400) / 3600))
    noon = h.t + 12 * 3600
    end = noon + 4 * 86400
    while h.t < end:
        normal = _quiet_litres(((h.t + OFFSET) % 86400) / 3600)
        h.run(
            0.25,
            np.array(
                [
                    0.0 if noon <= h.t < noon + 30 * 3600 else normal,
                    0.0 if noon <= h.t < noon + 20 * 3600 else normal,
                ]
            ),
        )
    prof = h.det.profile
    first = prof.day_of(noon)
    assert prof.day_of(noon + 30 * 3600) == first + 1
    for day in (first, first + 1):
        assert prof.day_rows(day)[1].tolist() == [False, True]
    for day in (first - 1, first + 2):
        assert prof.day_rows(day)[1].tolist() == [True, True]


def test_a_leak_stays_netted_out_through_a_gap_in_the_readings_and_a_rebuild() -> None:
    """A leak's flow is not use once the leak is known (`Detector._track_leaks`). A gap in
    the readings longer than `flow_span_max_s` breaks the leak's own run for a day, and a
    rebuild from history (readings out of order) starts the meter afresh; neither says the
    pipe stopped leaking, so the flow must still not count as use: the dry run goes on. It
    stops counting once a dry hour shows the leak has stopped."""
    h = Home(1)
    history: list[tuple[int, float]] = []

    def run(hours: float, litres: float, *, heard: bool = True) -> None:
        for _ in range(int(hours * 3600 // BS)):
            h.t += BS
            h.total += litres
            if heard:
                h.det.apply([0], [h.t], h.total, [h.t + 3])
                history.append((h.t, float(h.total[0])))
            for c in h.det.sweep(h.t + 30, h.presence):
                h.log.append(((h.t - T0) / 3600, c.kind, c.action, c.subject))

    run(2, 6.0)
    run(26, 4.5)  # 0.3 L/min, day and night
    assert [e[1:3] for e in h.events("leak")] == [("leak", "raise")]
    assert h.det.ring.baseline_l[0] > 4.5
    dry_from = int(h.det.runs.last_use_end[0])
    run(2, 4.5, heard=False)  # two hours unheard, then the same flow
    run(2, 4.5)
    assert h.det.ring.baseline_l[0] > 4.5
    assert int(h.det.runs.last_use_end[0]) == dry_from
    ts, totals = zip(*history, strict=True)
    h.det.rebuild([0], [0] * len(ts), list(ts), list(totals), [t + 3 for t in ts])
    run(1, 4.5)
    assert int(h.det.runs.last_use_end[0]) <= dry_from
    run(2, 0.0)  # the leak stops: a dry hour, and the next use counts in full
    assert h.det.ring.baseline_l[0] == 0.0
    run(0.25, 3.0)
    assert int(h.det.runs.last_use_end[0]) == h.t


@pytest.mark.parametrize("use_min_l", [0.5, 0.2])
def test_the_next_litre_of_a_leak_through_a_whole_litre_register_is_not_use(use_min_l: float) -> None:
    """A 0.274 L/min leak through a register that counts whole litres reads 4 or 5 L a
    bucket. With the leak known, a 5 is still the leak (its median, 4, plus the register's
    slack), whatever float32 makes of the difference of two large totals: before, a 5.003
    counted as use and a dry run kept restarting. Nor does a `use_min_l` below the slack's
    spare make it use (0.2 L once hid a fall behind a leak); 2 L more is use."""
    st = load_settings(environ={}).detect.model_copy(update={"use_min_l": use_min_l})
    h = Home(1, settings=st)
    h.total[:] = 123_456.0
    exact = float(h.total[0])
    for _ in range(40 * 4):
        h.t += BS
        exact += 0.274 * 15
        h.det.apply([0], [h.t], np.array([np.floor(exact)]), [h.t + 3])
        h.det.sweep(h.t + 30, h.presence)
    assert h.det.ring.baseline_l[0] > 4.0
    known_from = int(h.det.runs.last_use_end[0])
    for _ in range(24 * 4):
        h.t += BS
        exact += 0.274 * 15
        h.det.apply([0], [h.t], np.array([np.floor(exact)]), [h.t + 3])
        h.det.sweep(h.t + 30, h.presence)
    assert int(h.det.runs.last_use_end[0]) == known_from
    h.t += BS
    exact += 0.274 * 15 + 2.0  # a glass of water and a wash on top of the leak
    h.det.apply([0], [h.t], np.array([np.floor(exact)]), [h.t + 3])
    h.det.sweep(h.t + 30, h.presence)
    assert int(h.det.runs.last_use_end[0]) == h.t


@pytest.mark.parametrize("batched", [False, True])
def test_a_leak_found_later_was_never_use_so_a_lapsed_absence_still_holds(batched: bool) -> None:
    """Away for longer than the press said: until water is used again the resident is taken
    to be still away. A slow leak that began meanwhile ran for a day before the leak rule
    knew it, and its flow counted as use: the resident looked back home, and 13 h after
    the leak was known `low_usage` woke a neighbour for an empty flat (seeds 34 and 44).
    Once known, the leak's earlier flow is not use either, from its first bucket even when
    readings come an hour at a time and the leak is known later than `leak_limit_h` after
    it began (seed 44); a resident who came back and drew water on top of the leak is
    still seen back."""
    h = Home(2)
    h.run(6, 3.0)
    pressed = h.t
    h.run(10.25, 0.0)  # the press ran out: still away until water is used
    h.presence = Presence(
        np.zeros(2, np.bool_), np.full(2, h.t, np.int64), lapsed_since_s=np.full(2, pressed, np.int64)
    )
    exact = h.total.copy()

    sent: list[tuple[int, np.ndarray]] = []

    def leak(hours: float, extra: float = 0.0) -> None:
        nonlocal exact
        for k in range(int(hours * 4)):
            h.t += BS
            exact += 0.274 * 15 + (np.array([0.0, extra]) if k == 0 else 0.0)
            sent.append((h.t, np.floor(exact)))
            if not batched or h.t % 3600 == 0:  # batched: the hour's four readings at once
                for ts, totals in sent:
                    h.det.apply([0, 1], [ts, ts], totals, [h.t + 3, h.t + 3])
                sent.clear()
            for c in h.det.sweep(h.t + 30, h.presence):
                h.log.append(((h.t - T0) / 3600, c.kind, c.action, c.subject))

    leak(20)
    leak(20, extra=6.0)  # R-1 comes home and washes; R-0 is still away
    assert [e[1:] for e in h.events("leak")] == [("leak", "raise", "R-0"), ("leak", "raise", "R-1")]
    assert int(h.det.runs.last_use_end[0]) <= pressed
    leak(24)
    quiet = [e[3] for e in h.events() if e[1] in ("low_usage", "routine_break") and e[2] == "raise"]
    assert quiet == ["R-1"]


def test_a_passage_out_moves_the_dry_run_only_as_long_as_an_outing_lasts() -> None:
    """A passage at the door with no water after it is probably an outing: the learned
    rules count the dry run from `door_out_grace_h` (3 h) after it. Not for ever: from
    `door_out_max_h` (12 h) after the passage with still no water, the dry run counts from
    the passage, when the resident was last seen (seed 12's missed incident began six
    minutes after a passage)."""
    h = Home(3)
    h.run(2, 3.0)
    used = h.t
    h.run(14, 0.0)
    now = h.t + 30
    passage = np.array([used + 900, h.t - 11 * 3600, NEVER], np.int64)  # 13.75 h, 11 h ago, none
    presence = Presence(np.zeros(3, np.bool_), np.full(3, NEVER, np.int64), active_at_s=passage)
    inp = h.det._sweep_input(now, presence, None)
    assert inp.dry_from_s.tolist() == [passage[0], passage[1] + 3 * 3600, used]
    assert inp.door_out is not None
    assert inp.door_out.tolist() == [True, True, False]  # both still look like going out


def test_low_usage_asks_on_water_alone_where_a_passage_put_the_dry_run_off() -> None:
    """A passage out puts routine_break's dry run off, and low_usage's neighbour tier with
    it; its check-in tier judges water alone (`door_delays_low_usage` off): a draught at the
    door while the resident lies on the floor does not keep the net from them (seed 23's
    miss). Past `low_usage_cap_h` of no water no passage reads as out at all."""
    h = Home(3)
    h.run(2, 3.0)
    used = h.t
    h.run(14, 0.0)
    now = h.t + 30
    passage = np.array([used + 900, h.t - 3600, NEVER], np.int64)  # 13.75 h ago, 1 h ago, none
    presence = Presence(np.zeros(3, np.bool_), np.full(3, NEVER, np.int64), active_at_s=passage)
    inp = h.det._sweep_input(now, presence, None)
    water_b = (inp.horizon_s - used) // BS
    assert inp.low_dry_b is not None
    assert inp.low_dry_b.tolist() == water_b.tolist()
    assert inp.dry_b.tolist() == [(h.t - passage[0]) // BS, 0, water_b[2]]
    verdict = rules.low_usage(inp)
    assert verdict.raise_when.tolist() == [True, False, True]  # the neighbour tier waits for 1
    assert verdict.early_when is not None
    assert verdict.early_when.tolist() == [True, True, True]  # 14 h without water: asked
    waits = rules.low_usage(replace(inp, low_dry_b=None, low_dry_start_slot=None))
    assert waits.early_when is not None
    assert waits.early_when.tolist() == [True, False, True]  # what door_delays_low_usage does
    # a whole day without water: the passage an hour ago no longer reads as going out
    h.run(11, 0.0)
    late = np.array([NEVER, h.t - 3600, NEVER], np.int64)
    presence = Presence(np.zeros(3, np.bool_), np.full(3, NEVER, np.int64), active_at_s=late)
    inp = h.det._sweep_input(h.t + 30, presence, None)
    assert inp.door_out is not None
    assert inp.door_out.tolist() == [False, False, False]
    assert inp.dry_from_s[1] == used


def test_residents_who_carry_a_mobile_are_asked_on_their_own_schedule() -> None:
    """`routine_check_in_schedule_mobile_h`: a resident whose rules say they carry a mobile
    (`routine_check_in_mobile`) is asked on the second schedule; the same life without the
    mobile waits for the first. Without a mobile schedule the flag changes nothing."""

    def first_asked(st: DetectSettings) -> dict[str, float]:
        rng = np.random.default_rng(11)
        n = 8  # residents 0-3 and 4-7 live the same days; 4-7 carry a mobile
        # a wide margin on their own limits: only the check-in tier can ask within the hours
        own = {"routine_margin_min": 600}
        rules = [
            effective_rules(st, None, {"detect": {**own, "routine_check_in_mobile": i >= 4}})[0]
            for i in range(n)
        ]
        h = Home(n, settings=st, rules=rules)
        stop_at = 21 * 24 + 10 + np.array([0, 1, 2, 3] * 2)  # local 10:00-13:00 (T0 is midnight)
        while h.t < T0 + 23 * 86400:
            hour = (h.t - T0) / 3600
            awake = 7 <= ((h.t + OFFSET) % 86400) / 3600 < 21
            use = np.tile(rng.random(4) < 0.6, 2)
            litres = np.where(awake & use, 5.0, 0.0)
            litres[hour >= stop_at] = 0.0
            h.run(0.25, litres)
        asked: dict[str, float] = {}
        for t, _kind, action, subject in h.events("routine_break"):
            if action == "raise":
                asked.setdefault(subject, t - float(stop_at[int(subject.split("-")[1])]))
        return asked

    hours = [0.0] * 24
    hours[7:19] = [6.0] * 12
    mobile = [0.0] * 24
    mobile[7:19] = [3.0] * 12
    base = load_settings(environ={}).detect.model_copy(update={"routine_check_in_schedule_h": hours})
    both = first_asked(base.model_copy(update={"routine_check_in_schedule_mobile_h": mobile}))
    one = first_asked(base)  # no mobile schedule: everyone on the first
    for i in range(4):  # twins: the same dry run, asked 3 hours apart with a mobile
        assert both[f"R-{i}"] - both[f"R-{i + 4}"] == pytest.approx(3.0, abs=0.25), both
        assert both[f"R-{i}"] == one[f"R-{i}"] == one[f"R-{i + 4}"], (both, one)
        assert both[f"R-{i}"] > 4.0, both


def test_a_bad_mobile_flag_in_the_rules_is_reported_and_leaves_the_default() -> None:
    """`routine_check_in_mobile` comes from staff-edited jsonb: anything but a boolean is a
    problem named for the operator, and the resident stays on the main schedule."""
    st = load_settings(environ={}).detect
    for bad in ("yes", 1, None, {"a": 1}, [True]):
        values, problems = effective_rules(st, None, {"detect": {"routine_check_in_mobile": bad}})
        assert values["routine_check_in_mobile"] is False
        assert problems == ["resident rules: routine_check_in_mobile must be a bool"], (bad, problems)
    values, problems = effective_rules(st, {"detect": {"routine_check_in_mobile": True}}, None)
    assert values["routine_check_in_mobile"] is True
    assert problems == []
