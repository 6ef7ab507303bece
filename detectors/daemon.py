"""The detector's long-running loop, hostable by `lovekey detect` and by `lovekey run`.

`run_detector` blocks the calling thread until `stop` is set. It runs an event loop of its
own for `lovekey.schedule`: the sweep is a blocking `Periodic` job every
`detect.sweep_interval_s` (on a thread of that loop's executor), and `watch_events` waits on
LISTEN lovekey_events on another thread so smoke, gas and SOS are raised at once. Nothing
lives only in memory: after a database error the state is rebuilt from the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta

import psycopg

from lovekey.config import Settings
from lovekey.detectors.event_watcher import EventWatcher
from lovekey.detectors.service import DetectorService, DetectorShard
from lovekey.errors import LoveKeyError
from lovekey.retry import Backoff
from lovekey.schedule import Periodic, scheduled
from lovekey.storage import connect

log = logging.getLogger(__name__)


def run_detector(
    settings: Settings, url: str, stop: threading.Event, *, shard: DetectorShard | None = None
) -> None:
    """Sweep on a schedule and raise life-safety alerts from events until `stop` is set."""
    asyncio.run(_run_detector(settings, url, stop, shard or DetectorShard()))


async def _run_detector(settings: Settings, url: str, stop: threading.Event, shard: DetectorShard) -> None:
    sweeper = Sweeper(settings, url, shard)
    try:
        every = settings.detect.sweep_interval_s
        async with scheduled(Periodic("detect-sweep", every, sweeper.sweep), timezone=settings.timezone):
            log.info("detector running shard=%d/%d sweep every %ss", shard.index, shard.count, every)
            await asyncio.to_thread(watch_events, settings, url, stop, shard=shard)
    finally:
        sweeper.close()


class Sweeper:
    """The sweep job: one connection and the detector state built over it, rebuilt from the
    database after any failure."""

    def __init__(self, settings: Settings, url: str, shard: DetectorShard) -> None:
        self.settings = settings
        self.url = url
        self.shard = shard
        self._conn: psycopg.Connection | None = None
        self._service: DetectorService | None = None

    def sweep(self) -> None:
        now = datetime.now(UTC)
        try:
            if self._conn is None or self._service is None:
                self._conn = connect(self.url)
                service = DetectorService(self.settings, shard=self.shard)
                service.start(self._conn, now)
                self._conn.commit()
                self._service = service
            self._service.sweep(self._conn, now)
            self._conn.commit()
        except Exception:
            # whatever failed, the state in memory may be half-updated: drop it and rebuild it
            # from the database on the next run (the database is the source of truth)
            log.exception("detector sweep failed; state is rebuilt on the next sweep")
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._service = None


def watch_events(settings: Settings, url: str, stop: threading.Event, *, shard: DetectorShard) -> None:
    """LISTEN lovekey_events; poll device_event on each notification or every events_poll_s."""
    backoff = Backoff(first_s=0.5, max_s=30.0)
    lost_at: datetime | None = None  # when the database went away, until we are back
    while not stop.is_set():
        try:
            with connect(url, autocommit=True) as listen, connect(url) as conn:
                listen.execute("LISTEN lovekey_events")
                watcher = EventWatcher(settings, shard=shard)
                # after a reconnect, look back over the whole outage (and at least 10 minutes)
                now = datetime.now(UTC)
                outage_s = (now - lost_at).total_seconds() if lost_at is not None else 0.0
                watcher.start(conn, now, lookback_s=max(600.0, outage_s))
                conn.commit()
                backoff.reset()
                lost_at = None
                while not stop.is_set():
                    for _ in listen.notifies(timeout=settings.detect.events_poll_s, stop_after=1):
                        pass
                    watcher.poll(conn, datetime.now(UTC))
                    conn.commit()
        except (psycopg.OperationalError, LoveKeyError):
            delay_s = backoff.next_delay_s()
            log.exception("event watcher lost the database; retrying in %.1fs", delay_s)
            if lost_at is None:
                # the last poll may have been up to one poll interval before the failure
                lost_at = datetime.now(UTC) - timedelta(seconds=settings.detect.events_poll_s)
            stop.wait(delay_s)
