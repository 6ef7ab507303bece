"""Which days the routine profile learns from, and when. Pure.

A day is summarised into the profile once all its data can have arrived (`routine_summary_lag_h`
after it ended), read from the usage ring while the ring still holds it. Meters that were away
or could not be heard during part of a day are excluded from that day ("tainted"): an absence
is not a normal day. After new days are recorded the thresholds are recomputed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lovekey.config import DetectSettings
from lovekey.detectors.profile import RoutineProfile
from lovekey.detectors.ring import UsageRing

I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]


class DayLearner:
    """Feeds `profile` whole days from `ring`; `learn=False` never summarises a day."""

    def __init__(
        self,
        ring: UsageRing,
        profile: RoutineProfile,
        settings: DetectSettings,
        routine_margin_b: I64,
        *,
        learn: bool,
        floor_min_l: npt.NDArray[np.float64] | None = None,
    ) -> None:
        """`floor_min_l`: per meter the field rule's litres (`low_usage_min_l`), for the floor."""
        bs = profile.bucket_s
        lag_s = int(settings.routine_summary_lag_h * 3600)
        if learn and 86400 + lag_s + bs > settings.ring_hours * 3600:
            raise ValueError("ring_hours must cover a day plus routine_summary_lag_h")
        self.ring = ring
        self.profile = profile
        self.settings = settings
        self.bucket_s = bs
        self._routine_margin_b = routine_margin_b
        self._learn = learn
        self._summary_lag_s = lag_s
        # the plain field rule's window, in buckets (the floor learns its lows per day)
        self.floor_window_b = max(1, round(settings.low_usage_window_h * 3600 / bs))
        self._taint: dict[int, BOOL] = {}  # day -> meters not to learn it for
        self.recorded: list[int] = []  # learned since the owner last looked (to persist)
        meters = ring.meters
        self._floor_min_l = np.full(meters, settings.low_usage_min_l) if floor_min_l is None else floor_min_l
        # per meter: the floor applies (its ordinary days never trip the field rule)
        self.floor_eligible = np.zeros(meters, np.bool_)
        # per day not yet learned: per meter, the least litres of the field-rule windows the
        # sweeps judged (NaN: none judged); see `judged_windows`
        self._judged_low: dict[int, npt.NDArray[np.float32]] = {}

    def taint(self, hz: I64, taint: BOOL) -> None:
        """Meters in `taint` are not learned for the day their horizon `hz` falls in (the
        day of the bucket that ends at `hz`)."""
        last_bucket = hz[taint] - self.bucket_s
        self.taint_spans(np.flatnonzero(taint), last_bucket, last_bucket)

    def taint_spans(self, meters: I64, from_s: I64, to_s: I64) -> None:
        """Each meter in `meters` is not learned for any day that [from_s, to_s] touches.
        Only days not yet learned can change, so a span is cheap however long it is."""
        if meters.size == 0 or not self._learn:
            return
        # a day is learned from the ring, so nothing before its oldest bucket can be; and a
        # meter never heard from has its horizon at NEVER, which counted days from there
        oldest_s = self.ring.oldest * self.bucket_s
        start, end = np.maximum(from_s, oldest_s), np.maximum(to_s, from_s)
        keep = end >= start
        if not keep.all():
            meters, start, end = meters[keep], start[keep], end[keep]
            if meters.size == 0:
                return
        prof = self.profile
        first = (start - prof.origin_s) // 86400
        last = (end - prof.origin_s) // 86400
        low = int(first.min()) if prof.last_day is None else max(int(first.min()), prof.last_day + 1)
        for day in range(low, int(last.max()) + 1):
            pick = (first <= day) & (day <= last)
            if pick.any():
                mask = self._taint.setdefault(day, np.zeros(self.ring.meters, np.bool_))
                mask[meters[pick]] = True

    @property
    def learning(self) -> bool:
        return self._learn

    def judged_windows(self, meters: I64, hz: I64, litres: npt.NDArray[np.float32]) -> None:
        """The field rule's windows a sweep judged for `meters` (ending at their horizons
        `hz`): a day's floor minimum is the least of these, so it says what the field rule
        saw that day. A daily meter is judged once a day, at its horizon after each delivery,
        not at every hour of the day its values cover (the field rule cannot see those)."""
        if not self._learn or meters.size == 0:
            return
        days = (hz - 1 - self.profile.origin_s) // 86400
        for day in np.unique(days):
            if self.profile.last_day is not None and day <= self.profile.last_day:
                continue
            low = self._judged_low.get(int(day))
            if low is None:
                low = self._judged_low[int(day)] = np.full(self.ring.meters, np.nan, np.float32)
            pick = days == day
            m = meters[pick]
            low[m] = np.fmin(low[m], litres[pick])

    def learn_due(self, now_s: int) -> None:
        """Record every routine day whose data can all have arrived, then relearn."""
        if not self._learn:
            return
        prof = self.profile
        due = prof.day_of(now_s - self._summary_lag_s) - 1
        first = prof.day_of(self.ring.oldest * self.bucket_s) + 1
        if prof.last_day is not None:
            first = max(first, prof.last_day + 1)
        if due < first:
            return
        for day in range(first, due + 1):
            usage = self.ring.usage_matrix(prof.first_bucket(day), prof.slots)
            used = self.ring.used_matrix(prof.first_bucket(day), prof.slots)
            exclude = self._taint.pop(day, np.zeros(usage.shape[1], np.bool_))
            # the least litres the field rule saw in the windows judged that day (the sweeps
            # judge none while the resident is away or the meter unheard)
            lows = self._judged_low.pop(day, None)
            prof.record_day(day, usage, used, exclude, lows)
            self.recorded.append(day)
        for day in [d for d in self._taint if d <= due]:
            del self._taint[day]
        for day in [d for d in self._judged_low if d <= due]:
            del self._judged_low[day]
        self.relearn()

    def relearn(self) -> None:
        """Recompute routine thresholds from the recorded days (after loading saved days)."""
        st, bs = self.settings, self.bucket_s
        self.profile.recompute(
            min_days=st.routine_min_days,
            quantile=st.routine_quantile,
            slack_b=int(st.routine_slack_min * 60) // bs,
            margin_b=self._routine_margin_b,
            min_gap_b=int(st.routine_min_gap_min * 60) // bs,
            low_margin_b=int(st.low_usage_margin_min * 60) // bs if st.low_usage_learn else 0,
            low_cap_b=int(st.low_usage_cap_h * 3600) // bs if st.low_usage_learn else 0,
            active_max_b=int(st.routine_active_max_h * 3600) // bs,
            population_quantile=st.routine_population_quantile,
            low_population_quantile=st.low_usage_population_quantile,
            groups=st.routine_population_groups,
            early_population_quantile=st.routine_check_in_population_quantile,
            early_schedule_b=(
                self.profile.schedule_allowance(st.routine_check_in_schedule_h)
                if st.routine_check_in_schedule_h
                else None
            ),
            early_schedule_mobile_b=(
                self.profile.schedule_allowance(st.routine_check_in_schedule_mobile_h)
                if st.routine_check_in_schedule_mobile_h
                else None
            ),
            home_population_quantile=st.door_home_check_in_quantile,
            home_schedule_b=(
                self.profile.schedule_allowance(st.routine_check_in_schedule_home_h)
                if st.routine_check_in_schedule_home_h
                else None
            ),
        )
        if st.floor_enabled:
            self.floor_eligible = self.profile.floor_eligible(
                self._floor_min_l, st.floor_history_days, st.floor_min_days
            )
