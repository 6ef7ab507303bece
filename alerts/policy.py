"""Delivery policy as pure functions: retry back-off, quiet hours, per-recipient rate limits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def retry_delay_s(failed_attempts: int, *, base_s: float, max_s: float) -> float:
    """Seconds to wait after the `failed_attempts`-th failure on a channel: base, 2*base, ...

    Deterministic on purpose (tests drive it with a fake clock); the worker's polling and the
    spread of `not_before` across rows keep retries from marching in lockstep.
    """
    if failed_attempts < 1:
        return 0.0
    return float(min(max_s, base_s * 2 ** (failed_attempts - 1)))


def quiet_until(now: datetime, start: time | None, end: time | None, zone: ZoneInfo) -> datetime | None:
    """The end of the quiet period `now` falls in, or None when `now` is not in quiet hours.

    Hours are local wall-clock times; a period may cross midnight (22:00-07:00). start == end
    means no quiet hours.
    """
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=zone)


def rate_limited_until(
    sent_at: Sequence[datetime], now: datetime, *, limit: int, window_s: int
) -> datetime | None:
    """When a recipient who was sent messages at `sent_at` may get the next one.

    None: now. Otherwise the moment the oldest message in the window leaves it; messages
    held until then go out together as one bundle.
    """
    window = timedelta(seconds=window_s)
    recent = sorted(t for t in sent_at if t > now - window)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + window
