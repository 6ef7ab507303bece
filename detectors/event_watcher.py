"""Life-safety alerts the moment their events are committed: smoke, gas and SOS.

`EventWatcher` does not wait for a sweep. The daemon wakes it on LISTEN lovekey_events, with a
short poll by received_at as the fallback; each poll reads the events received since the last
one (with an overlap, since commits can land out of order), raises one alert per active event
and remembers what it saw, so an event is raised once even when it is read twice. Nothing is
kept that is not in the database: after a restart the alerts already raised are found there,
including the presses that only refreshed an open alert (each raise lists the events it stands
for in the alert's details, and the alert's history keeps every version of those).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.config import Settings
from lovekey.detectors import store as db
from lovekey.detectors.service import DetectorShard
from lovekey.vocabulary import LIFE_SAFETY_EVENTS, LIFE_SAFETY_KINDS

log = logging.getLogger(__name__)

# How far before the oldest fresh event to look for the alerts that already raised it: the
# device's clock and ours differ by up to ingest.future_tolerance_s and a commit's lag.
ALERTED_MARGIN = timedelta(hours=1)


class EventWatcher:
    """Raises smoke, gas and SOS alerts from device events, once each."""

    def __init__(self, settings: Settings, *, shard: DetectorShard = DetectorShard()) -> None:
        self.settings = settings
        self.shard = shard
        self._devices: dict[int, db.SignalDevice] = {}
        self._watermark: datetime | None = None
        self._seen: dict[tuple[int, str, datetime], datetime] = {}  # event -> received_at

    def start(self, conn: psycopg.Connection[Any], now: datetime, lookback_s: float = 600) -> None:
        self._devices = {
            d.key: d for d in db.event_devices(conn) if self.shard.owns(d.resident_id or d.device_id)
        }
        self._watermark = now - timedelta(seconds=lookback_s)

    def poll(self, conn: psycopg.Connection[Any], now: datetime) -> list[AlertCandidate]:
        """Raise alerts for active events received since the last poll. Caller commits."""
        if self._watermark is None:
            raise RuntimeError("EventWatcher.start() was not called")
        overlap = timedelta(seconds=self.settings.detect.received_overlap_s)
        rows = db.events_received_after(conn, self._watermark - overlap, LIFE_SAFETY_EVENTS)
        fresh = [r for r in rows if (r.key, r.type, r.ts) not in self._seen]
        if rows:
            self._watermark = max(self._watermark, max(r.received_at for r in rows))
        cutoff = self._watermark - overlap
        self._seen = {k: t for k, t in self._seen.items() if t > cutoff}
        self._seen.update({(r.key, r.type, r.ts): r.received_at for r in fresh})
        # an alert per (kind, subject) of the fresh events not yet alerted: the earliest
        # press opens it (its `since`), and every press it stands for is listed in its
        # details, which the alert's history keeps, so a restart knows each one was raised
        events: dict[tuple[str, str], list[tuple[db.EventRow, db.SignalDevice]]] = {}
        for row in fresh:
            if not row.active:
                continue  # a sensor going quiet does not end a life-safety alert: a person does
            device = self._devices.get(row.key)
            if device is None:
                device = self._refresh(conn, row.key)
            if device is None or device.resident_id is None:
                log.warning("event %s from device key=%d with no resident: not raised", row.type, row.key)
                continue
            events.setdefault((row.type, device.resident_id), []).append((row, device))
        if events:
            oldest = min(min(row.ts, row.received_at) for group in events.values() for row, _ in group)
            done = db.alerted_events(conn, LIFE_SAFETY_KINDS, oldest - ALERTED_MARGIN)
            events = {
                (kind, subject): todo
                for (kind, subject), group in events.items()
                if (todo := [(row, d) for row, d in group if (kind, subject, row.ts) not in done])
            }
        candidates = [_candidate(kind, subject, group) for (kind, subject), group in events.items()]
        if candidates:
            raise_alerts(conn, candidates, now)
            for c in candidates:
                log.info("raise %s subject=%s since=%s", c.kind, c.subject, c.since)
        return candidates

    def _refresh(self, conn: psycopg.Connection[Any], key: int) -> db.SignalDevice | None:
        """A device registered after we started: look the registry up again."""
        self._devices = {
            d.key: d for d in db.event_devices(conn) if self.shard.owns(d.resident_id or d.device_id)
        }
        return self._devices.get(key)


def _candidate(kind: str, subject: str, group: list[tuple[db.EventRow, db.SignalDevice]]) -> AlertCandidate:
    """One alert for these events of one (kind, subject): since the first, showing the last."""
    group.sort(key=lambda pair: pair[0].ts)
    first, _ = group[0]
    last, device = group[-1]
    details = {
        "value": last.value,
        "event_at": last.ts.isoformat(),
        # every event this raise stands for; `store.alerted_events` reads them back
        "events": [row.ts.isoformat() for row, _ in group],
    }
    return AlertCandidate(kind, subject, subject, device.device_id, device.gateway_id, first.ts, details)


__all__ = ["EventWatcher"]
