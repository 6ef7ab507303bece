"""Each resident's own daily pattern of water use, for the `routine_break` rule. Pure.

A *routine day* runs from `day_start` (default 04:00 local) to the same time next day, so a
night's sleep sits at the end of one day and the morning wake-up early in the next. For
every past day we keep one bit per bucket: was water used (at least `use_min_l`)?

From those bits, for every bucket of the day `s` and every past day `d`, the *dry run*
`g_d(s)` is the number of buckets without use ending at `s` (counted from the day's start
at the latest). In the morning it grows from the day start until the first use; in the day
it is the time since the last use. The resident's normal level at `s` is a high quantile of
`g_d(s)` over the valid past days (the level their dry runs stayed under on, say, 95% of
days), widened for a pattern that runs up to `slack` buckets early or late.

Today is unusual at `s` when today's dry run `g(s)` exceeds that level. The alert waits
until it has been unusual for `margin` buckets: `g(s) > Q*(s - margin) + margin`, which is
the stored threshold `T(s)`. So with a first use by 07:30 on 95% of days, 30 min slack and
a 60 min margin, a morning without water alerts at about 09:00, and an afternoon without
water alerts once the dry run is an hour past anything the resident normally does then.

Days with missing data, an absence or an open no-use alert are not learned from.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.ring import NEVER

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]

DISABLED = 255  # threshold value meaning "no alert possible here"
_CHUNK = 4096   # meters per block when recomputing thresholds (bounds temporary memory)


class RoutineProfile:
    def __init__(
        self, meters: int, *, bucket_s: int, days: int, day_start_s: int, utc_offset_s: int
    ) -> None:
        if 86400 % bucket_s or (day_start_s - utc_offset_s) % bucket_s:
            raise ValueError("a day and the local day start must be whole numbers of buckets")
        self.bucket_s = bucket_s
        self.slots = 86400 // bucket_s
        self.days = days
        self.origin_s = day_start_s - utc_offset_s  # a routine day starts here (mod 1 day), UTC
        self.use_bits = np.zeros((days, meters, (self.slots + 7) // 8), dtype=np.uint8)
        self.valid = np.zeros((days, meters), dtype=np.bool_)
        self.day_of_row = np.full(days, NEVER, dtype=np.int64)
        self.threshold = np.full((meters, self.slots), DISABLED, dtype=np.uint8)
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
        out: I64 = ((end_s - self.bucket_s - self.origin_s) % 86400) // self.bucket_s
        return out

    def day_start_ending(self, end_s: I64) -> I64:
        """Start of the routine day of the bucket that ends at `end_s`."""
        begin = end_s - self.bucket_s
        out: I64 = begin - (begin - self.origin_s) % 86400
        return out

    # -- learning -------------------------------------------------------------------------

    def record_day(self, day: int, usage_l: F32, use_min_l: float, exclude: BOOL) -> None:
        """Store day `day` from its usage matrix (slots x meters, NaN where unknown)."""
        if usage_l.shape[0] != self.slots:
            raise ValueError(f"a day has {self.slots} buckets, got {usage_l.shape[0]}")
        row = day % self.days
        used = np.ascontiguousarray((usage_l >= use_min_l).T)
        self.use_bits[row] = np.packbits(used, axis=1)
        self.valid[row] = ~np.isnan(usage_l).any(axis=0) & ~exclude
        self.day_of_row[row] = day
        self.last_day = day if self.last_day is None else max(self.last_day, day)

    def recompute(
        self,
        *,
        min_days: int,
        quantile: float,
        slack_b: int,
        margin_b: I64,
        min_gap_b: int,
    ) -> None:
        """Thresholds from the days recorded within the last `days` days."""
        if self.last_day is None:
            return
        rows = np.flatnonzero(
            (self.day_of_row > self.last_day - self.days) & (self.day_of_row <= self.last_day)
        )
        meters = self.threshold.shape[0]
        self.learned_days[:] = self.valid[rows].sum(axis=0) if rows.size else 0
        for lo in range(0, meters, _CHUNK):
            hi = min(lo + _CHUNK, meters)
            self.threshold[lo:hi] = self._thresholds(
                rows, lo, hi, min_days, quantile, slack_b, margin_b[lo:hi], min_gap_b
            )

    def _thresholds(
        self,
        rows: I64,
        lo: int,
        hi: int,
        min_days: int,
        quantile: float,
        slack_b: int,
        margin_b: I64,
        min_gap_b: int,
    ) -> U8:
        s_count = self.slots
        out = np.full((hi - lo, s_count), DISABLED, dtype=np.uint8)
        if rows.size == 0:
            return out
        bits = np.unpackbits(self.use_bits[rows, lo:hi], axis=2)[:, :, :s_count]  # D x C x S
        slot = np.arange(s_count, dtype=np.int16)
        last = np.where(bits.astype(np.bool_), slot, np.int16(-1))
        np.maximum.accumulate(last, axis=2, out=last)
        dry = slot - last                                          # g_d(s), 1..S
        valid = self.valid[rows, lo:hi]                            # D x C
        dry[~valid] = -1
        dry.sort(axis=0)
        n = valid.sum(axis=0)                                      # C
        k = np.ceil(quantile * n).astype(np.int64) - 1
        pick = np.clip(rows.size - n + k, 0, rows.size - 1)
        level = np.take_along_axis(dry, pick[np.newaxis, :, np.newaxis], axis=0)[0]  # C x S
        # a day running up to `slack` later has dry runs longer by the delay (Q(s-d) + d); one
        # running earlier is where the usual day is later on (Q(s+d))
        widened = level.astype(np.int16)
        for shift in range(1, slack_b + 1):
            np.maximum(widened[:, shift:], level[:, :-shift] + shift, out=widened[:, shift:])
            np.maximum(widened[:, :-shift], level[:, shift:], out=widened[:, :-shift])
        at = slot[np.newaxis, :].astype(np.int64) - margin_b[:, np.newaxis]  # s - margin
        shifted = np.take_along_axis(widened, np.clip(at, 0, s_count - 1), axis=1)
        threshold = np.maximum(shifted.astype(np.int64) + margin_b[:, np.newaxis], min_gap_b)
        threshold[at < 0] = DISABLED
        threshold[n < min_days] = DISABLED
        out[:] = np.minimum(threshold, DISABLED)
        return out
