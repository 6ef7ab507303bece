"""Each resident's own daily pattern of water use, for `routine_break` and `low_usage`. Pure.

For every past day we keep one bit per bucket: was water used (at least `use_min_l`)? A
*routine day* runs from `day_start` (default 04:00 local) to the same time next day; it is
only the unit days are stored and judged in (a day with missing data, an absence or an open
no-use alert is not learned from).

From the bits of consecutive days we know, for every bucket of the day `s` and past day `d`,
the *dry run* `g_d(s)`: how many buckets since water was last used (across midnight). It is
long at the end of the night, short in a busy morning. Two thresholds per bucket of the day:

- `routine_break`: today is unusual at `s` when today's dry run exceeds a high quantile of
  the resident's dry runs at `s` (by default the level they stayed under on 95% of days),
  widened for a day that runs up to `slack` buckets early or late. The alert waits until it
  has been unusual for `margin` buckets: `g(s) > Q*(s - margin) + margin`, the stored
  `threshold[s]` (slot-major: `threshold[s, meter]`). With water used by 07:30 on 95% of
  days, 30 min slack and a 60 min margin, a morning without water alerts at about 09:00.
- `low_usage` (the field rule, < 10 L in 12 h): a quiet 12 h is normal for some residents
  at some hours (a frugal resident who flushes with a bucket, a long night). The rule only
  fires once today's dry run is also longer than the longest the resident had at that time
  (widened, plus a margin, capped): `low_threshold[s]`.

"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from lovekey.detectors.ring import NEVER

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]

DISABLED = 255  # threshold value meaning "no alert possible here"
_MAX_RUN = 4 * 96  # dry runs are counted up to this many buckets
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int16)
_CHUNK = 1024  # meters per block when recomputing thresholds (bounds temporary memory)


class RoutineProfile:
    def __init__(self, meters: int, *, bucket_s: int, days: int, day_start_s: int, utc_offset_s: int) -> None:
        if 86400 % bucket_s or (day_start_s - utc_offset_s) % bucket_s:
            raise ValueError("a day and the local day start must be whole numbers of buckets")
        self.bucket_s = bucket_s
        self.slots = 86400 // bucket_s
        self.days = days
        self.origin_s = day_start_s - utc_offset_s  # a routine day starts here (mod 1 day), UTC
        self.day_start_s = day_start_s  # local
        self.use_bits = np.zeros((days, meters, (self.slots + 7) // 8), dtype=np.uint8)
        self.valid = np.zeros((days, meters), dtype=np.bool_)
        # the floor: per day the least litres any field-rule window starting that day held
        # (NaN: no known window, or a day away or unheard)
        self.floor_min_l = np.full((days, meters), np.nan, dtype=np.float32)
        self.day_of_row = np.full(days, NEVER, dtype=np.int64)
        # slot-major (slots x meters): a sweep reads one slot of nearly every meter, which is
        # then one contiguous row rather than a cache line per meter
        self.threshold = np.full((self.slots, meters), DISABLED, dtype=np.uint8)
        # low_usage: a dry run shorter than this is normal for the resident (0: not learned)
        self.low_threshold = np.zeros((self.slots, meters), dtype=np.uint16)
        # routine_break: per slot a dry run starts in, how long everyone's may last (0: off)
        # grouped by how busy a resident's days are (quantiles of used buckets a day), so a
        # busy resident is not held to the long dry runs of a frugal one
        self.groups = 1
        self.group = np.zeros(meters, dtype=np.int64)
        self.allowance = np.zeros((1, self.slots), dtype=np.int16)
        self.low_allowance = np.zeros((1, self.slots), dtype=np.int16)  # the same, for low_usage
        self.early_allowance = np.zeros((1, self.slots), dtype=np.int16)  # routine's check-in tier
        # the same for a household whose door reminder saw no passage since the last use
        self.home_allowance = np.zeros((1, self.slots), dtype=np.int16)
        self.learned_days = np.zeros(meters, dtype=np.int16)
        self.last_day: int | None = None  # newest day recorded

    # -- calendar -------------------------------------------------------------------------

    def day_of(self, t_s: int) -> int:
        """The routine day containing instant `t_s`."""
        return (int(t_s) - self.origin_s) // 86400

    def day_start(self, day: int) -> int:
        return day * 86400 + self.origin_s

    def first_bucket(self, day: int) -> int:
        return self.day_start(day) // self.bucket_s

    def slot_ending(self, end_s: I64) -> I64:
        """Slot (bucket of the day) of the bucket that ends at `end_s`."""
        # buckets since the origin, then modulo a day: `b - b // n * n`, as `%` (floor) but
        # a third cheaper, since numpy divides by a scalar with multiplications
        out: I64 = (end_s - (self.bucket_s + self.origin_s)) // self.bucket_s
        out -= out // self.slots * self.slots
        return out

    def schedule_allowance(self, hours: Sequence[float]) -> npt.NDArray[np.int16]:
        """Per start slot, from 24 hours of dry run by the local hour a dry run began (0:
        never): the allowance a dry run must exceed (`dry_b > allowance`: asked once it has
        lasted the hours)."""
        start = (self.day_start_s + np.arange(self.slots) * self.bucket_s) % 86400
        need = np.asarray(hours, np.float64)[start // 3600]
        buckets = np.ceil(need * 3600 / self.bucket_s).astype(np.int64) - 1
        never = np.iinfo(np.int16).max
        return np.where(need > 0, np.clip(buckets, 0, never), never).astype(np.int16)

    def day_start_ending(self, end_s: I64) -> I64:
        """Start of the routine day of the bucket that ends at `end_s`."""
        begin = end_s - self.bucket_s
        out: I64 = begin - (begin - self.origin_s) % 86400
        return out

    # -- learning -------------------------------------------------------------------------

    def record_day(
        self, day: int, usage_l: F32, used: BOOL, exclude: BOOL, floor_min_l: F32 | None = None
    ) -> None:
        """Store day `day` from its usage and used flags (slots x meters; NaN: unknown), and
        the least litres of the field rule's windows judged that day (NaN: none)."""
        if usage_l.shape[0] != self.slots or used.shape != usage_l.shape:
            raise ValueError(f"a day has {self.slots} buckets, got {usage_l.shape[0]}")
        row = day % self.days
        self.use_bits[row] = np.packbits(np.ascontiguousarray(used.T), axis=1)
        self.valid[row] = ~np.isnan(usage_l).any(axis=0) & ~exclude
        self.floor_min_l[row] = np.nan
        if floor_min_l is not None:
            self.floor_min_l[row] = floor_min_l
        self.day_of_row[row] = day
        self.last_day = day if self.last_day is None else max(self.last_day, day)

    def load_day(
        self, day: int, meters: I64, use_bits: U8, valid: BOOL, floor_min_l: F32 | None = None
    ) -> None:
        """Put saved days back (rows of packed bits for some meters of one day)."""
        row = day % self.days
        if self.day_of_row[row] != day:
            self.use_bits[row] = 0
            self.valid[row] = False
            self.floor_min_l[row] = np.nan
            self.day_of_row[row] = day
        self.use_bits[row, meters] = use_bits
        self.valid[row, meters] = valid
        if floor_min_l is not None:
            self.floor_min_l[row, meters] = floor_min_l
        self.last_day = day if self.last_day is None else max(self.last_day, day)

    def day_rows(self, day: int) -> tuple[U8, BOOL]:
        """The packed bits and validity of every meter for a recorded day."""
        row = day % self.days
        if self.day_of_row[row] != day:
            raise KeyError(day)
        return self.use_bits[row], self.valid[row]

    def day_floor(self, day: int) -> F32:
        """The floor minima of every meter for a recorded day (NaN: not known)."""
        row = day % self.days
        if self.day_of_row[row] != day:
            raise KeyError(day)
        out: F32 = self.floor_min_l[row]
        return out

    def floor_eligible(self, min_l: npt.NDArray[np.float64], history_days: int, min_days: int) -> BOOL:
        """Per meter: the plain field rule did not fire on any of its learned days within the
        last `history_days` (every field-rule window starting on them held at least `min_l`),
        and at least `min_days` such days are known. These residents' ordinary days never trip
        the field rule, so when it fires for them it is news: the floor flags them then."""
        if self.last_day is None:
            return np.zeros(self.floor_min_l.shape[1], np.bool_)
        days = np.arange(self.last_day - min(history_days, self.days) + 1, self.last_day + 1)
        rows = days % self.days
        present = self.day_of_row[rows] == days
        lows = self.floor_min_l[rows[present]]  # D x M
        known = ~np.isnan(lows)
        tripped = (known & (lows < min_l[None, :].astype(np.float32))).any(axis=0)
        out: BOOL = ~tripped & (known.sum(axis=0) >= min_days)
        return out

    def recompute(
        self,
        *,
        min_days: int,
        quantile: float,
        slack_b: int,
        margin_b: I64,
        min_gap_b: int,
        low_margin_b: int,
        low_cap_b: int,
        active_max_b: int = 1 << 15,
        population_quantile: float | None = None,
        low_population_quantile: float | None = None,
        groups: int = 1,
        early_population_quantile: float | None = None,
        home_population_quantile: float | None = None,
        early_schedule_b: npt.NDArray[np.int16] | None = None,
        early_schedule_mobile_b: npt.NDArray[np.int16] | None = None,
        home_schedule_b: npt.NDArray[np.int16] | None = None,
    ) -> None:
        """Thresholds from the days recorded within the last `days` days. `early_schedule_b`
        (per start slot) replaces the check-in tier's district quantile;
        `early_schedule_mobile_b`, for residents who carry a mobile, adds a second table of
        `groups` rows after the first (so `early_allowance` has 2 x groups rows);
        `home_schedule_b` replaces `home_population_quantile` (a door household's reminder
        saw nobody leave since the last use)."""
        if self.last_day is None:
            return
        first = self.last_day - self.days + 1
        days = np.arange(first, self.last_day + 1)
        rows = days % self.days
        present = self.day_of_row[rows] == days
        meters = self.threshold.shape[1]
        valid = self.valid[rows] & present[:, None]  # D x M
        self.learned_days[:] = valid.sum(axis=0)
        self._group_by_activity(rows, valid, groups, min_days)
        runs = np.zeros((self.groups, self.slots, _MAX_RUN + 1), np.int64)  # group x start x length
        for lo in range(0, meters, _CHUNK):
            hi = min(lo + _CHUNK, meters)
            routine, low = self._thresholds(
                rows,
                present,
                lo,
                hi,
                min_days,
                quantile,
                slack_b,
                margin_b[lo:hi],
                min_gap_b,
                low_margin_b,
                low_cap_b,
                active_max_b,
                runs,
            )
            self.threshold[:, lo:hi] = routine.T
            self.low_threshold[:, lo:hi] = low.T
        self.allowance = np.zeros((self.groups, self.slots), np.int16)
        self.low_allowance = np.zeros((self.groups, self.slots), np.int16)
        mobile = early_schedule_mobile_b is not None
        self.early_allowance = np.zeros((self.groups * (2 if mobile else 1), self.slots), np.int16)
        self.home_allowance = np.zeros((self.groups, self.slots), np.int16)
        for g in range(self.groups):
            if home_schedule_b is not None:
                self.home_allowance[g] = home_schedule_b
            elif home_population_quantile is not None:
                self.home_allowance[g] = _allowance(runs[g], home_population_quantile, slack_b)
            if early_schedule_mobile_b is not None:
                self.early_allowance[self.groups + g] = early_schedule_mobile_b
            if early_schedule_b is not None:
                self.early_allowance[g] = early_schedule_b
            elif early_population_quantile is not None:
                self.early_allowance[g] = _allowance(runs[g], early_population_quantile, slack_b)
            if population_quantile is not None:
                self.allowance[g] = _allowance(runs[g], population_quantile, slack_b)
            if low_population_quantile is not None:
                self.low_allowance[g] = _allowance(runs[g], low_population_quantile, slack_b)

    def _group_by_activity(self, rows: I64, valid: BOOL, groups: int, min_days: int) -> None:
        """Split meters into `groups` by used buckets per learned day (equal-sized groups)."""
        self.groups = max(1, groups)
        self.group = np.zeros(self.group.size, dtype=np.int64)
        if self.groups == 1:
            return
        used = np.zeros(self.group.size, np.float64)
        for lo in range(0, self.group.size, _CHUNK * 8):
            hi = min(lo + _CHUNK * 8, self.group.size)
            per_day = _POPCOUNT[self.use_bits[rows, lo:hi]].sum(axis=2)  # D x C
            used[lo:hi] = np.where(valid[:, lo:hi], per_day, 0).sum(axis=0)
        days = valid.sum(axis=0)
        activity = used / np.maximum(days, 1)
        known = days >= min_days
        if not known.any():
            return
        edges = np.quantile(activity[known], np.arange(1, self.groups) / self.groups)
        self.group = np.searchsorted(edges, activity).astype(np.int64)

    def dry_runs(self, rows: I64, present: BOOL, lo: int, hi: int) -> tuple[npt.NDArray[np.int16], BOOL]:
        """Dry runs g_d(s) of meters [lo, hi) over consecutive days (D x C x S), and where known.

        A dry run is counted across day boundaries; it is unknown where it reaches back into a
        day that is missing or not valid, or before the first day.
        """
        s_count = self.slots
        bits = np.unpackbits(self.use_bits[rows, lo:hi], axis=2)[:, :, :s_count]  # D x C x S
        valid = self.valid[rows, lo:hi] & present[:, None]  # D x C
        d_count, c_count = valid.shape
        used = bits.astype(np.bool_)
        used[~valid] = False
        flat_used = used.transpose(1, 0, 2).reshape(c_count, d_count * s_count)  # C x T
        flat_bad = np.repeat(~valid.T, s_count, axis=1)  # C x T
        t = np.arange(d_count * s_count, dtype=np.int32)
        last_use = np.where(flat_used, t, np.int32(-1))
        np.maximum.accumulate(last_use, axis=1, out=last_use)
        last_bad = np.where(flat_bad, t, np.int32(-1))
        np.maximum.accumulate(last_bad, axis=1, out=last_bad)
        dry = np.minimum(t - last_use, np.iinfo(np.int16).max).astype(np.int16)
        known = (last_bad < last_use) | ((last_bad < 0) & (last_use >= 0))
        known &= ~flat_bad
        shape = (c_count, d_count, s_count)
        return (dry.reshape(shape).transpose(1, 0, 2), known.reshape(shape).transpose(1, 0, 2))

    def _thresholds(
        self,
        rows: I64,
        present: BOOL,
        lo: int,
        hi: int,
        min_days: int,
        quantile: float,
        slack_b: int,
        margin_b: I64,
        min_gap_b: int,
        low_margin_b: int,
        low_cap_b: int,
        active_max_b: int,
        runs: npt.NDArray[np.int64],
    ) -> tuple[U8, npt.NDArray[np.uint16]]:
        s_count, d_count = self.slots, rows.size
        dry, known = self.dry_runs(rows, present, lo, hi)  # D x C x S
        self._count_runs(dry, known, runs, self.group[lo:hi])
        n = known.sum(axis=0)  # C x S
        dry = np.where(known, dry, np.int16(-1))
        dry.sort(axis=0)
        k = np.ceil(quantile * n).astype(np.int64) - 1
        pick = np.clip(d_count - n + k, 0, d_count - 1)
        level = np.take_along_axis(dry, pick[np.newaxis], axis=0)[0].astype(np.int32)  # C x S
        longest = dry[-1].astype(np.int32)  # C x S (max)
        enough = self.learned_days[lo:hi] >= min_days

        slot = np.arange(s_count, dtype=np.int64)
        widened = _widen(level, slack_b)
        at = (slot[np.newaxis, :] - margin_b[:, np.newaxis]) % s_count  # s - margin
        shifted = np.take_along_axis(widened, at, axis=1)
        routine = np.maximum(shifted.astype(np.int64) + margin_b[:, np.newaxis], min_gap_b)
        routine[n < min_days // 2] = DISABLED
        routine[~enough] = DISABLED
        # only while the resident is normally up and about: at hours when even their usual dry
        # run is long (asleep, out), a quiet home says nothing; the field rule covers them
        resting = np.take_along_axis(widened, at, axis=1) > active_max_b
        routine[resting] = DISABLED
        routine_u8 = np.minimum(routine, DISABLED).astype(np.uint8)

        low = np.minimum(_widen(longest, slack_b) + low_margin_b, low_cap_b)
        low[~enough] = 0
        return routine_u8, np.maximum(low, 0).astype(np.uint16)

    def _count_runs(
        self,
        dry: npt.NDArray[np.int16],
        known: BOOL,
        runs: npt.NDArray[np.int64],
        group: I64,
    ) -> None:
        """Add every complete dry run (water used at both ends, all known) to `runs`."""
        _d_count, c_count, s_count = dry.shape
        flat_dry = dry.transpose(1, 0, 2).reshape(c_count, -1)
        flat_known = known.transpose(1, 0, 2).reshape(c_count, -1)
        nxt = np.zeros_like(flat_dry)
        nxt[:, :-1] = flat_dry[:, 1:]
        # the last bucket of a run: dry here (> 0), water used in the next bucket (dry 0)
        end = (flat_dry > 0) & (nxt == 0) & flat_known
        end[:, -1] = False
        c, t = np.nonzero(end)
        length = flat_dry[c, t].astype(np.int64)
        start = t - length + 1
        ok = (start >= 0) & (length > 0)
        c, start, length = c[ok], start[ok], length[ok]
        ok = flat_known[c, start]  # known from its first bucket (so known throughout)
        np.add.at(runs, (group[c[ok]], start[ok] % s_count, np.minimum(length[ok], _MAX_RUN)), 1)


def _allowance(runs: npt.NDArray[np.int64], quantile: float, slack_b: int) -> npt.NDArray[np.int16]:
    """Per start slot, the `quantile` of how long dry runs starting then lasted, everyone pooled
    (a morning errand or a day out), taken over the start slots within `slack_b`."""
    pooled = runs.copy()
    for shift in range(1, slack_b + 1):
        pooled += np.roll(runs, shift, axis=0) + np.roll(runs, -shift, axis=0)
    total = pooled.sum(axis=1)
    cum = np.cumsum(pooled, axis=1)
    need = np.ceil(quantile * total)[:, None]
    out: npt.NDArray[np.int16] = np.argmax(cum >= need, axis=1).astype(np.int16)
    out[total == 0] = 0
    return out


def _widen(level: npt.NDArray[np.int32], slack_b: int) -> npt.NDArray[np.int32]:
    """A day running up to `slack_b` buckets late has dry runs longer by the delay
    (level(s-d) + d); one running early looks like the usual day later on (level(s+d)).
    Slots wrap around midnight: the day is a circle."""
    widened = level.copy()
    for shift in range(1, slack_b + 1):
        np.maximum(widened, np.roll(level, shift, axis=1) + shift, out=widened)
        np.maximum(widened, np.roll(level, -shift, axis=1), out=widened)
    return widened


def floor_minimum(usage_l: F32, window_b: int) -> F32:
    """Per meter (column), the least litres in any `window_b`-bucket window starting in the
    first `rows - window_b + 1` rows of `usage_l` (buckets x meters, NaN unknown); windows
    holding an unknown bucket are skipped (the field rule judges known data only), NaN where
    no window is known."""
    starts = usage_l.shape[0] - window_b + 1
    if starts < 1:
        return np.full(usage_l.shape[1], np.nan, np.float32)
    zero = np.zeros((1, usage_l.shape[1]), np.float64)
    litres = np.concatenate([zero, np.cumsum(np.nan_to_num(usage_l, nan=0.0), axis=0, dtype=np.float64)])
    unknown = np.concatenate([zero, np.cumsum(np.isnan(usage_l), axis=0, dtype=np.float64)])
    window = litres[window_b : window_b + starts] - litres[:starts]
    holes = unknown[window_b : window_b + starts] - unknown[:starts]
    window[holes > 0] = np.inf
    low = window.min(axis=0)
    out: F32 = np.where(np.isinf(low), np.nan, low).astype(np.float32)
    return out
