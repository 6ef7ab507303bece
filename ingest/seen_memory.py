"""What `last_seen` and battery the pipeline last wrote per device, to skip redundant updates.

Writing `device.last_seen` for every reading would turn each batch into thousands of row
updates; it is written only when it moved by `ingest.last_seen_resolution_s` or the
battery changed. Pure: times are `time.monotonic()` values passed in.
"""

from __future__ import annotations

import numpy as np


class SeenMemory:
    """What `last_seen`/battery we last wrote per device key, to skip redundant updates.

    Device keys are dense identity numbers, so two arrays indexed by key hold it in 12
    bytes a device.
    """

    # keys past this are always written rather than growing the arrays without bound
    _MAX_KEY = 50_000_000

    def __init__(self, resolution_s: float) -> None:
        self.resolution_s = resolution_s
        self.written_at = np.full(1024, -np.inf)
        self.battery = np.full(1024, np.nan, dtype=np.float32)

    def due(self, seen: dict[int, float | None], now_mono: float) -> list[tuple[int, float | None]]:
        if not seen:
            return []
        keys = np.fromiter(seen.keys(), dtype=np.int64, count=len(seen))
        battery = np.array([np.nan if v is None else v for v in seen.values()], dtype=np.float32)
        inside = keys < self._MAX_KEY
        if int(keys.max()) >= self.written_at.size:
            self._grow(int(keys[inside].max(initial=0)) + 1)
        safe = np.where(inside, keys, 0)
        stale = now_mono - self.written_at[safe] >= self.resolution_s
        changed = ~np.isnan(battery) & (battery != self.battery[safe])
        due = ~inside | stale | changed
        order = np.argsort(keys[due], kind="stable")
        keys_due, battery_due = keys[due][order], battery[due][order]
        return [
            (int(k), None if np.isnan(b) else float(b)) for k, b in zip(keys_due, battery_due, strict=True)
        ]

    def written(self, rows: list[tuple[int, float | None]], now_mono: float) -> None:
        for key, battery in rows:
            if key < self._MAX_KEY:
                self.written_at[key] = now_mono
                if battery is not None:
                    self.battery[key] = battery

    def _grow(self, size: int) -> None:
        size = max(size, 2 * self.written_at.size)
        self.written_at = np.concatenate([self.written_at, np.full(size - self.written_at.size, -np.inf)])
        self.battery = np.concatenate(
            [self.battery, np.full(size - self.battery.size, np.nan, dtype=np.float32)]
        )
