"""Each device's newest known state per event type, so an unchanged snapshot costs no query.

A state source (Zigbee2MQTT, a CJ/T 188 meter's battery bit) repeats its state in every
message. Whether a level is a change is decided by the writer against the stored events
(`ingest.writer`, one lookup per staged level); a level no newer state contradicts and that
equals the newest state this process saw committed cannot be a change, so it is not staged
at all. The memory starts empty (the first level of each device after a start is judged by
the database) and is only a shortcut: forgetting it changes what is looked up, never what is
stored. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from lovekey.ingest.batch import LevelRow

# entries kept at most (a device has a few alarm types); past it, the memory starts over
MAX_ENTRIES = 2_000_000


class LevelMemory:
    """(device key, type) -> (epoch seconds, active) of the newest level seen committed."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._newest: dict[tuple[int, str], tuple[float, bool]] = {}

    def __len__(self) -> int:
        return len(self._newest)

    def changes(self, levels: list[LevelRow]) -> list[LevelRow]:
        """The levels that could be changes: all but those repeating the newest known state."""
        newest = self._newest
        kept = []
        for row in levels:
            known = newest.get((row[1], row[2]))
            if known is not None and row[3] == known[1] and row[0].timestamp() >= known[0]:
                continue  # the same state again, later: nothing to store
            kept.append(row)
        return kept

    def committed(self, levels: Iterable[LevelRow]) -> None:
        """Remember the states of levels whose batch was committed (stored as events or not)."""
        newest = self._newest
        if len(newest) > self.max_entries:
            newest.clear()
        for ts, key, event_type, active, _ in levels:
            ts_s = ts.timestamp()
            known = newest.get((key, event_type))
            if known is None or ts_s >= known[0]:
                newest[(key, event_type)] = (ts_s, active)
