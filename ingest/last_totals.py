"""The newest reading (ts, total) the ingester knows of each water meter, for plausibility.

A meter's total can rise no faster than water flows through a household pipe
(`ingest.max_flow_lpm`); to judge a reading against the meter's previous one when that one
came in an earlier batch, the pipeline keeps the newest (ts, total) of every meter it
wrote, updated after each commit and loaded from `water_reading` at start for the meters
active lately. Device keys are dense identity numbers, so two arrays indexed by key hold it
in 16 bytes a meter; keys past `max_devices` are not remembered (their readings are then
judged within their batch only). Pure: no I/O.
"""

from __future__ import annotations

import numpy as np


class LastTotals:
    """Per device key: epoch seconds and total of the newest reading known (NaN: none)."""

    def __init__(self, max_devices: int) -> None:
        self.max_devices = max_devices
        self.ts_s = np.full(1024, np.nan)
        self.total_l = np.full(1024, np.nan)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ts_s, total_l) for each key; NaN where nothing is known."""
        inside = keys < self.ts_s.size
        safe = np.where(inside, keys, 0)
        ts_s = np.where(inside, self.ts_s[safe], np.nan)
        total_l = np.where(inside, self.total_l[safe], np.nan)
        return ts_s, total_l

    def remember(self, keys: np.ndarray, ts_s: np.ndarray, total_l: np.ndarray) -> None:
        """Keep, per key, the newest of what is known and these readings."""
        keep = keys < self.max_devices
        keys, ts_s, total_l = keys[keep], ts_s[keep], total_l[keep]
        if keys.size == 0:
            return
        self._grow(int(keys.max()) + 1)
        # the newest reading of each key in these, then only where it is newer than known
        order = np.lexsort((ts_s, keys))
        keys, ts_s, total_l = keys[order], ts_s[order], total_l[order]
        last = np.ones(keys.size, dtype=np.bool_)
        np.not_equal(keys[1:], keys[:-1], out=last[:-1])
        keys, ts_s, total_l = keys[last], ts_s[last], total_l[last]
        known = self.ts_s[keys]
        newer = np.isnan(known) | (ts_s >= known)
        self.ts_s[keys[newer]] = ts_s[newer]
        self.total_l[keys[newer]] = total_l[newer]

    def _grow(self, size: int) -> None:
        if size <= self.ts_s.size:
            return
        size = min(max(size, 2 * self.ts_s.size), self.max_devices)
        for name in ("ts_s", "total_l"):
            old = getattr(self, name)
            grown = np.full(size, np.nan)
            grown[: old.size] = old
            setattr(self, name, grown)
