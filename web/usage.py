"""Hourly water use for the resident page: a pure function of readings, a clock and the rule.

Usage is the positive difference between consecutive cumulative totals of the same meter.
A total that goes down (meter swap, rollover) starts a new baseline and counts as zero use,
never as negative use. The litres between two readings are counted in the hour in which the
later reading falls, with hours closed on the right: a reading at 10:00:00 closes the
09:00-10:00 hour. Several meters of one resident are added up.

The low-usage rule (`detect.low_usage_min_l` litres within `detect.low_usage_window_h` hours)
is evaluated on the same hours: for each hour, the litres of the window that ends with it.
A window counts only when some meter's readings cover it (a reading at or before its start
and one at or after its end, less one hour of reporting slack): "no data" is not "no use".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

HOUR_S = 3600
# a window whose newest reading is at most this much older than its end still counts as covered
_COVER_SLACK_S = HOUR_S


@dataclass(frozen=True, slots=True)
class HourlyUsage:
    start: datetime  # the first hour shown (aware, on a local hour boundary)
    usage_l: npt.NDArray[np.float64]  # litres used in each hour
    window_l: npt.NDArray[np.float64]  # litres in the rule's window ending with each hour
    covered: npt.NDArray[np.bool_]  # the window had readings at both ends
    min_l: float
    window_h: int

    @property
    def below_rule(self) -> npt.NDArray[np.bool_]:
        """Hours whose window has data and used less than the rule's minimum."""
        result: npt.NDArray[np.bool_] = self.covered & (self.window_l < self.min_l)
        return result

    def hour_starts(self) -> list[datetime]:
        return [self.start + timedelta(hours=i) for i in range(len(self.usage_l))]


def chart_start(now: datetime, zone: ZoneInfo, hours: int) -> datetime:
    """The first hour of a chart of `hours` hours whose last hour contains `now`."""
    local = now.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    return (local - timedelta(hours=hours - 1)).astimezone(zone)


def window_hours(window_h: float) -> int:
    """The rule's window in whole hours, as drawn (at least one)."""
    return max(1, round(window_h))


def hourly_usage(
    device_index: npt.NDArray[np.integer],
    ts_s: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    total_l: npt.NDArray[np.floating],
    *,
    start: datetime,
    hours: int,
    now: datetime,
    min_l: float,
    window_h: float,
) -> HourlyUsage:
    """Litres per hour for `hours` hours from `start`, and the rule's window sums.

    The arrays hold readings sorted by (device, ts), in epoch seconds; they should reach back
    at least `window_h` hours before `start` (plus one reading) so the first windows are whole.
    Readings after `now` are ignored.
    """
    w = window_hours(window_h)
    lead = w - 1  # hours before `start` that windows need
    origin_s = start.timestamp() - lead * HOUR_S
    n_buckets = lead + hours
    dev = np.asarray(device_index, dtype=np.int64)
    ts = np.asarray(ts_s, dtype=np.float64)
    total = np.asarray(total_l, dtype=np.float64)
    keep = ts <= now.timestamp()
    dev, ts, total = dev[keep], ts[keep], total[keep]

    buckets = np.zeros(n_buckets, dtype=np.float64)
    if len(ts) > 1:
        same_meter = dev[1:] == dev[:-1]
        delta = np.diff(total)
        use = np.where(same_meter & (delta > 0), delta, 0.0)
        # the hour (closed on the right) of each later reading
        bucket = np.ceil((ts[1:] - origin_s) / HOUR_S).astype(np.int64) - 1
        inside = (bucket >= 0) & (bucket < n_buckets) & (use > 0)
        buckets = np.bincount(bucket[inside], weights=use[inside], minlength=n_buckets).astype(np.float64)

    sums = np.concatenate(([0.0], np.cumsum(buckets)))
    ends = np.arange(lead, n_buckets) + 1  # exclusive bucket end of each window
    window_l = sums[ends] - sums[ends - w]

    window_end_s = start.timestamp() + (np.arange(hours) + 1) * HOUR_S
    window_end_s = np.minimum(window_end_s, now.timestamp())
    window_start_s = window_end_s - w * HOUR_S
    covered = np.zeros(hours, dtype=bool)
    if len(ts):
        # first and last reading of each meter
        boundary = np.flatnonzero(np.diff(dev)) + 1
        firsts = ts[np.concatenate(([0], boundary))]
        lasts = ts[np.concatenate((boundary - 1, [len(ts) - 1]))]
        for first, last in zip(firsts, lasts, strict=True):  # one pass per meter, not per row
            covered |= (first <= window_start_s) & (last >= window_end_s - _COVER_SLACK_S)

    return HourlyUsage(
        start=start,
        usage_l=buckets[lead:].copy(),
        window_l=window_l,
        covered=covered,
        min_l=float(min_l),
        window_h=w,
    )


def day_marks(start: datetime, hours: int, zone: ZoneInfo) -> list[tuple[int, str]]:
    """(hour index, 'MM-DD') for each local midnight inside the chart, for axis labels."""
    marks = []
    for i in range(hours):
        local = (start + timedelta(hours=i)).astimezone(zone)
        if local.hour == 0:
            marks.append((i, f"{local:%m-%d}"))
    return marks


def to_json(usage: HourlyUsage, zone: ZoneInfo, *, resident_id: str, now: datetime) -> dict[str, object]:
    """The chart's JSON: what the resident page draws and what the browser test checks."""
    hours = len(usage.usage_l)
    return {
        "resident_id": resident_id,
        "start": usage.start.isoformat(),
        "now": now.astimezone(zone).isoformat(),
        "timezone": zone.key,
        "hours": hours,
        "usage_l": [_round(v) for v in usage.usage_l],
        "window_l": [_round(v) for v in usage.window_l],
        "covered": usage.covered.tolist(),
        "below_rule": usage.below_rule.tolist(),
        "rule": {"min_l": usage.min_l, "window_h": usage.window_h},
        "total_l": _round(float(usage.usage_l.sum())),
        "day_marks": [{"index": i, "label": label} for i, label in day_marks(usage.start, hours, zone)],
    }


def _round(value: float) -> float:
    return 0.0 if not math.isfinite(value) else round(float(value), 3)
