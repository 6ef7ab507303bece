"""Water use per meter and time bucket, from cumulative meter totals. Pure: no I/O, no clock.

The state is a matrix of time buckets x meters kept as a ring: global bucket `b` (the
interval `[b*bucket_s, (b+1)*bucket_s)` in epoch seconds) lives in row `b % buckets`, and
moving time forward blanks the rows that fall out instead of shifting the array (shifting
1,000,000 x 96 float32 costs about 170 ms; blanking a row costs well under 1 ms).

Each cell holds the meter's *odometer* at the END of the bucket: litres used since an
arbitrary per-meter origin, interpolated linearly between readings. So

- usage in bucket b is `P[b] - P[b-1]`, and usage over any window is one subtraction of two
  cells (the cumulative-sum form of a rolling window, with no pass over the window);
- a delta between two readings is spread evenly over the buckets it spans, because the
  odometer is interpolated at every bucket end in between;
- NaN marks an unknown odometer: before the first reading, inside a swap or a gap too long to
  say when the water was used. A gap is never zero: it is spread (known) or NaN (unknown).
- the matrix is stored time-major (row = bucket) so that one bucket of every meter is
  contiguous: clearing a bucket and summing a window run at memory speed.

Cumulative totals may go backwards (meter swap, rollover): the new segment starts from the
new total, the interval across the step is unknown, and no negative use is ever produced.
A total that rose faster than a household pipe delivers (`max_flow_lpm`) is a glitch, not
use: the step counts as 0 L and the meter goes on from its new total.
Readings may arrive late and out of order. Those newer than the meter's last applied reading
are applied incrementally; a reading older than the last applied one cannot be placed
without its neighbours, so its meter is reported *dirty* and the caller rebuilds it from the
authoritative history (`reset_meters` then `apply` of the meter's sorted readings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lovekey.config.settings import MAX_FLOW_LPM_DEFAULT

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
BOOL = npt.NDArray[np.bool_]

NEVER = np.iinfo(np.int64).min // 4  # "no such time": far in the past, still safe to subtract
# A leaking meter's flow read through a whole-litre register wobbles by up to a litre. The
# detector nets a known leak at its median bucket plus this slack, and above that a bucket is
# use only from `LEAK_USE_MIN_L` more, whatever `use_min_l` is: the median's next litre is
# not use, with a quarter litre to spare for float32 differences of large totals (a "5 L"
# bucket can be 5.003). A lower `use_min_l` alone counted that litre as use and hid a fall.
LEAK_READING_SLACK_L = 0.75
LEAK_USE_MIN_L = 0.5


@dataclass(frozen=True, slots=True)
class Completed:
    """Buckets whose end was reached by data in one `apply`: one entry per (meter, bucket).

    `usage_l` is NaN when the bucket is not fully known. `coarse` marks a bucket whose end
    was interpolated over a span longer than `flow_span_max_s`: its litres are right, but it
    cannot tell continuous flow from a burst. `hour_l` is the use over the hour (or the
    ring's `flow_window_s`) ending with the bucket, NaN if unknown. `used`: water was used in
    the bucket (see `UsageRing`).
    """

    meter: I64
    bucket: I64
    usage_l: F32
    hour_l: F32
    coarse: BOOL
    used: BOOL

    def __len__(self) -> int:
        return int(self.meter.size)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    completed: Completed
    dirty: I64  # meters that received a reading older than their last one: rebuild them
    applied: int  # readings applied (duplicates and dirty meters' readings excluded)


class UsageRing:
    """Odometer ring for `meters` meters; see the module docstring.

    `max_spread_s`: a delta over a longer span keeps its litres but its timing is unknown,
    unless it is (near) zero: a long span without use is known to be without use.
    `flow_span_max_s`: spans longer than this mark their buckets `coarse`.
    `flow_window_s`: the trailing window reported as `hour_l` with each completed bucket.
    `max_flow_lpm`: a rise faster than this is a glitch, not use (counted as 0 L).
    `use_min_l`: a bucket counts as *used* when it holds at least this much, or, when its
    litres were spread from a longer span (hourly frozen values), when that span did: a
    meter that reports hourly says "used within this hour", not "0.3 L every 15 minutes".
    Above a known leak (`baseline_l`) it must hold `LEAK_USE_MIN_L` more, at least.
    The used flags are kept in a ring of their own, so day summaries see exactly what the
    rules saw.
    """

    def __init__(
        self,
        meters: int,
        *,
        bucket_s: int,
        buckets: int,
        now_s: int,
        max_spread_s: int = 6 * 3600,
        flow_span_max_s: int = 3900,
        flow_window_s: int = 3600,
        zero_l: float = 0.05,
        use_min_l: float = 0.5,
        max_flow_lpm: float | None = MAX_FLOW_LPM_DEFAULT,
    ) -> None:
        if bucket_s <= 0 or buckets < 2:
            raise ValueError("bucket_s must be positive and the ring at least 2 buckets")
        if flow_window_s % bucket_s:
            raise ValueError("flow_window_s must be a whole number of buckets")
        self.bucket_s = int(bucket_s)
        self.buckets = int(buckets)
        self.max_spread_s = int(max_spread_s)
        self.flow_span_max_s = int(flow_span_max_s)
        self.flow_buckets = flow_window_s // bucket_s
        self.zero_l = float(zero_l)
        self.use_min_l = float(use_min_l)
        # litres a second a household pipe can deliver; a faster rise is not use (None: off)
        self.max_flow_lps = None if max_flow_lpm is None else float(max_flow_lpm) / 60.0
        self.odometer = np.full((buckets, meters), np.nan, dtype=np.float32)
        self._flat = self.odometer.reshape(-1)  # a view: flat index = row * meters + meter
        self.used = np.zeros((buckets, meters), dtype=np.bool_)  # per bucket: water was used
        # litres per bucket that do not count as use (a known leak's flow; set by the detector)
        self.baseline_l = np.zeros(meters, dtype=np.float32)
        self._used_flat = self.used.reshape(-1)
        self._meter_index = np.arange(meters, dtype=np.int64)
        self.head = int(now_s) // self.bucket_s  # newest bucket that has a row
        self.last_ts = np.full(meters, NEVER, dtype=np.int64)
        self.last_total = np.zeros(meters, dtype=np.float64)
        self.last_v = np.zeros(meters, dtype=np.float64)  # odometer at the last reading
        self.known_since = np.full(meters, NEVER, dtype=np.int64)  # end of the last unknown span
        # the first bucket boundary from which a meter's data are known (kept with known_since)
        self.known_start = np.full(meters, self._boundary_after(NEVER), dtype=np.int64)
        self.last_arrival = np.full(meters, int(now_s), dtype=np.int64)

    # -- time ---------------------------------------------------------------------------------

    @property
    def meters(self) -> int:
        return int(self.odometer.shape[1])

    @property
    def oldest(self) -> int:
        """The oldest bucket still held."""
        return self.head - self.buckets + 1

    def advance(self, now_s: int) -> None:
        """Move the ring's head to the bucket containing `now_s`, blanking reused rows."""
        new_head = int(now_s) // self.bucket_s
        if new_head <= self.head:
            return
        if new_head - self.head >= self.buckets:
            self.odometer.fill(np.nan)
            self.used.fill(False)
        else:
            for b in range(self.head + 1, new_head + 1):
                self.odometer[b % self.buckets].fill(np.nan)
                self.used[b % self.buckets].fill(False)
        per_day = max(1, 86400 // self.bucket_s)
        crossed_day = new_head // per_day != self.head // per_day
        self.head = new_head
        if crossed_day:  # keep float32 cells small: move odometer origins once a day
            self.rebase()

    def rebase(self) -> None:
        """Move every meter's odometer origin to its last reading (keeps float32 precise)."""
        shift = self.last_v.astype(np.float32)
        self.odometer -= shift[np.newaxis, :]
        self.last_v -= shift.astype(np.float64)

    # -- reading data in ----------------------------------------------------------------------

    def reset_meters(self, meters: I64) -> None:
        """Forget everything about these meters (before rebuilding them from history)."""
        meters = np.asarray(meters, dtype=np.int64)
        self.odometer[:, meters] = np.nan
        self.used[:, meters] = False
        self.baseline_l[meters] = 0.0
        self.last_ts[meters] = NEVER
        self.last_total[meters] = 0.0
        self.last_v[meters] = 0.0
        self.known_since[meters] = NEVER
        self.known_start[meters] = self._boundary_after(NEVER)

    def _boundary_after(self, t_s: Any) -> Any:
        """The first bucket boundary at or after `t_s`."""
        return -(-t_s // self.bucket_s) * self.bucket_s

    def apply(
        self,
        meter: npt.ArrayLike,
        ts_s: npt.ArrayLike,
        total_l: npt.ArrayLike,
        arrival_s: npt.ArrayLike | None = None,
    ) -> ApplyResult:
        """Apply readings (any order). Returns the completed buckets and the dirty meters."""
        m = np.asarray(meter, dtype=np.int64)
        ts = np.asarray(ts_s, dtype=np.int64)
        total = np.asarray(total_l, dtype=np.float64)
        if m.size == 0:
            return ApplyResult(_empty_completed(), np.empty(0, np.int64), 0)
        if arrival_s is not None:
            np.maximum.at(self.last_arrival, m, np.asarray(arrival_s, dtype=np.int64))

        # order by (meter, ts); usually already in that order when it comes from the database
        key = (m << 32) | (ts - ts.min())
        if key.size > 1 and not bool(np.all(key[1:] >= key[:-1])):
            order = np.argsort(key)  # equal keys are duplicates: one of them is kept
            m, ts, total, key = m[order], ts[order], total[order], key[order]
        if key.size > 1:  # the same (meter, ts) twice: the first one counts, like the database
            keep = np.empty(key.size, dtype=np.bool_)
            keep[0] = True
            np.not_equal(key[1:], key[:-1], out=keep[1:])
            if not keep.all():
                m, ts, total = m[keep], ts[keep], total[keep]

        # at or before the meter's last reading: a repeat (ignored) or late data (dirty)
        last_ts = self.last_ts[m]
        stale = ts <= last_ts
        dirty = np.empty(0, dtype=np.int64)
        last_ts_of_m: I64 | None = last_ts  # still self.last_ts[m] for this m
        if stale.any():
            repeat = stale & (ts == last_ts) & (total == self.last_total[m])
            late = stale & ~repeat
            dirty = np.unique(m[late])
            keep = ~stale
            if dirty.size:
                keep &= ~np.isin(m, dirty)
            m, ts, total = m[keep], ts[keep], total[keep]
            last_ts_of_m = None
        if m.size == 0:
            return ApplyResult(_empty_completed(), dirty, 0)

        self.advance(int(ts.max()))
        first = np.empty(m.size, dtype=np.bool_)
        first[0] = True
        np.not_equal(m[1:], m[:-1], out=first[1:])
        # one reading per meter (a streaming batch): each reading follows the meter's last
        one_each = bool(first.all())
        if one_each:
            prev_ts = self.last_ts[m] if last_ts_of_m is None else last_ts_of_m
            prev_total = self.last_total[m]
        else:
            prev_ts = np.empty_like(ts)
            prev_ts[1:] = ts[:-1]
            prev_ts[first] = self.last_ts[m[first]]
            prev_total = np.empty_like(total)
            prev_total[1:] = total[:-1]
            prev_total[first] = self.last_total[m[first]]

        has_prev = prev_ts != NEVER
        delta = total - prev_total
        span = ts - prev_ts
        swap = has_prev & (delta < 0)
        used = np.where(has_prev & ~swap, delta, 0.0)
        if self.max_flow_lps is not None:
            # a rise faster than a pipe can deliver (a register glitch the ingester did not
            # reject, stored before it checked) is no use: the step counts as 0 L and the
            # meter goes on from its new total; unknown would hide low_usage just as long
            used[used > self.max_flow_lps * np.maximum(span, 60)] = 0.0
        too_long = has_prev & (span > self.max_spread_s) & (used > self.zero_l)
        unknown = ~has_prev | swap | too_long

        # odometer after each reading: the meter's last value plus a per-meter running sum
        if one_each:
            v_before = self.last_v[m]
            v_after = v_before + used
        else:
            run = np.cumsum(used)
            group_start = np.flatnonzero(first)
            group = np.cumsum(first) - 1
            base = self.last_v[m[group_start]] - (run[group_start] - used[group_start])
            v_after = base[group] + run
            v_before = v_after - used

        # bucket ends inside (prev_ts, ts]: the odometer is interpolated there
        bs = self.bucket_s
        lo_end = np.where(has_prev, (prev_ts // bs + 1) * bs, (ts + bs - 1) // bs * bs)
        lo_end = np.maximum(lo_end, (self.oldest + 1) * bs)  # the ring's oldest end is kept
        hi_end = ts // bs * bs
        count = np.maximum((hi_end - lo_end) // bs + 1, 0)
        most = int(count.max())
        if most <= 1:  # the usual case: each reading ends at most one bucket
            idx = np.flatnonzero(count)
            end = lo_end[idx]
        elif most <= 4:  # a few: one pass per position, each in meter order
            levels = [np.flatnonzero(count > k) for k in range(most)]
            idx = np.concatenate(levels)
            end = np.concatenate([lo_end[lv] + k * bs for k, lv in enumerate(levels)])
        else:
            idx = np.repeat(np.arange(m.size), count)
            step = np.arange(idx.size, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
            end = lo_end[idx] + step * bs
        mm = m[idx]
        span_i = span[idx]
        frac = (end - prev_ts[idx]) / np.maximum(span_i, 1)
        value = v_before[idx] + used[idx] * frac
        if unknown.any():
            # an unknown span is NaN inside; its end stays a known starting point for what
            # follows, unless the bucket ending there would then seem known (span in one bucket)
            ts_i = ts[idx]
            blank = unknown[idx] & ((end < ts_i) | (ts_i - bs <= prev_ts[idx]))
            value[blank] = np.nan
        bucket = end // bs - 1
        row = self._row(bucket)
        cell = row * self.meters
        cell += mm
        self._flat.put(cell, value)

        # usage of each completed bucket, and over the trailing flow window
        completed = self._completed(mm, bucket, span_i, row, cell)

        if one_each:
            self.last_ts[m] = ts
            self.last_total[m] = total
            self.last_v[m] = v_after
        else:
            last = np.flatnonzero(np.append(first[1:], True))
            lm = m[last]
            self.last_ts[lm] = ts[last]
            self.last_total[lm] = total[last]
            self.last_v[lm] = v_after[last]
        if unknown.any():
            np.maximum.at(self.known_since, m[unknown], ts[unknown])
            touched = m[unknown]
            self.known_start[touched] = self._boundary_after(self.known_since[touched])
        return ApplyResult(completed, dirty, int(m.size))

    def _row(self, bucket: I64) -> I64:
        """The ring row of each bucket: `bucket % buckets`, written `b - b // n * n`, which is
        a third cheaper (numpy divides by a scalar with multiplications)."""
        out: I64 = bucket - bucket // self.buckets * self.buckets
        return out

    def _cell(self, bucket: I64, meter: I64) -> I64:
        """Flat index of (bucket, meter) in the ring (a flat `take` is ~4x a 2-D gather)."""
        out: I64 = self._row(bucket)
        out *= self.meters
        out += meter
        return out

    def _completed(self, meter: I64, bucket: I64, span_s: I64, row: I64, cell: I64) -> Completed:
        """The buckets just completed (`row`, `cell`: their place in the ring)."""
        end_v = self._flat.take(cell)
        usage = self._back(end_v, cell, row, bucket, 1)
        hour = self._back(end_v, cell, row, bucket, self.flow_buckets)
        spread = np.maximum(span_s, self.bucket_s) / self.bucket_s  # buckets the delta covers
        if self.baseline_l.any():  # net of a known leak, which asks more of use (see above)
            base = self.baseline_l.take(meter)
            floor = np.where(base > 0, max(self.use_min_l, LEAK_USE_MIN_L), self.use_min_l)
            used = (usage - base) * spread >= floor  # NaN compares False: unknown is not used
        else:
            used = usage * spread >= self.use_min_l
        self._used_flat[cell] = used
        return Completed(meter, bucket, usage, hour, span_s > self.flow_span_max_s, used)

    def _back(self, end_v: F32, cell: I64, row: I64, bucket: I64, k: int) -> F32:
        """`end_v` minus the odometer `k` buckets earlier (NaN where that left the ring)."""
        size = self.buckets * self.meters
        earlier = cell - k * self.meters
        earlier[row < k] += size  # wrapped round the ring
        out: F32 = end_v - self._flat.take(earlier)
        if bucket.size and int(bucket.min()) - k < self.oldest:
            out[bucket - k < self.oldest] = np.nan
        return out

    # -- reading windows out ------------------------------------------------------------------

    def odometer_at(self, meter: I64 | slice, end_s: I64) -> F32:
        """Odometer at bucket boundaries `end_s` (NaN if unknown or outside the ring).
        `meter`: meter indexes, or `slice(None)` for every meter (no index to gather)."""
        bucket = np.asarray(end_s, dtype=np.int64) // self.bucket_s - 1
        out = self._flat.take(
            self._cell(
                bucket,
                self._meter_index if isinstance(meter, slice) else np.asarray(meter, dtype=np.int64),
            )
        )
        if bucket.size and (int(bucket.min()) < self.oldest or int(bucket.max()) > self.head):
            out[(bucket < self.oldest) | (bucket > self.head)] = np.nan
        return out

    def usage_between(self, meter: I64 | slice, start_s: I64, end_s: I64) -> F32:
        """Litres used in [start_s, end_s) (bucket boundaries); NaN unless fully known.
        `meter` as in `odometer_at`."""
        out = self.odometer_at(meter, end_s) - self.odometer_at(meter, start_s)
        out[np.asarray(start_s) < self.known_since[meter]] = np.nan
        return out

    def horizon(self) -> I64:
        """Per meter, the end of its newest complete bucket (a bucket boundary)."""
        h: I64 = self.last_ts // self.bucket_s * self.bucket_s
        return h

    def used_matrix(self, first_bucket: int, count: int) -> BOOL:
        """Used flags of buckets [first_bucket, first_bucket+count) (count x M), a copy."""
        b = np.arange(first_bucket, first_bucket + count, dtype=np.int64)
        inside = (b >= self.oldest) & (b <= self.head)
        out: BOOL = self.used[b % self.buckets]
        out[~inside] = False
        return out

    def unmark_used(self, meters: I64, first_bucket: int, unmark: BOOL) -> I64:
        """Clear the used flags where `unmark` (count x len(meters), buckets from
        `first_bucket`) says the litres were not use after all (a leak found later), and
        return the end of each meter's newest bucket still used in the ring (NEVER: none, the
        last use is older than anything held, as for a meter never used)."""
        b = np.arange(first_bucket, first_bucket + unmark.shape[0], dtype=np.int64)
        inside = (b >= self.oldest) & (b <= self.head)
        rows = self._row(b[inside])
        cleared = self.used[np.ix_(rows, meters)] & ~unmark[inside]
        self.used[np.ix_(rows, meters)] = cleared
        order = self._row(np.arange(self.oldest, self.head + 1, dtype=np.int64))
        flags = self.used[np.ix_(order, meters)]  # oldest first
        any_used = flags.any(axis=0)
        newest = flags.shape[0] - 1 - np.argmax(flags[::-1], axis=0)
        end = (self.oldest + newest + 1) * self.bucket_s
        out: I64 = np.where(any_used, end, NEVER)
        return out

    def usage_matrix(self, first_bucket: int, count: int, meters: I64 | None = None) -> F32:
        """Usage of buckets [first_bucket, first_bucket+count) for every meter (count x M),
        or for `meters` only (count x len(meters)).

        NaN where unknown or outside the ring. A copy; for day summaries, not the hot path.
        """
        b = np.arange(first_bucket - 1, first_bucket + count, dtype=np.int64)
        inside = (b >= self.oldest) & (b <= self.head)
        rows = b % self.buckets
        v = self.odometer[rows] if meters is None else self.odometer[np.ix_(rows, meters)]
        v[~inside] = np.nan
        out: F32 = np.diff(v, axis=0)
        return out


def _empty_completed() -> Completed:
    e = np.empty(0, dtype=np.int64)
    f = np.empty(0, dtype=np.float32)
    b = np.empty(0, dtype=np.bool_)
    return Completed(e, e.copy(), f, f.copy(), b, b.copy())
